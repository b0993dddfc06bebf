"""`recgpt judge annotate`: label judge samples by hand into a DuckDB label buffer (§3.2), import and export labels."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from recgpt_cli.commands.common import BufferOpt, console, friendly_errors
from recgpt_cli.errors import BadInput
from recgpt_cli.io import STDIO, iter_jsonl, source_name

FileArg = Annotated[str | None, typer.Argument(
    metavar="[FILE]", help="Stage output or flat judge samples JSONL to label (- for stdin; keys then come from the "
    "terminal).", show_default=False)]


@friendly_errors
def annotate(
    task: Annotated[str, typer.Option("--task", help="interests | tags | explanations")],
    file: FileArg = None,
    db: BufferOpt = Path("judge_labels.duckdb"),
    annotator: Annotated[str, typer.Option("--annotator", envvar="USER", help="Who labels (default: $USER).")
                         ] = "annotator",
    import_path: Annotated[Path | None, typer.Option(
        "--import", help="Labels JSONL in the gold format (sample_data/gold/*.jsonl) to load; no interaction.",
        show_default=False)] = None,
    export: Annotated[str | None, typer.Option(
        "--export", help="Write fully labelled samples in the gold format to this file (- for stdout) and exit.",
        show_default=False)] = None,
    source: Annotated[str | None, typer.Option(
        "--source", help="Label source: stored with each label (default human); with --export, export only this "
        "source's labels (default all).", show_default=False)] = None,
) -> None:
    """Label judge samples one key per criterion (§3.2); every key commits, rerun to resume."""
    from recgpt_cli.judge.annotate import annotate as annotate_loop
    from recgpt_cli.judge.annotate import terminal_key_reader
    from recgpt_cli.judge.buffer import export_labels, import_labels, label_counts, open_buffer
    from recgpt_cli.judge.criteria import get_task

    get_task(task)
    if file is not None and (import_path or export):
        raise BadInput("give FILE to label interactively, or --import/--export, not both")
    if file is None and not (import_path or export):
        raise BadInput("nothing to do: give a samples FILE to label, or --import / --export",
                       f"recgpt judge annotate --task {task} samples.jsonl --buffer {db}")
    if export is not None and import_path is None and not db.is_file():  # a mistyped --buffer exports nothing
        raise BadInput(f"{db}: no such label buffer", "label with `recgpt judge annotate` or import labels first")
    samples = _read_samples(file, task) if file is not None else []
    con = open_buffer(db)
    try:
        if import_path is not None:
            n = import_labels(con, import_path, task, source=source or "human", annotator=annotator)
            console.print(f"[bold]import {task}[/]: {n['samples']} rows, {n['new_samples']} new samples, "
                          f"{n['labels']} labels stored ({n['already_stored']} already there) -> {db}",
                          highlight=False, soft_wrap=True)
        if export is not None:
            rows = export_labels(con, task, export, sources=[source] if source else None)
            console.print(f"[bold]export {task}[/]: {rows} labelled samples -> "
                          f"{'<stdout>' if str(export) == STDIO else export}",
                          highlight=False, soft_wrap=True)
        if file is None:
            c = label_counts(con, task)
            console.print(f"buffer {db}: {c['samples']} {task} samples, {c['complete']} fully labelled; label rows "
                          f"by source {c['by_source'] or {}}", highlight=False, soft_wrap=True)
            return
        keys = _key_stream(file)
        try:
            stats = annotate_loop(con, task, samples, annotator=annotator, read_key=terminal_key_reader(keys),
                                  show=console.print, source=source or "human")
        finally:
            if keys is not None:
                keys.close()
    finally:
        con.close()
    resume = shlex.join(["recgpt", "judge", "annotate", "--task", task, file, "--buffer", str(db),
                         "--annotator", annotator] + (["--source", source] if source else []))
    console.print(f"[bold]annotate {task}[/]: labelled {stats.labelled}, skipped {stats.skipped}, undone "
                  f"{stats.undone}; {stats.remaining} of {stats.samples} samples remaining", highlight=False,
                  soft_wrap=True)
    if stats.remaining:
        console.print(f"  resume with: {resume}", highlight=False, soft_wrap=True)
    else:
        console.print(f"  all labelled; export with: recgpt judge annotate --task {task} --buffer {db} --export "
                      "labels.jsonl", highlight=False, soft_wrap=True)


def _read_samples(file: str, task: str) -> list[dict[str, Any]]:
    from recgpt_cli.judge.samples import expand_record

    out: list[dict[str, Any]] = []
    for line, rec in iter_jsonl(file):
        try:
            out.extend(expand_record(rec, task))
        except ValueError as exc:
            raise BadInput.at(source_name(file), line, str(exc)) from None
    return out


def _key_stream(file: str) -> Any:
    """Samples read from stdin leave no stdin for keys: read them from the terminal instead."""
    if file != STDIO:
        return None
    try:
        return open("/dev/tty")  # noqa: SIM115 - closed by the caller
    except OSError:
        raise BadInput("samples came from stdin and there is no terminal to read keys from",
                       "give the samples as a FILE path") from None
