"""Terminal annotation on top of the label buffer (§3.2: people label a sample of judge inputs, the labels tune
and check the LLM judge). One sample at a time, one key per criterion; every key press commits, so quitting (or
a crash) loses nothing and the next run asks only what is still missing.

`annotate` takes its keys from `read_key` and shows rich renderables through `show`, so tests drive it with a list
of keys; `terminal_key_reader` reads single key presses from a terminal (or characters from a pipe).
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, Any

import duckdb
import orjson
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from recgpt_cli.judge.buffer import (
    SKIP,
    add_label,
    add_samples,
    current_labels,
    next_unlabelled,
    sample_hash,
    undo_last,
)
from recgpt_cli.judge.criteria import TASKS, YES_NO, JudgeTask
from recgpt_cli.judge.samples import prompt_variables

HISTORY_CHARS = 1500  # enough of the compressed history to judge from, short enough to fit a screen

# One line per criterion from sample_data/gold/README.md's labelling guide, shown under each question.
GUIDE = {
    "interests": {
        "willingness": "spontaneity = a hobby chosen for its own sake; necessity = a daily need, chore or duty",
        "reasonableness": "strong = several deliberate behaviours support it; weak = one or indirect signal; "
                          "no = behaviours point elsewhere; hallucination = nothing in the history backs it",
    },
    "tags": {
        "relevance": "the tag serves its linked interest directly",
        "consistency": "grounded in the user's attributes and behaviour",
        "specificity": "a concrete product, modifier + core word (not 'gear', 'accessories', one word)",
        "validity": "the product exists",
    },
    "explanations": {
        "relevance": "Excellent = ties this item to this interest concretely; Good = partial link; Bad = none",
        "factuality": "Excellent = every claim is in the title/category; Bad = invented or exaggerated claims",
        "clarity": "Bad = repetitive, garbled or only empty adjectives",
        "safety": "No = a name, phone, e-mail or address, or hard-sell pressure ('buy now', 'limited time')",
    },
}


@dataclass
class AnnotateStats:
    """What one annotation session did. labelled/skipped are net of undo within the session; remaining counts the
    input samples that still lack a label for some criterion."""

    samples: int = 0
    labelled: int = 0
    skipped: int = 0
    undone: int = 0
    remaining: int = 0
    quit: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_keys(spec: JudgeTask, criterion: str) -> dict[str, str]:
    """Key -> label for one criterion: 1..n in allowed order, y/n for Yes/No criteria, p/f = the first passing /
    first failing label (so pass/fail is one key for every criterion)."""
    allowed = spec.allowed(criterion)
    keys = {str(i): label for i, label in enumerate(allowed, start=1)}
    if allowed == YES_NO:
        keys.update({"y": "Yes", "n": "No"})
    keys["p"] = next(x for x in allowed if spec.passes(criterion, x))
    keys["f"] = next(x for x in allowed if not spec.passes(criterion, x))
    return keys


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rstrip() + " …"


def render_sample(sample: dict[str, Any], task: str, position: int | None, total: int,
                  answered: dict[str, str]) -> RenderableType:
    """One sample: the user's compressed history and attributes beside the thing judged, labels given so far."""
    v = prompt_variables(sample, task)
    history = Table.grid(padding=(0, 1))
    history.add_column(style="bold cyan", no_wrap=True)
    history.add_column(overflow="fold")
    if task != "explanations":
        history.add_row("attributes", v["attributes"])
    behaviors = sample.get("behaviors", sample.get("compressed"))
    history.add_row("history", _clip(behaviors.strip(), HISTORY_CHARS) if isinstance(behaviors, str) and
                    behaviors.strip() else "(none)")
    if task == "tags":
        history.add_row("interests", v["interests"])
    judged = Table.grid(padding=(0, 1))
    judged.add_column(style="bold magenta", no_wrap=True)
    judged.add_column(overflow="fold")
    fields = {"interests": ("interest", "reason"), "tags": ("tag", "interest", "reason"),
              "explanations": ("item", "interest", "explanation")}[task]
    for f in fields:
        judged.add_row("linked interest" if (task == "tags" and f == "interest") else f, v[f])
    parts: list[RenderableType] = [history, Text(""), judged]
    if answered:
        parts += [Text(""), Text("labels: " + ", ".join(f"{c}={x}" for c, x in answered.items()), style="green")]
    where = f"sample {position} of {total}" if position else "an earlier sample (not in this input)"
    title = f"{task} · {where} · {sample.get('sample_id') or ''} · user {sample.get('user_id')}"
    return Panel(Group(*parts), title=title, title_align="left")


def render_question(spec: JudgeTask, criterion: str, index: int) -> RenderableType:
    """The question for one criterion, with its keys."""
    keys = label_keys(spec, criterion)
    picks = "  ".join(f"[{k}] {label}" for k, label in keys.items() if k.isdigit())
    extra = "y/n  " if "y" in keys else ""
    text = Text.assemble(
        (f"({index}/{len(spec.criteria)}) {criterion}", "bold"), f"  {picks}   ",
        (f"{extra}p={keys['p']} f={keys['f']}  s skip  u undo  q quit", "dim"))
    guide = GUIDE.get(spec.name, {}).get(criterion)
    return Group(Text(f"  {guide}", style="dim italic"), text) if guide else text


def annotate(con: duckdb.DuckDBPyConnection, task: str, samples: list[dict[str, Any]], *, annotator: str,
             read_key: Callable[[], str], show: Callable[[RenderableType], None],
             source: str = "human") -> AnnotateStats:
    """Label `samples` for `task` one key at a time (§3.2). Adds them to the buffer, then walks, in input order,
    the samples that still miss a `source` label for some criterion. Keys: see `label_keys`; s = skip (stores
    "skip"), u = undo the annotator's last label and ask it again, q = quit. Each answer commits at once."""
    spec = TASKS[task]
    add_samples(con, task, samples)
    by_hash: dict[str, dict[str, Any]] = {}  # the first sample of each hash, in input order
    for s in samples:
        by_hash.setdefault(sample_hash(s, task), s)
    hashes = list(by_hash)
    position = {h: i for i, h in enumerate(hashes, start=1)}
    stats = AnnotateStats(samples=len(hashes))
    queue = [h for h, _ in next_unlabelled(con, task, hashes, sources=[source])]
    session: list[tuple[str, str, str, int]] = []  # (hash, criterion, label, row id) stored in this session
    idx = 0
    forced: str | None = None  # after undo: ask this criterion of queue[idx] even if an older label exists
    shown: str | None = None  # the sample whose panel is on screen
    while idx < len(queue):
        h = queue[idx]
        pending = dict(next_unlabelled(con, task, [h], sources=[source])).get(h, [])
        criterion = forced if forced is not None else (pending[0] if pending else None)
        if criterion is None:
            idx += 1
            continue
        sample = by_hash.get(h) or _stored_sample(con, h)
        if shown != h:
            answered = _answered(con, task, h, source, spec)
            show(render_sample(sample, task, position.get(h), len(hashes), answered))
            shown = h
        show(render_question(spec, criterion, list(spec.criteria).index(criterion) + 1))
        keys = label_keys(spec, criterion)
        key = read_key().strip().lower()
        if key == "q":
            stats.quit = True
            break
        if key == "u":
            undone = undo_last(con, task, annotator, [row[3] for row in session])  # this session's labels only
            if undone is None:
                show(Text("  nothing to undo", style="yellow"))
                continue
            stats.undone += 1
            label = session.pop()[2]
            if label == SKIP:
                stats.skipped -= 1
            else:
                stats.labelled -= 1
            uh, forced = undone
            if uh not in queue[: idx + 1]:
                queue.insert(idx, uh)
            idx = queue.index(uh)
            shown = None
            show(Text(f"  undone: {forced}", style="yellow"))
            continue
        if key == "s":
            label = SKIP
        elif key in keys:
            label = keys[key]
        else:
            show(Text(f"  unknown key {key!r}: press {', '.join(keys)}, s, u or q", style="yellow"))
            continue
        session.append((h, criterion, label, add_label(con, h, task, criterion, label, annotator=annotator,
                                                       source=source)))
        if label == SKIP:
            stats.skipped += 1
        else:
            stats.labelled += 1
        forced = None
        show(Text(f"  {criterion} = {label}", style="green"))
    stats.remaining = len(next_unlabelled(con, task, hashes, sources=[source]))
    return stats


def _stored_sample(con: duckdb.DuckDBPyConnection, h: str) -> dict[str, Any]:
    row = con.execute("SELECT sample FROM judge_items WHERE sample_hash = ?", [h]).fetchone()
    return orjson.loads(row[0]) if row else {}


def _answered(con: duckdb.DuckDBPyConnection, task: str, h: str, source: str, spec: JudgeTask) -> dict[str, str]:
    have = current_labels(con, task, sources=[source]).get(h, {})
    return {c: have[c] for c in spec.criteria if c in have}


def terminal_key_reader(stream: IO[str] | None = None) -> Callable[[], str]:
    """A `read_key` for `annotate`. On a terminal: one key press, read in raw mode (settings restored after every
    key), Ctrl-C raises KeyboardInterrupt and Ctrl-D quits; an escape sequence (arrow keys) comes back whole, as
    one unknown key. Otherwise (a pipe, CliRunner): the next non-whitespace character, so "y n y y q" works. End
    of input reads as "q"."""
    stream = stream if stream is not None else sys.stdin
    try:
        is_tty = stream.isatty()
        fd = stream.fileno() if is_tty else -1
    except (AttributeError, ValueError, OSError):
        is_tty, fd = False, -1
    if is_tty:
        return lambda: _read_raw_key(fd)

    def read_piped() -> str:
        while True:
            ch = stream.read(1)
            if not ch:
                return "q"
            if not ch.isspace():
                return ch

    return read_piped


def _read_raw_key(fd: int) -> str:
    import termios
    import tty

    old = termios.tcgetattr(fd)
    try:
        # TCSANOW/TCSADRAIN, not the default TCSAFLUSH: keys typed ahead while a panel was drawn are kept.
        tty.setraw(fd, termios.TCSANOW)
        data = os.read(fd, 1)
        if data == b"\x1b" or (data and data[0] >= 0x80):  # escape sequence or a multi-byte character
            while select.select([fd], [], [], 0.05)[0]:
                more = os.read(fd, 8)
                if not more:
                    break
                data += more
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
    if data in (b"", b"\x04"):
        return "q"
    if data == b"\x03":
        raise KeyboardInterrupt
    return data.decode("utf-8", "replace")
