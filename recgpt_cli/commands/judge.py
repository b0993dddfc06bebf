"""`recgpt judge`: per-criterion LLM verdicts (§3) and agreement with human labels (§4.3, Table 9)."""

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

from recgpt_cli.commands.common import InOpt, OutOpt, QuietOpt, SeedOpt, SkipBadOpt, console, friendly_errors
from recgpt_cli.commands.llm_options import LLMOptions, llm_options
from recgpt_cli.errors import BadInput, PartialFailure
from recgpt_cli.io import STDIO, Rejects, iter_jsonl, jsonl_writer, rejects_path_for, source_name
from recgpt_cli.schema import stage_row

InArg = Annotated[str | None, typer.Argument(help="Stage output or samples JSONL (or - for stdin); same as --in.")]
TaskOpt = Annotated[str, typer.Option("--task", help="interests | tags | explanations")]


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
    seed: SeedOpt = 0,
    skip_bad: SkipBadOpt = False,
    quiet: QuietOpt = False,
    llm_opts: LLMOptions = LLMOptions(),
) -> None:
    """Judge interests, tags or explanations per criterion with an LLM judge (§3)."""
    from recgpt_cli.judge import JudgeStats, agreement, expand_record, get_task, judge_samples
    from recgpt_cli.judge.run import JUDGE_PARAMS
    from recgpt_cli.llm.factory import make_llm

    spec = get_task(task)
    t0 = time.perf_counter()
    src = in_arg if in_arg is not None else in_path
    gold = _load_labels(against, spec) if against else None
    rejects = Rejects(source_name(src))

    def records() -> Iterator[dict[str, Any]]:
        for line, rec in iter_jsonl(src, skip_bad=skip_bad, rejects=rejects):
            try:
                samples = expand_record(rec, task)
            except ValueError as exc:
                if not skip_bad:
                    raise BadInput.at(source_name(src), line, str(exc)) from None
                rejects.add(line, str(exc), orjson.dumps(rec).decode())
                continue
            yield from samples

    llm = make_llm(llm_opts, task="judge")
    tmpl = llm_opts.load_prompt(spec.prompt)
    params = llm_opts.sampling(JUDGE_PARAMS, seed=seed)
    stats = JudgeStats()
    rows = []
    write_to = None if (gold is not None and out == STDIO) else out
    with jsonl_writer(write_to) if write_to is not None else contextlib.nullcontext() as w:
        for row in judge_samples(records(), llm, task, prompt=tmpl, params=params, use_rules=not no_rules,
                                 stats=stats, quiet=quiet):
            if gold is not None:
                rows.append(row)
            if w is not None:
                w.write(stage_row("verdict", row))
    if len(rejects):
        rejects.write(rejects_path_for(out, src))
    if not quiet:
        d = stats.as_dict()
        rates = ", ".join(f"{c} {r:.0%}" for c, r in d["pass_rates"].items())
        console.print(f"[bold]judge {task}[/]: {d['n']} samples, pass rates: {rates}; errors {d['errors']}; "
                      f"rules fired {d['rules_fired'] or {}}; cached {d['cached']}; tokens "
                      f"{d['prompt_tokens']}+{d['completion_tokens']}; bad lines skipped {len(rejects)}; "
                      f"{time.perf_counter() - t0:.1f}s", highlight=False, soft_wrap=True)
    if gold is not None:
        report = agreement(rows, gold, task)
        if as_json:
            typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        else:
            Console().print(agreement_table(report))
    if stats.n_errors:
        raise PartialFailure(f"judge {task}", stats.n_errors, stats.n, "samples")


def _load_labels(path: Path, spec: Any) -> list[dict[str, Any]]:
    out = []
    for line, rec in iter_jsonl(path):
        labels = rec.get("labels")
        err = "missing 'sample_id'" if not rec.get("sample_id") else (
            "missing 'labels' object" if not isinstance(labels, dict) else spec.check_labels(labels))
        if err:
            raise BadInput.at(str(path), line, err, f"labels for --task {spec.name}: see sample_data/gold/README.md")
        out.append(rec)
    return out


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

