"""`recgpt` — the RecGPT pipeline as shell commands. Each command is a thin wrapper over a stage module."""

from __future__ import annotations

from typing import Annotated

import typer

from recgpt_cli import __version__
from recgpt_cli.commands import common

app = typer.Typer(
    name="recgpt",
    help=(
        "RecGPT (arXiv 2507.22879) as a pipeline of shell commands: compress behaviour logs, mine user "
        "interests with an LLM, predict item tags, retrieve items with user-item-tag towers, explain, and judge.\n\n"
        "Stages read and write JSONL (- is stdin/stdout) and a DuckDB file (--db)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"recgpt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    common.set_debug(debug)


def _register() -> None:
    # Imported here so `recgpt --help` stays fast: command modules import their stages lazily.
    from recgpt_cli.commands import (
        align,
        compress,
        evaluate,
        explain,
        importer,
        interests,
        judge,
        retrieve,
        run,
        tags,
        towers,
    )

    app.add_typer(importer.app, name="import")
    app.command("compress")(compress.compress)
    app.command("mine-interests")(interests.mine_interests)
    app.command("predict-tags")(tags.predict_tags)
    app.command("train-towers")(towers.train_towers)
    app.command("retrieve")(retrieve.retrieve)
    app.command("explain")(explain.explain)
    app.add_typer(judge.app, name="judge")
    app.command("evaluate")(evaluate.evaluate)
    app.command("run")(run.run)
    app.add_typer(align.app, name="align")


_register()


def main() -> None:
    app()
