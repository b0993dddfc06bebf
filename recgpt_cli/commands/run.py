"""`recgpt run`."""

from __future__ import annotations

from pathlib import Path

from recgpt_cli.commands.common import DbOpt, InOpt, OutOpt, QuietOpt, SeedOpt, friendly_errors, not_implemented


@friendly_errors
def run(
    db: DbOpt = Path("recgpt.duckdb"),
    in_path: InOpt = "-",
    out: OutOpt = "-",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Run the whole pipeline on a dataset and print a summary."""
    not_implemented("run", "issue 2-4")
