"""Terminal annotation (recgpt_cli.judge.annotate, commands/judge_annotate.py, §3.2): scripted keys, undo, quit and
resume, the CLI through CliRunner, and single raw key presses through a real pseudo-terminal."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import typer
from rich.console import Console, RenderableType
from typer.testing import CliRunner

from recgpt_cli.commands.judge_annotate import annotate as annotate_command
from recgpt_cli.io import iter_jsonl
from recgpt_cli.judge.annotate import annotate, label_keys, terminal_key_reader
from recgpt_cli.judge.buffer import current_labels, open_buffer, sample_hash
from recgpt_cli.judge.criteria import TASKS
from recgpt_cli.judge.samples import expand_record

REPO = Path(__file__).resolve().parent.parent
GOLD_TAGS = REPO / "sample_data" / "gold" / "tags.jsonl"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def gold_samples(n: int) -> list[dict]:
    return [expand_record(rec, "tags")[0] for _, rec in list(iter_jsonl(GOLD_TAGS))[:n]]


def keys_from(keys: list[str]) -> Callable[[], str]:
    """read_key for a person who presses exactly these keys; asking for one more fails the test."""
    it = iter(keys)

    def read_key() -> str:
        try:
            return next(it)
        except StopIteration:
            raise AssertionError("annotate asked for more keys than the script has") from None

    return read_key


class Screen:
    """show() that keeps what a person would see, as plain text."""

    def __init__(self) -> None:
        self.console = Console(record=True, width=120, force_terminal=False, color_system=None)
        self.shown: list[str] = []

    def __call__(self, renderable: RenderableType) -> None:
        with self.console.capture() as cap:
            self.console.print(renderable)
        self.shown.append(cap.get())

    def questions(self) -> list[str]:
        """The criterion of every question asked, in order, prefixed with the sample's progress."""
        out, where = [], "?"
        for text in self.shown:
            m = re.search(r"sample (\d) of (\d)", text)
            if m:
                where = m.group(1)
            q = re.search(r"\(\d/4\) (\w+)", text)
            if q:
                out.append(f"{where}:{q.group(1)}")
        return out


def test_label_keys_give_numbers_yes_no_and_pass_fail_for_every_criterion() -> None:
    assert label_keys(TASKS["tags"], "validity") == {"1": "Yes", "2": "No", "y": "Yes", "n": "No", "p": "Yes",
                                                     "f": "No"}
    assert label_keys(TASKS["interests"], "reasonableness") == {
        "1": "strong correlation", "2": "weak correlation", "3": "no correlation", "4": "hallucination",
        "p": "strong correlation", "f": "weak correlation"}
    assert label_keys(TASKS["explanations"], "clarity")["f"] == "Bad"
    assert label_keys(TASKS["interests"], "willingness")["f"] == "necessity"


def test_label_undo_quit_and_resume(tmp_path: Path) -> None:
    a, b, c = samples = gold_samples(3)
    ha, hb, hc = (sample_hash(s, "tags") for s in samples)
    con = open_buffer(tmp_path / "labels.duckdb")
    try:
        screen = Screen()
        keys = ["y", "n", "1", "2",          # a: relevance Yes, consistency No, specificity Yes, validity No
                "p", "f", "y", "y",          # b: Yes, No, Yes, Yes
                "u", "n",                    # at c's first question: undo b's validity, answer it again: No
                "s", "x", "Y", "q"]          # c: skip relevance, a wrong key, consistency Yes, quit mid-sample
        stats = annotate(con, "tags", samples, annotator="ann", read_key=keys_from(keys), show=screen)
        assert stats.as_dict() == {"samples": 3, "labelled": 9, "skipped": 1, "undone": 1, "remaining": 1,
                                   "quit": True}
        assert current_labels(con, "tags") == {
            ha: {"relevance": "Yes", "consistency": "No", "specificity": "Yes", "validity": "No"},
            hb: {"relevance": "Yes", "consistency": "No", "specificity": "Yes", "validity": "No"},
            hc: {"relevance": "skip", "consistency": "Yes"},
        }
        assert screen.questions() == [
            "1:relevance", "1:consistency", "1:specificity", "1:validity",
            "2:relevance", "2:consistency", "2:specificity", "2:validity",
            "3:relevance", "2:validity", "3:relevance", "3:consistency", "3:consistency", "3:specificity"]
        text = "".join(screen.shown)
        assert "unknown key 'x'" in text and "undone: validity" in text
        assert "Foldable pet carrier case" in text and "cat food, cat litter" in text  # the tag and the history
        assert con.execute("SELECT count(*) FROM judge_labels").fetchone() == (10,)  # 11 stored, 1 undone

        # Second session: only c's two unanswered criteria are asked (asking a third would fail keys_from).
        screen2 = Screen()
        stats2 = annotate(con, "tags", samples, annotator="ann", read_key=keys_from(["n", "f"]), show=screen2)
        assert screen2.questions() == ["3:specificity", "3:validity"]
        assert stats2.as_dict() == {"samples": 3, "labelled": 2, "skipped": 0, "undone": 0, "remaining": 0,
                                    "quit": False}
        assert current_labels(con, "tags")[hc] == {"relevance": "skip", "consistency": "Yes", "specificity": "No",
                                                   "validity": "No"}
        # Everything answered: a third session asks nothing.
        assert annotate(con, "tags", [a, b, c], annotator="ann", read_key=keys_from([]), show=Screen()).remaining == 0
    finally:
        con.close()


def test_undo_stays_inside_the_session(tmp_path: Path) -> None:
    """Undo takes back this session's labels only: never a label stored before it (an earlier session's, or one
    imported from a gold file under the same annotator), which it would silently delete."""
    a, b = gold_samples(2)
    con = open_buffer(tmp_path / "labels.duckdb")
    try:
        annotate(con, "tags", [b], annotator="ann", read_key=keys_from(["y", "y", "y", "y"]), show=Screen())
        before = current_labels(con, "tags")[sample_hash(b, "tags")]
        screen = Screen()
        stats = annotate(con, "tags", [a], annotator="ann", read_key=keys_from(["u", "y", "u", "n", "q"]),
                         show=screen)
        assert "nothing to undo" in "".join(screen.shown)  # the first u: this session has stored nothing yet
        # asked again after "nothing to undo"; after the second u, the undone relevance is asked again
        assert screen.questions() == ["1:relevance", "1:relevance", "1:consistency", "1:relevance", "1:consistency"]
        assert (stats.undone, stats.labelled, stats.remaining) == (1, 1, 1)
        assert current_labels(con, "tags")[sample_hash(a, "tags")] == {"relevance": "No"}
        assert current_labels(con, "tags")[sample_hash(b, "tags")] == before  # the earlier session's, untouched
    finally:
        con.close()


def test_piped_key_reader_skips_whitespace_and_quits_at_eof() -> None:
    import io

    read = terminal_key_reader(io.StringIO(" y\n n\t2 "))
    assert [read() for _ in range(5)] == ["y", "n", "2", "q", "q"]


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("annotate")(annotate_command)

    @app.callback()
    def main() -> None:
        """recgpt judge (test stand-in)"""

    return app


def write_samples(path: Path, n: int) -> Path:
    path.write_bytes(b"".join(orjson.dumps(rec) + b"\n" for _, rec in list(iter_jsonl(GOLD_TAGS))[:n]))
    return path


def test_cli_annotate_with_piped_keys_then_export(tmp_path: Path) -> None:
    f = write_samples(tmp_path / "samples.jsonl", 3)
    db = tmp_path / "labels.duckdb"
    runner = CliRunner()
    args = ["annotate", "--task", "tags", str(f), "--buffer", str(db), "--annotator", "ann"]
    r = runner.invoke(cli_app(), args, input="y n y y\np p p f\nn q")
    assert r.exit_code == 0, r.output
    assert "labelled 9, skipped 0, undone 0; 1 of 3 samples remaining" in r.stderr
    assert "resume with: recgpt judge annotate --task tags" in r.stderr
    hs = [sample_hash(s, "tags") for s in gold_samples(3)]
    con = open_buffer(db)
    try:
        assert current_labels(con, "tags") == {
            hs[0]: {"relevance": "Yes", "consistency": "No", "specificity": "Yes", "validity": "Yes"},
            hs[1]: {"relevance": "Yes", "consistency": "Yes", "specificity": "Yes", "validity": "No"},
            hs[2]: {"relevance": "No"}}
        assert set(con.execute("SELECT DISTINCT annotator || '/' || source FROM judge_labels").fetchall()) == {
            ("ann/human",)}
    finally:
        con.close()
    # input ends before the work does: EOF quits, labels so far are kept
    r = runner.invoke(cli_app(), args, input="n n n")
    assert r.exit_code == 0 and "labelled 3, skipped 0, undone 0; 0 of 3 samples remaining" in r.stderr
    r = runner.invoke(cli_app(), ["annotate", "--task", "tags", "--buffer", str(db), "--export", "-"])
    assert r.exit_code == 0, r.output
    rows = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [row["sample_id"] for row in rows] == ["paper-t3-pet-case", "paper-t3-pillowcase", "paper-t3-calcium"]
    assert rows[2]["labels"] == {"relevance": "No", "consistency": "No", "specificity": "No", "validity": "No"}


def test_cli_import_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "labels.duckdb"
    runner = CliRunner()
    r = runner.invoke(cli_app(), ["annotate", "--task", "tags", "--buffer", str(db), "--import", str(GOLD_TAGS),
                                  "--source", "gold"])
    assert r.exit_code == 0, r.output
    assert "48 rows, 48 new samples, 192 labels stored (0 already there)" in r.stderr
    assert "48 tags samples, 48 fully labelled" in r.stderr
    r = runner.invoke(cli_app(), ["annotate", "--task", "tags", "--buffer", str(db)])
    assert r.exit_code == 2 and "nothing to do" in r.stderr
    r = runner.invoke(cli_app(), ["annotate", "--task", "tag", "--buffer", str(db), "--export", "-"])
    assert r.exit_code == 2 and "unknown judge task 'tag'" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps(next(iter_jsonl(GOLD_TAGS))[1]) + b"\n" + b'{"sample_id": "x", "user_id": "u"}\n')
    r = runner.invoke(cli_app(), ["annotate", "--task", "tags", str(bad), "--buffer", str(db)], input="q")
    assert r.exit_code == 2 and f"{bad}:2: missing or empty field(s): tag" in r.stderr
    r = runner.invoke(cli_app(), ["annotate", "--task", "tags", "--buffer", str(db), "--import", str(bad)])
    assert r.exit_code == 2 and f"{bad}:2: missing 'labels' object" in r.stderr


PTY_SCRIPT = """
import sys, typer
from recgpt_cli.commands.judge_annotate import annotate
app = typer.Typer()
app.command("annotate")(annotate)
@app.callback()
def main() -> None:
    pass
app(sys.argv[1:], prog_name="recgpt judge")
"""


def test_raw_single_keys_through_a_pseudo_terminal(tmp_path: Path) -> None:
    f = write_samples(tmp_path / "samples.jsonl", 2)
    db = tmp_path / "labels.duckdb"
    master, slave = os.openpty()
    env = {**os.environ, "COLUMNS": "110", "LINES": "50", "TERM": "xterm", "RECGPT_DEBUG": ""}
    proc = subprocess.Popen(
        [sys.executable, "-c", PTY_SCRIPT, "annotate", "--task", "tags", str(f), "--buffer", str(db),
         "--annotator", "pty"], stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env, start_new_session=True)
    seen = b""
    deadline = time.monotonic() + 60

    def wait_for_prompt(n: int) -> None:
        """Read until the n-th question is on screen (a key sent earlier could meet a terminal not yet raw)."""
        nonlocal seen
        while ANSI.sub("", seen.decode("utf-8", "replace")).count("q quit") < n:
            assert time.monotonic() < deadline, f"no prompt {n}; screen so far:\n{seen.decode(errors='replace')}"
            assert proc.poll() is None, f"exited {proc.returncode}:\n{seen.decode(errors='replace')}"
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 65536)

    try:
        # single key presses, no newline; an arrow key (an escape sequence) is one unknown key, asked again
        for n, key in enumerate([b"y", b"\x1b[A", b"n", b"2", b"p", b"f", b"q"], start=1):
            wait_for_prompt(n)
            os.write(master, key)
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 65536)
        assert proc.returncode == 0, seen.decode(errors="replace")
        while select.select([master], [], [], 0.2)[0]:
            seen += os.read(master, 65536)
        text = ANSI.sub("", seen.decode("utf-8", "replace"))
        assert "unknown key" in text
        assert "1 of 2 samples remaining" in text
        # the key reader restored the terminal it put in raw mode
        lflag = termios.tcgetattr(slave)[3]
        assert lflag & termios.ICANON and lflag & termios.ECHO
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    con = open_buffer(db)
    try:
        hs = [sample_hash(s, "tags") for s in gold_samples(2)]
        assert current_labels(con, "tags") == {
            hs[0]: {"relevance": "Yes", "consistency": "No", "specificity": "No", "validity": "Yes"},
            hs[1]: {"relevance": "No"}}
        assert con.execute("SELECT DISTINCT annotator FROM judge_labels").fetchall() == [("pty",)]
    finally:
        con.close()
