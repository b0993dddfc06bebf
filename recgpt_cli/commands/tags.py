"""`recgpt predict-tags`."""

from __future__ import annotations

from pathlib import Path

from recgpt_cli.commands.common import DbOpt, InOpt, OutOpt, QuietOpt, SeedOpt, friendly_errors, not_implemented


@friendly_errors
def predict_tags(
    db: DbOpt = Path("recgpt.duckdb"),
    in_path: InOpt = "-",
    out: OutOpt = "-",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Predict item tags per user interest with LLM_IT (§2.2)."""
    not_implemented("predict-tags", "issue 3")
