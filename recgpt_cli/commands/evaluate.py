"""`recgpt evaluate`."""

from __future__ import annotations

from pathlib import Path

from recgpt_cli.commands.common import DbOpt, InOpt, OutOpt, QuietOpt, SeedOpt, friendly_errors, not_implemented


@friendly_errors
def evaluate(
    db: DbOpt = Path("recgpt.duckdb"),
    in_path: InOpt = "-",
    out: OutOpt = "-",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Score recommendations with RecBole's metric definitions (full ranking)."""
    not_implemented("evaluate", "issue 4")
