"""`recgpt import jsonl|recbole|movielens`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recgpt_cli.commands.common import DbOpt, QuietOpt, console, friendly_errors

if TYPE_CHECKING:
    import duckdb
    from rich.table import Table

    from recgpt_cli.importers import ImportReport

app = typer.Typer(help="Load users, items and behaviours into the DuckDB store.", no_args_is_help=True)

ThresholdOpt = Annotated[
    float,
    typer.Option("--rating-threshold", help="Ratings >= this become 'favorite', lower 'detail_view' (value kept)."),
]
SkipBadDbOpt = Annotated[
    bool, typer.Option("--skip-bad", help="Skip bad lines (counted, kept in <db>.rejects.jsonl) instead of stopping.")
]


def summary_table(report: ImportReport) -> Table:
    """Rows inserted/updated/duplicate/rejected per table, for stderr."""
    from rich.table import Table

    table = Table()
    for col in ("table", "inserted", "updated", "duplicates", "rejected"):
        table.add_column(col, justify="left" if col == "table" else "right")
    for name in ("users", "items", "behaviors"):
        c = getattr(report, name)
        table.add_row(name, f"{c.inserted:,}", f"{c.updated:,}", f"{c.duplicates:,}", f"{c.rejected:,}")
    if report.users_created:
        table.add_row("users (from behaviours)", f"{report.users_created:,}", "", "", "")
    if report.items_created:
        table.add_row("items (from behaviours)", f"{report.items_created:,}", "", "", "")
    table.caption = f"{report.seconds:.2f}s" + (f"; rejects in {report.rejects_path}" if report.rejects_path else "")
    return table


def future_notes(con: duckdb.DuckDBPyConnection) -> list[str]:
    """A behaviour dated after today is kept (logs may be synthetic or shifted), but said: the stages that default
    to the store's newest date (`compress` without --date) would date every history from it."""
    n, latest = con.execute("SELECT count(*), max(ts) FROM behaviors "
                            "WHERE ts > current_timestamp::TIMESTAMP + INTERVAL 1 DAY").fetchone()  # type: ignore[misc]
    if not n:
        return []
    return [f"{n:,} behaviours are dated after today (the latest {latest}); `compress` without --date dates every "
            "history from the newest one: check the timestamps, or pass --date"]


def _run(db: Path, quiet: bool, load: Callable[[duckdb.DuckDBPyConnection, Path], ImportReport]) -> None:
    """Open the DB, import, print the summary. A new DB file is removed again if the import fails."""
    from recgpt_cli.io import rejects_path_for
    from recgpt_cli.store import open_db

    created = not db.exists()
    con = open_db(db)
    try:
        report = load(con, rejects_path_for(db, db))
        report.notes.extend(future_notes(con))
    except BaseException:
        con.close()
        if created:
            for p in (db, db.with_name(db.name + ".wal")):
                p.unlink(missing_ok=True)
        raise
    con.close()
    if not quiet:
        console.print(f"imported {report.source}", highlight=False, soft_wrap=True)
        console.print(summary_table(report))
        for note in report.notes:
            console.print(f"note: {note}", highlight=False, soft_wrap=True)
        if report.rejected:
            console.print(f"[yellow]{report.rejected:,} bad rows skipped[/], written to {report.rejects_path}")


@app.command("jsonl")
@friendly_errors
def jsonl(
    db: DbOpt,
    users: Annotated[
        str | None, typer.Option("--users", help="Users JSONL ({user_id, attributes}), - = stdin.")
    ] = None,
    items: Annotated[
        str | None, typer.Option("--items", help="Items JSONL ({item_id, title, category, ...}), - = stdin.")
    ] = None,
    behaviors: Annotated[
        str | None, typer.Option("--behaviors", help="Behaviours JSONL ({user_id, type, timestamp, ...}), - = stdin.")
    ] = None,
    skip_bad: SkipBadDbOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import users/items/behaviours JSONL files, validated line by line; all or nothing, re-runs add nothing."""
    from recgpt_cli.importers import import_jsonl

    _run(
        db,
        quiet,
        lambda con, rej: import_jsonl(
            con, users=users, items=items, behaviors=behaviors, skip_bad=skip_bad, rejects_path=rej
        ),
    )


@app.command("recbole")
@friendly_errors
def recbole(
    directory: Annotated[Path, typer.Argument(help="Folder with RecBole atomic files X.inter [X.item X.user].")],
    db: DbOpt,
    rating_threshold: ThresholdOpt = 4.0,
    skip_bad: SkipBadDbOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import a RecBole dataset (atomic files with name:type headers), e.g. ml-100k."""
    from recgpt_cli.importers import import_recbole

    _run(
        db,
        quiet,
        lambda con, rej: import_recbole(
            con, directory, rating_threshold=rating_threshold, skip_bad=skip_bad, rejects_path=rej
        ),
    )


@app.command("movielens")
@friendly_errors
def movielens(
    path: Annotated[Path, typer.Argument(help="Unzipped ml-100k (u.data ...) or ml-1m (ratings.dat ...) folder.")],
    db: DbOpt,
    rating_threshold: ThresholdOpt = 4.0,
    skip_bad: SkipBadDbOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import raw MovieLens ml-100k or ml-1m files (ratings -> favorite/detail_view behaviours)."""
    from recgpt_cli.importers import import_movielens

    _run(
        db,
        quiet,
        lambda con, rej: import_movielens(
            con, path, rating_threshold=rating_threshold, skip_bad=skip_bad, rejects_path=rej
        ),
    )
