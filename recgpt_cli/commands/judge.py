"""`recgpt judge`: per-criterion LLM verdicts (§3) and agreement with human labels (§4.3, Table 9); the human loop
(`judge annotate`), labels derived from data (`judge derive`) and milestone checks (`judge check`) (§3.2)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from recgpt_cli.commands import judge_annotate
from recgpt_cli.commands.common import (
    BufferOpt,
    DbOpt,
    InOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    SkipBadOpt,
    console,
    friendly_errors,
    user_list,
)
from recgpt_cli.commands.llm_options import LLMOptions, llm_options
from recgpt_cli.errors import BadInput, PartialFailure
from recgpt_cli.io import STDIO, Rejects, checked_first, iter_jsonl, jsonl_writer, rejects_path_for, source_name
from recgpt_cli.judge.head import DEFAULT_LAYER, DEFAULT_WEIGHT_DECAY
from recgpt_cli.schema import stage_row


class JudgeGroup(TyperGroup):
    """`recgpt judge --task T FILE` stays the judging command; `recgpt judge annotate|derive|check ...` are the
    human-loop subcommands. Anything that is not a subcommand name goes to `run`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args:  # bare `recgpt judge`: the group's help (as `recgpt align`), not "judge run"'s error
            args = ["--help"]
        if args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=JudgeGroup, no_args_is_help=False, help="Judge interests, tags or explanations (§3): "
                  "`recgpt judge --task T FILE` (its options: `recgpt judge run --help`), plus annotate / derive / "
                  "train / check for the human loop (§3.2).")
InArg = Annotated[str | None, typer.Argument(help="Stage output or samples JSONL (or - for stdin); same as --in.")]
TaskOpt = Annotated[str, typer.Option("--task", help="interests | tags | explanations")]
HeadOpt = Annotated[Path | None, typer.Option(
    "--head", help="A trained judge (`recgpt judge train --out DIR`): verdicts from linear heads over the model's "
    "hidden state instead of its written answer; the LLM options then do not apply. Default: the packaged heads "
    "for the tasks they ship for (tags, interests) when the LLM options are the defaults, else the LLM judge.")]
LLMJudgeOpt = Annotated[bool, typer.Option("--llm-judge", help="The LLM's written verdicts even where packaged "
                                           "heads ship for the task.")]


def _refuse_own_labels(head: Path | None, llm_opts: LLMOptions, samples: list[dict[str, Any]], task: str,
                       what: str) -> None:
    """Agreement on a trained judge's own training labels would leak: the heads record their training samples,
    a judge from `align sft` the inputs it saw (`judge_inputs` in its manifest, next to the model or its hf/)."""
    from recgpt_cli.align.provenance import model_record
    from recgpt_cli.judge.buffer import refuse_trained_on

    if head is not None:
        from recgpt_cli.judge.head import load_head_dir

        load_head_dir(head).refuse_training_samples(samples, task, what)
        return
    inputs = model_record(llm_opts.model, "manifest.json").get("judge_inputs") or []
    refuse_trained_on(samples, task, what, str(llm_opts.model), input_hashes=inputs)


def _pick_head(head: Path | None, llm_judge: bool, llm_opts: LLMOptions, task: str) -> Path | None:
    """--head, else the packaged heads for `task` when nothing asks for another judge (the best measured one)."""
    from recgpt_cli.judge.head import builtin_head

    if head is not None or llm_judge:
        if head is not None and llm_judge:
            raise BadInput("--head and --llm-judge pick different judges: give one")
        return head
    defaults = llm_opts.backend == "llama-cpp" and not llm_opts.model and not llm_opts.prompt
    return builtin_head(task) if defaults else None


@app.command("run")
@friendly_errors
@llm_options(date=False)
def judge(
    task: TaskOpt,
    in_arg: InArg = None,
    in_path: InOpt = "-",
    out: OutOpt = "-",
    against: Annotated[Path | None, typer.Option(
        "--against", help="Human labels JSONL ({sample_id, labels}); print ACC/P/R/F1 (Table 9) to stdout. "
        "Judged rows then go to --out only when it is a file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --against: the agreement as JSON.")] = False,
    no_rules: Annotated[bool, typer.Option("--no-rules", help="The model's verdicts without post-checks.")] = False,
    head: HeadOpt = None,
    llm_judge: LLMJudgeOpt = False,
    seed: SeedOpt = 0,
    skip_bad: SkipBadOpt = False,
    quiet: QuietOpt = False,
    llm_opts: LLMOptions = LLMOptions(),
) -> None:
    """Judge interests, tags or explanations per criterion (§3): packaged heads for tags and interests, else the LLM."""
    from recgpt_cli.judge import JudgeStats, expand_record, get_task, judge_samples
    from recgpt_cli.judge.run import JUDGE_PARAMS
    from recgpt_cli.llm.factory import make_llm

    spec = get_task(task)
    head = _pick_head(head, llm_judge, llm_opts, task)
    t0 = time.perf_counter()
    src = in_arg if in_arg is not None else in_path
    gold = _load_labels(against, spec) if against else None
    rejects = Rejects(source_name(src))

    def records() -> Iterator[dict[str, Any]]:
        for line, rec in iter_jsonl(src, skip_bad=skip_bad, rejects=rejects, allow_empty=src == STDIO):
            try:
                samples = expand_record(rec, task)
            except ValueError as exc:
                if not skip_bad:
                    raise BadInput.at(source_name(src), line, str(exc)) from None
                rejects.add(line, str(exc), orjson.dumps(rec).decode())
                continue
            yield from samples

    stats = JudgeStats()
    rows = []
    write_to = None if (gold is not None and out == STDIO) else out
    inputs: Iterator[dict[str, Any]] | list[dict[str, Any]] = checked_first(records, src, skip_bad=skip_bad)
    if gold is not None:  # agreement on the judge's own training labels would leak
        inputs = list(inputs)
        _refuse_own_labels(head, llm_opts, inputs, task, source_name(src))
    judged = (_head_judged(head, inputs, task, no_rules, stats, llm_opts) if head is not None else
              judge_samples(inputs, make_llm(llm_opts, task="judge"), task, prompt=llm_opts.load_prompt(
                  spec.prompt), params=llm_opts.sampling(JUDGE_PARAMS, seed=seed), use_rules=not no_rules,
                  stats=stats, quiet=quiet))
    with jsonl_writer(write_to) if write_to is not None else contextlib.nullcontext() as w:
        for row in judged:
            if gold is not None:
                rows.append(row)
            if w is not None:
                w.write(stage_row("verdict", row))
    if len(rejects):
        rejects.write(rejects_path_for(out, src))
    if not quiet:
        d = stats.as_dict()
        rates = ", ".join(f"{c} {r:.0%}" for c, r in d["pass_rates"].items())
        by = "LLM" if head is None else f"heads {head}"
        console.print(f"[bold]judge {task}[/] ({by}): {d['n']} samples, pass rates: {rates}; errors {d['errors']}; "
                      f"rules fired {d['rules_fired'] or {}}; cached {d['cached']}; tokens "
                      f"{d['prompt_tokens']}+{d['completion_tokens']}; bad lines skipped {len(rejects)}"
                      f"{f' -> {rejects_path_for(out, src)}' if len(rejects) else ''}; "
                      f"{time.perf_counter() - t0:.1f}s", highlight=False, soft_wrap=True)
    if gold is not None:
        report = checked_agreement(rows, gold, task, against)  # type: ignore[arg-type]
        if as_json:
            typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        else:
            Console().print(agreement_table(report))
    if stats.n_errors:
        raise PartialFailure(f"judge {task}", stats.n_errors, stats.n, "samples")


def _head_judged(head: Path, samples: Iterator[dict[str, Any]] | list[dict[str, Any]], task: str, no_rules: bool,
                 stats: Any, llm_opts: LLMOptions) -> Iterator[dict[str, Any]]:
    """Rows from a trained head dir, counted into `stats` like the LLM judge's."""
    from recgpt_cli.judge.criteria import get_task
    from recgpt_cli.judge.head import judge_with_head, load_head_dir

    spec = get_task(task)
    stats.task = task
    for row in judge_with_head(samples, load_head_dir(head), task, use_rules=not no_rules,
                               cache_dir=llm_opts.resolved_cache_dir()):
        stats.n += 1
        stats.count_verdicts(row, spec)
        yield row


def _load_labels(path: Path, spec: Any) -> list[dict[str, Any]]:
    out = []
    first: dict[str, int] = {}
    for line, rec in iter_jsonl(path):
        labels = rec.get("labels")
        err = "missing 'sample_id'" if not rec.get("sample_id") else (
            "missing 'labels' object" if not isinstance(labels, dict) else spec.check_labels(labels))
        sid = str(rec.get("sample_id"))
        if not err and sid in first:  # two answers for one sample: which one is the truth?
            err = f"duplicate sample_id {sid!r} (first at line {first[sid]})"
        if err:
            raise BadInput.at(str(path), line, err, f"labels for --task {spec.name}: see sample_data/gold/README.md")
        first[sid] = line
        out.append(rec)
    return out


def checked_agreement(rows: list[dict[str, Any]], gold: list[dict[str, Any]], task: str, against: Path
                      ) -> dict[str, Any]:
    """The agreement report; none of the labels matched by a judged sample is bad input, not a row of zeros."""
    from recgpt_cli.judge import agreement

    report = agreement(rows, gold, task)
    if report["n"] == 0 and not report["n_errors"]:
        raise BadInput(f"{against}: none of its {len(gold)} labelled samples was judged (no sample_id in common)",
                       "label the samples you judge: their sample_id must match")
    return report


def agreement_table(report: dict[str, Any]) -> Table:
    """Table 9 form: one row for the whole sample verdict, one per criterion."""
    t = Table(title=f"judge vs human labels — {report['task']} (n={report['n']}, errors {report['n_errors']}, "
                    f"unjudged {report['n_missing']})")
    for col in ("", "ACC", "Precision", "Recall", "F1", "label ACC", "tp/fp/fn/tn"):
        t.add_column(col, justify="right" if col else "left")
    rows = [("pass (all criteria)", report["overall"])] + list(report["criteria"].items())
    for name, m in rows:
        t.add_row(name, f"{m['acc']:.4f}", f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}",
                  f"{m['label_acc']:.4f}" if "label_acc" in m else "", f"{m['tp']}/{m['fp']}/{m['fn']}/{m['tn']}")
    return t



app.command("annotate")(judge_annotate.annotate)


@app.command("derive")
@friendly_errors
def derive(
    db: DbOpt = Path("recgpt.duckdb"),
    buffer: BufferOpt = Path("judge_labels.duckdb"),
    task: Annotated[list[str], typer.Option("--task", help="interests, tags, explanations (repeatable).")] = [  # noqa: B006
        "interests", "tags", "explanations"],
    truth: Annotated[Path | None, typer.Option("--truth", help="Ground-truth interests JSONL (sample_data's "
                                               "truth_interests.jsonl): labels only, never prompts.")] = None,
    exclude_users: Annotated[Path | None, typer.Option(
        "--exclude-users", help="User ids (one a line) never to label: the users a benchmark scores.")] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="Stored split whose train part is used.")] = "loo",
    cuts: Annotated[int, typer.Option("--cuts", min=1, help="Cut points per user.")] = 2,
    history_tokens: Annotated[int, typer.Option("--history-tokens", min=16, help="compress --max-tokens of the "
                                                "history the judge sees (short: cheap to train on).")] = 128,
    max_users: Annotated[int | None, typer.Option("--max-users", min=1, help="A seeded sample of users.")] = None,
    seed: SeedOpt = 0,
) -> None:
    """Label judge samples from data (§3.2 at scale): ground truth (--truth) or behaviour after a cut."""
    from recgpt_cli.align.data import LogsConfig
    from recgpt_cli.intent import load_truth
    from recgpt_cli.judge import get_task
    from recgpt_cli.judge.buffer import open_buffer
    from recgpt_cli.judge.derive import derive_labels, store_derived
    from recgpt_cli.splits import ensure_split
    from recgpt_cli.store import connect

    for t in task:
        get_task(t)
    cfg = LogsConfig(protocol=protocol, cuts=cuts, history_tokens=history_tokens, seed=seed, max_users=max_users)
    with connect(db, create=False) as con:
        truth_map = load_truth(truth, con) if truth is not None else None
        excluded = user_list(exclude_users, con)
        ensure_split(con, protocol)
        labels = list(derive_labels(con, task, cfg, truth=truth_map, exclude=excluded))
    buf = open_buffer(buffer)
    try:
        counts = store_derived(buf, labels)
    finally:
        buf.close()
    for t, c in counts.items():
        console.print(f"[bold]judge derive[/] {t}: {c['samples']} samples ({c['new_samples']} new), {c['labels']} "
                      f"labels stored in {buffer}", highlight=False)


@app.command("train")
@friendly_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="Head dir to write (manifest.json + one <task>.pt per task); "
                                      "serve it with `recgpt judge --head DIR`.")],
    buffer: BufferOpt = Path("judge_labels.duckdb"),
    task: Annotated[list[str], typer.Option("--task", help="interests, tags, explanations (repeatable).")] = [  # noqa: B006
        "interests", "tags", "explanations"],
    base: Annotated[str | None, typer.Option("--from", help="Model whose hidden state the heads read: a GGUF, a "
                                             "transformers dir or an `align sft` output dir (default: the "
                                             "embedded model).")] = None,
    source: Annotated[list[str] | None, typer.Option("--source", help="Train on labels from these sources only "
                                                     "(repeatable; e.g. human, agent, derived:truth).")] = None,
    layer: Annotated[int, typer.Option("--layer", min=0, help="Hidden layer the heads read.")] = DEFAULT_LAYER,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0,
                                                help="L2 penalty of the heads.")] = DEFAULT_WEIGHT_DECAY,
    heldout_share: Annotated[float, typer.Option("--heldout-share", min=0.0, max=0.9, help="Share of users kept "
                                                 "out of training and scored (a stable hash of the user id).")] = 0.2,
    max_per_class: Annotated[int, typer.Option("--max-per-class", min=1, help="Newest labels kept per task and "
                                               "class (recency-prioritised downsampling).")] = 600,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Where the embedded GGUF is converted "
                                                   "once and features are cached (a rerun resumes; default: "
                                                   "$RECGPT_CACHE_DIR or ./.recgpt-cache).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the judge (§3.2) on the label buffer: linear heads over the model's hidden state, scored on held-out
    users against always-pass and the rules (Table 9 form)."""
    from recgpt_cli.judge import get_task
    from recgpt_cli.judge.head import train_heads
    from recgpt_cli.llm.options import LLMOptions as Opts

    for t in task:
        get_task(t)
    if not buffer.exists():
        raise BadInput(f"{buffer}: no such label buffer", "label first: recgpt judge annotate / derive, or "
                       "`recgpt judge annotate --task T --import labels.jsonl`")
    with contextlib.ExitStack() as stack:
        tick = None
        if not quiet:
            from rich.progress import Progress

            prog = stack.enter_context(Progress(console=console, transient=True))
            bar = prog.add_task("judge train: features", total=None)

            def tick() -> None:
                prog.advance(bar)
        res = train_heads(buffer, task, out, base=base, layer=layer, weight_decay=weight_decay, sources=source,
                          heldout_share=heldout_share, max_per_class=max_per_class,
                          cache_dir=cache_dir or Opts().resolved_cache_dir(), progress=tick)
    table = Table(title=f"judge heads -> {out}: agreement on held-out users (positive = passes every criterion)")
    for col in ("task", "train (pass)", "held-out", "judge", "ACC", "F1"):
        table.add_column(col, justify="left" if col in ("task", "judge") else "right", no_wrap=True)
    for name, info in res.items():
        lead = [name + (" (up to date)" if info.get("up_to_date") else ""), f"{info['train']} ({info['train_pass']})",
                str(info["heldout"])]
        for judge_name, m in (info.get("agreement_heldout") or {"(no held-out users)": None}).items():
            table.add_row(*lead, judge_name, *([f"{m['acc']:.3f}", f"{m['f1']:.3f}"] if m else ["", ""]))
            lead = ["", "", ""]
    Console().print(table)


@app.command("check")
@friendly_errors
@llm_options(date=False)
def check(
    task: TaskOpt,
    against: Annotated[Path, typer.Option("--against", help="Fresh human labels JSONL (gold format: sample fields "
                                          "+ labels), e.g. `judge annotate --export`.")],
    min_f1: Annotated[float, typer.Option("--min-f1", min=0.0, max=1.0, help="Fail (exit 1) when the judge's "
                                          "overall F1 on these labels is below this.")] = 0.7,
    buffer: BufferOpt = Path("judge_labels.duckdb"),
    no_rules: Annotated[bool, typer.Option("--no-rules", help="The model's verdicts without post-checks.")] = False,
    head: HeadOpt = None,
    llm_judge: LLMJudgeOpt = False,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
    llm_opts: LLMOptions = LLMOptions(),
) -> None:
    """Milestone check (§3.2): agreement with fresh labels (Table 9 form), recorded; exit 1 below --min-f1."""
    from recgpt_cli.errors import RecgptError
    from recgpt_cli.judge import get_task, judge_samples
    from recgpt_cli.judge.buffer import open_buffer
    from recgpt_cli.judge.check import check_history, record_check
    from recgpt_cli.judge.run import JUDGE_PARAMS
    from recgpt_cli.llm.factory import make_llm

    spec = get_task(task)
    gold = _load_labels(against, spec)
    open_buffer(buffer).close()  # a bad --buffer fails now, not after judging every label
    head = _pick_head(head, llm_judge, llm_opts, task)
    if head is not None:
        from recgpt_cli.judge import JudgeStats

        _refuse_own_labels(head, llm_opts, gold, task, str(against))
        rows = list(_head_judged(head, gold, task, no_rules, JudgeStats(), llm_opts))
        from recgpt_cli.judge.head import BUILTIN_HEADS

        judge_name = "head:packaged" if head == BUILTIN_HEADS else f"head:{head}"
    else:
        _refuse_own_labels(None, llm_opts, gold, task, str(against))
        rows = list(judge_samples(gold, make_llm(llm_opts, task="judge"), task, prompt=llm_opts.load_prompt(
            spec.prompt), params=llm_opts.sampling(JUDGE_PARAMS, seed=seed), use_rules=not no_rules, quiet=quiet))
        default_model = "embedded" if llm_opts.backend == "llama-cpp" else "default"
        judge_name = f"{llm_opts.backend}:{llm_opts.model or default_model}"
    judge_name += "" if no_rules else " + rules"
    report = checked_agreement(rows, gold, task, against)
    con = open_buffer(buffer)
    try:
        passed = record_check(con, report, judge=judge_name, labels=str(against), min_f1=min_f1)
        history = check_history(con, task)
    finally:
        con.close()
    Console().print(agreement_table(report))
    trend = Table(title=f"milestone checks — {task} (newest first)")
    for col in ("when (UTC)", "judge", "labels", "n", "ACC", "F1", "min F1", "passed"):
        trend.add_column(col)
    for h in history:
        trend.add_row(str(h["ts"])[:19], h["judge"], Path(h["labels"]).name, str(h["n"]), f"{h['acc']:.3f}",
                      f"{h['f1']:.3f}", "" if h["min_f1"] is None else f"{h['min_f1']:.2f}", "yes" if h["passed"]
                      else "NO")
    Console().print(trend)
    if not passed and report["n_errors"]:
        raise RecgptError(f"judge {task}: {report['n_errors']} of {report['n_errors'] + report['n']} fresh labels "
                          "got no verdict (the judge's answer failed): the check is recorded as failed",
                          "rerun the check (failed calls are not cached); if it persists, the judge needs realigning")
    if not passed:
        f1 = report["overall"]["f1"]
        raise RecgptError(f"judge {task}: F1 {f1:.3f} on {report['n']} fresh labels is below --min-f1 {min_f1:.2f}; "
                          "the judge no longer agrees with people: realign it (label more, then `recgpt judge train` "
                          "or `recgpt align sft --task judge`)")
