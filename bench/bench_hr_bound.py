"""How far HR@30 tag→category (§2.2.2) can reach on the intent bench, with no LLM: for the bench's users, the share
whose held-out item's category is among the first k categories of each source (what k tags naming k categories
would hit). Issue 9 asks the aligned model's HR@30 to beat the best non-LLM source; this says which k that takes.

    python bench/bench_hr_bound.py [--work DIR] [--users 100] [--phase valid] [--history-tokens 384]

Sources, each from what the phase lets a model see (train for valid, train + valid for test):
- count: the user's categories by engagement count (the bench's freq-categories, in its order);
- newest + count: `align data`'s interest targets (`align.data.log_interests`, rank "newest": the newest
  engagement's category, then the categories engaged with >= 2 times by count), so the adapter's interests;
- newest + count, named: the same, kept only where the compressed prompt (the bench's budget) names the category,
  as the interest rules keep only supported interests;
- pop: the train split's most popular categories (the bench's pop-categories).
The LLM writes 3-4 interests a user and its tags follow them (bench/README.md, twenty-eighth session).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_intent  # noqa: E402
from recgpt_cli.align.data import Engagement, log_interests  # noqa: E402
from recgpt_cli.compress import DEFAULT_MAX_TOKENS, SplitView, compress_users, default_reference_date  # noqa: E402
from recgpt_cli.evaluate import next_item_categories  # noqa: E402
from recgpt_cli.interests import MAX_INTERESTS_CAP  # noqa: E402
from recgpt_cli.splits import SplitData, load_split  # noqa: E402
from recgpt_cli.tokens import token_counter  # noqa: E402

KS = tuple(range(1, 10))  # up to the bench's 9 tags (bench_intent.N_BASELINE_TAGS)
SOURCES = ("count", "newest + count", "newest + count, named", "pop")


def category_lists(con: Any, split: SplitData, users: list[str], phase: str, history_tokens: int
                   ) -> dict[str, list[list[str]]]:
    """Per source, each user's categories in the source's order (up to the bench's 9 for count and pop)."""
    base = bench_intent.baseline_records(con, split, users)  # freq-categories and pop-categories, as the bench has them
    info = {r[0]: r[1:] for r in con.execute("SELECT item_id, title, category_leaf, brand FROM items").fetchall()}
    history: dict[int, list[Engagement]] = defaultdict(list)
    for part_name in ("train", "valid") if phase == "test" else ("train",):
        part = split.phase(part_name)
        for u, v, t in zip(part.user, part.item, part.ts, strict=True):
            iid = split.item_ids[int(v)]
            history[int(u)].append(Engagement(iid, t.astype("datetime64[us]").item(), *info[iid]))
    named = {r.user_id: set(r.to_record()["categories"]) for r in compress_users(
        con, date=default_reference_date(con), max_tokens=history_tokens, user_ids=users,
        token_counter=token_counter(), view=SplitView(bench_intent.PROTOCOL, phase))}
    out: dict[str, list[list[str]]] = {s: [] for s in SOURCES}
    for uid, freq, pop in zip(users, base["freq-categories"], base["pop-categories"], strict=True):
        # time order, ties by item index: the order `align data` reads a user's engagements in
        es = sorted(history[split.user_index[uid]], key=lambda e: (e.ts, split.item_index[e.item_id]))
        # every category the targets' rule ranks (a cap beyond any user's count), cut at the newest engagement
        ranked = [i["leaf"] for i in log_interests(es, es[-1].ts, MAX_INTERESTS_CAP)] if es else []
        out["count"].append([t["tag"] for t in freq["tags"]])
        out["newest + count"].append(ranked)
        out["newest + count, named"].append([c for c in ranked if c in named.get(uid, set())])
        out["pop"].append([t["tag"] for t in pop["tags"]])
    return out


def run_dataset(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    con, _ = bench_intent.scored_store(name, Path(args.work), read_only=True)
    split = load_split(con, bench_intent.PROTOCOL)
    users = bench_intent.pick_users(split, args.users, 0)
    truth = next_item_categories(con, bench_intent.PROTOCOL, args.phase)
    lists = category_lists(con, split, users, args.phase, args.history_tokens)
    con.close()
    rows = []
    for source, per_user in lists.items():
        row: dict[str, Any] = {"dataset": name, "source": source, "users": len(users)}
        for k in KS:
            row[f"k={k}"] = float(np.mean([truth.get(u) in cats[:k] for u, cats in zip(users, per_user, strict=True)]))
        row["categories@4"] = float(np.mean([len(c[:4]) for c in per_user]))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="sample_data,ml-100k")
    ap.add_argument("--work", default=str(Path(__file__).resolve().parent / "out" / "intent"),
                    help="the intent bench's work dir (its stores are reused, or imported and split there)")
    ap.add_argument("--users", type=int, default=100, help="the intent bench's seeded pick (the same users)")
    ap.add_argument("--phase", default="valid", choices=("valid", "test"))
    ap.add_argument("--history-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                    help="compress budget of the prompt whose named categories the `named` source keeps")
    args = ap.parse_args()
    bench_intent.PHASE = args.phase
    Path(args.work).mkdir(parents=True, exist_ok=True)
    table = Table(title=f"HR@30's reach: the held-out item's category among a source's first k categories (LOO "
                        f"{args.phase} phase, {args.users} intent-bench users, no LLM)")
    cols = ["dataset", "source", "users", *(f"k={k}" for k in KS), "categories@4"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("dataset", "source") else "right")
    for name in args.datasets.split(","):
        for row in run_dataset(name, args):
            table.add_row(*(f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
