"""Compression benchmark (§2.1.1): token reduction vs the naive one-line-per-behaviour log, share of users within a
2,048-token budget, distinct items lost, and time — on ml-100k (RecBole atomic files) and on sample_data.

    python bench/bench_compress.py [--max-tokens 2048]

Tokens are counted with the embedded model's tokenizer (SmolLM2 GGUF). Goal: >= 50% fewer tokens, 0 items lost
for users that fit without truncation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.datasets import ml100k_dir  # noqa: E402
from recgpt_cli.compress import CompressStats, compress_stats, compress_users, default_reference_date  # noqa: E402
from recgpt_cli.importers import import_jsonl, import_recbole  # noqa: E402
from recgpt_cli.store import open_db  # noqa: E402
from recgpt_cli.tokens import token_counter  # noqa: E402


def run(
    name: str, load: Callable[[duckdb.DuckDBPyConnection], object], max_tokens: int
) -> tuple[CompressStats, float, float]:
    """Import into a fresh DB, then compress everyone: (stats, wall seconds, CPU seconds) for the compression."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / f"{name}.duckdb"
        con = open_db(db)
        load(con)
        con.close()
        counter = token_counter()
        started, cpu = time.perf_counter(), time.process_time()
        con = open_db(db, read_only=True)
        ref = default_reference_date(con)
        stats = compress_stats(con, date=ref, max_tokens=max_tokens)
        users = compress_users(con, date=ref, max_tokens=max_tokens, token_counter=counter)
        con.close()
        for user in users:
            stats.add(user)
        return stats, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-tokens", type=int, default=2048)
    args = ap.parse_args()
    sample = ROOT / "sample_data"
    datasets: dict[str, Callable[[duckdb.DuckDBPyConnection], object]] = {
        "ml-100k": lambda con: import_recbole(con, ml100k_dir()),
        "sample_data": lambda con: import_jsonl(
            con, users=sample / "users.jsonl", items=sample / "items.jsonl", behaviors=sample / "behaviors.jsonl"
        ),
    }
    table = Table(title=f"recgpt compress, budget {args.max_tokens} tokens (embedded SmolLM2 tokenizer)")
    cols = ["dataset", "date", "users", "behaviours kept", "dropped", "tokens raw", "tokens compressed",
            "reduction", "within budget", "raw within budget", "items lost (untruncated)", "items lost (truncated)",
            "seconds", "CPU s"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("dataset", "date") else "right")
    for name, load in datasets.items():
        s, secs, cpu = run(name, load, args.max_tokens)
        kept = sum(c["kept"] for c in s.by_type.values())
        dropped = sum(c["dropped"] for c in s.by_type.values())
        table.add_row(name, s.date, f"{s.users:,}", f"{kept:,}", f"{dropped:,}", f"{s.tokens_raw:,}",
                      f"{s.tokens_compressed:,}", f"{s.reduction:.1%}", f"{s.within_budget:.1%}",
                      f"{s.users_raw_within_budget / max(s.users, 1):.1%}", f"{s.items_lost_untruncated:,}",
                      f"{s.items_lost:,} of {s.items:,}", f"{secs:.1f}", f"{cpu:.1f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
