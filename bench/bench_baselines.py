"""Classic baselines on ml-100k, RecBole's default split (random 8/1/1 per user), full ranking (issue 4).

    python bench/bench_baselines.py                      # Pop, ItemKNN, BPR on split seed 2020
    python bench/bench_baselines.py --split-seeds 5      # + mean ± sd of Pop/ItemKNN over 5 split seeds
    python bench/bench_baselines.py --models pop,itemknn # skip BPR (a few minutes on a busy 2-core box)

Prints one rich table (stdout) with RecBole 1.2.1's numbers for the same protocol beside ours; our metrics use
RecBole's definitions, so the gap should be within the split-to-split spread (shown with --split-seeds).
`baseline_rows(split_data)` is reused by the towers benchmark for its combined table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recgpt_cli.baselines import fit_baseline, recommend  # noqa: E402
from recgpt_cli.metrics import compute_metrics  # noqa: E402
from recgpt_cli.splits import SplitData, load_split, make_split  # noqa: E402

COLUMNS = ("ndcg@10", "recall@10", "hit@10", "itemcoverage@10", "giniindex@10", "averagepopularity@10")
# RecBole 1.2.1, ml-100k, default config (RS 8/1/1, RO, full ranking), measured on this kind of machine.
RECBOLE_REFERENCE = {
    "bpr": {"ndcg@10": 0.2928, "recall@10": 0.2466, "hit@10": 0.7815, "itemcoverage@10": 0.278, "giniindex@10": 0.922},
    "itemknn": {"ndcg@10": 0.2834, "recall@10": 0.2470, "hit@10": 0.7847},
}


def ml100k_db(path: Path | None = None) -> Path:
    """A DuckDB with ml-100k imported (RecBole atomic files from the recbole wheel), built once under .cache/."""
    from bench.datasets import CACHE, ml100k_dir
    from recgpt_cli.importers.recbole import import_recbole
    from recgpt_cli.store import open_db

    path = path or CACHE / "bench" / "ml-100k.duckdb"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        con = open_db(path)
        try:
            import_recbole(con, ml100k_dir())
        except BaseException:
            con.close()
            path.unlink(missing_ok=True)
            raise
        con.close()
    return path


def baseline_rows(split_data: SplitData, names: tuple[str, ...] = ("pop", "itemknn", "bpr"),
                  seed: int = 2020) -> list[dict[str, Any]]:
    """One row per baseline: test metrics @10 (RecBole definitions, train+valid masked) and training seconds."""
    rows = []
    for name in names:
        t0 = time.perf_counter()
        scorer = fit_baseline(name, split_data, seed=seed)
        train_s = time.perf_counter() - t0
        topk = recommend(scorer, split_data, k=10, phase="test")
        row: dict[str, Any] = {"model": name, "train_s": train_s}
        row.update({k: v for k, v in compute_metrics(topk, split_data, "test", ks=(10,)).items() if k in COLUMNS})
        if name == "bpr":
            row["epochs"] = len(getattr(scorer, "history", []))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="pop,itemknn,bpr")
    ap.add_argument("--split-seed", type=int, default=2020)
    ap.add_argument("--split-seeds", type=int, default=0, help="also Pop/ItemKNN over this many split seeds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from recgpt_cli.store import open_db

    con = open_db(ml100k_db())
    make_split(con, "recbole", seed=args.split_seed, force=True)
    data = load_split(con, "recbole")
    names = tuple(n.strip() for n in args.models.split(",") if n.strip())
    rows = baseline_rows(data, names, seed=args.split_seed)
    table = Table(title=f"ml-100k, RecBole split (seed {args.split_seed}), full ranking, test @10 — "
                        f"{len(data.train):,}/{len(data.valid):,}/{len(data.test):,} train/valid/test")
    table.add_column("model")
    for c in (*COLUMNS, "train s"):
        table.add_column(c.replace("averagepopularity", "avgpop").replace("itemcoverage", "coverage"), justify="right")
    for row in rows:
        table.add_row(row["model"] + (f" ({row['epochs']} ep)" if "epochs" in row else ""),
                      *(f"{row[c]:.4f}" if c != "averagepopularity@10" else f"{row[c]:.1f}" for c in COLUMNS),
                      f"{row['train_s']:.1f}")
        ref = RECBOLE_REFERENCE.get(row["model"])
        if ref:
            table.add_row(f"  RecBole 1.2.1 {row['model']}", *(f"{ref[c]:.4f}" if c in ref else "" for c in COLUMNS),
                          "", style="dim")
    if args.split_seeds:
        spread: dict[str, list[dict[str, Any]]] = {}
        for s in range(1, args.split_seeds + 1):
            make_split(con, "recbole", seed=s, force=True)
            for row in baseline_rows(load_split(con, "recbole"), ("pop", "itemknn"), seed=s):
                spread.setdefault(row["model"], []).append(row)
        for name, rs in spread.items():
            table.add_row(f"{name} mean±sd {len(rs)} splits",
                          *(f"{statistics.mean(r[c] for r in rs):.4f}±{statistics.stdev(r[c] for r in rs):.4f}"
                            for c in COLUMNS), "", style="italic")
        make_split(con, "recbole", seed=args.split_seed, force=True)
    con.close()
    Console(width=max(Console().width, 150)).print(table)


if __name__ == "__main__":
    main()
