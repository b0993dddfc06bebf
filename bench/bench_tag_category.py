"""Tag→category model φ (§2.2.2): accuracy on held-out items, titles → finest category.
    python bench/bench_tag_category.py [--holdout 0.2] [--seeds 3]
On sample_data (80 leaf categories; a title's product noun names its leaf) and ml-100k (movie titles → the last
listed genre, a hard, ambiguous target kept as a floor). Majority class shown for scale.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.datasets import ml100k_dir  # noqa: E402
from recgpt_cli.importers import import_jsonl, import_recbole  # noqa: E402
from recgpt_cli.store import open_db  # noqa: E402
from recgpt_cli.tag_category import fit_tag_category  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--holdout", type=float, default=0.2, help="share of items held out, in (0, 1)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds averaged, at least 1")
    args = ap.parse_args()
    if not 0 < args.holdout < 1:
        ap.error(f"--holdout {args.holdout}: must be between 0 and 1")
    if args.seeds < 1:
        ap.error(f"--seeds {args.seeds}: must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="bench_phi_"))
    table = Table(title=f"φ: item title → leaf category, {args.holdout:.0%} of items held out, mean over "
                        f"{args.seeds} seeds")
    for col in ("dataset", "items", "classes", "top-1 accuracy", "top-3 accuracy", "majority class"):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    loaders = {
        "sample_data": lambda con: import_jsonl(con, items=str(ROOT / "sample_data/items.jsonl")),
        "ml-100k": lambda con: import_recbole(con, ml100k_dir()),
    }
    for name, load in loaders.items():
        con = open_db(work / f"{name}.duckdb")
        load(con)
        reports = [fit_tag_category(con, seed=s, holdout=args.holdout)[1] for s in range(args.seeds)]
        con.close()
        mean = {k: sum(r[k] for r in reports) / len(reports) for k in ("accuracy", "top3_accuracy",
                                                                           "majority_accuracy")}
        table.add_row(name, f"{reports[0]['n_items']:,}", str(reports[0]["n_classes"]), f"{mean['accuracy']:.4f}",
                      f"{mean['top3_accuracy']:.4f}", f"{mean['majority_accuracy']:.4f}")
    Console().print(table)


if __name__ == "__main__":
    main()
