"""`recgpt retrieve`."""

from __future__ import annotations

from pathlib import Path

from recgpt_cli.commands.common import DbOpt, InOpt, OutOpt, QuietOpt, SeedOpt, friendly_errors, not_implemented


@friendly_errors
def retrieve(
    db: DbOpt = Path("recgpt.duckdb"),
    in_path: InOpt = "-",
    out: OutOpt = "-",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Retrieve items per user by fusing user and tag towers, h_fuse = beta*h_u + (1-beta)*h_t (§2.3.3)."""
    not_implemented("retrieve", "issue 4")
