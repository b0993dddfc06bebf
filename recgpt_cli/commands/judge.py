"""`recgpt judge`."""

from __future__ import annotations

from pathlib import Path

from recgpt_cli.commands.common import DbOpt, InOpt, OutOpt, QuietOpt, SeedOpt, friendly_errors, not_implemented


@friendly_errors
def judge(
    db: DbOpt = Path("recgpt.duckdb"),
    in_path: InOpt = "-",
    out: OutOpt = "-",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Judge interests, tags or explanations per criterion with an LLM judge (§3)."""
    not_implemented("judge", "issue 3")
