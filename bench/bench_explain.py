"""LLM_RE before and after alignment (issue 9, §2.4.1): the explanation table of held-out users, per explainer.

    python bench/bench_explain.py [--datasets sample_data,ml-100k] [--users 20] [--phase valid|test]
                                  [--explainers base,DIR,...] [--work bench/out/explain] [--json FILE]

Per dataset: the intent bench's seeded held-out users (the first `--users` of its 100; never in any alignment
sample), their histories compressed split-aware for `--phase`, interests and tags from the packaged adapter (what
`recgpt run` serves), then `explain --build-table`'s own code: distinct (interest, category) pairs through φ, one
LLM_RE call per pair, a new seed on a safety failure (at most 3 calls), the safety rules of `recgpt_cli.safety`.
Every explainer gets the same pairs. Explainers: `base` (the raw embedded model), `packaged` (whatever `explain`
serves by default: the packaged explanation adapter, `recgpt_cli/llm/aligned/explain/`), or a model dir / GGUF
path (e.g. `build_aligned.py --explanations --dest D`'s D/explain, or WORK/explain-model-r1/served).

Columns: pairs; first-pass (the first answer passes the rules); kept (an explanation within 3 calls: what the table
holds); LLM calls and seconds per pair; distinct (unique texts / kept); on-topic (a kept text names a word of its
interest or of the category: `explain.names_subject`); names-interest (a word of its interest: the link the prompt
asks for); mean words; the rules that removed answers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_intent  # noqa: E402
from recgpt_cli.compress import DEFAULT_MAX_TOKENS, default_reference_date  # noqa: E402
from recgpt_cli.explain import (  # noqa: E402
    ExplainStats,
    build_explanation_table,
    category_texts,
    default_matcher,
    interest_category_pairs,
    load_items,
    names_subject,
    parse_user_interests,
)
from recgpt_cli.llm.aligned import BASE_MODEL, PACKAGED_DIR  # noqa: E402
from recgpt_cli.splits import load_split  # noqa: E402
from recgpt_cli.store import open_db  # noqa: E402


def explainer_model(name: str) -> str | None:
    """`--explainers` names -> make_llm's `model` (None: the stage's default)."""
    return {"base": BASE_MODEL, "packaged": None}.get(name, name)


def held_out_users(name: str, args: argparse.Namespace) -> tuple[Path, list[dict[str, Any]]]:
    """The intent bench's users for `name`, their interests and tags from the packaged adapter (cached)."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"{name}.duckdb"
    bench_intent.load(name, db)
    con = open_db(db, read_only=True)
    users = bench_intent.pick_users(load_split(con, bench_intent.PROTOCOL), 100, 0)[: args.users]
    con.close()
    ns = argparse.Namespace(history_tokens=DEFAULT_MAX_TOKENS, model=str(PACKAGED_DIR),
                            max_interests=bench_intent.BENCH_INTERESTS,
                            constrain=bench_intent.DEFAULT_CONSTRAIN)
    rows, _ = bench_intent.llm_records(db, users, work, ns)
    return db, rows


def score(db: Path, rows: list[dict[str, Any]], explainer: str, work: Path) -> dict[str, Any]:
    from recgpt_cli.llm.factory import make_llm

    os.environ["RECGPT_CACHE_DIR"] = str(work / "llm-cache")
    users = [parse_user_interests(r) for r in rows]
    items = load_items(db)
    matcher, _ = default_matcher(items)
    pairs = interest_category_pairs(users, matcher)
    facts = category_texts({leaf for _, leaf in pairs}, items)
    with open_db(db, read_only=True) as con:
        date = default_reference_date(con).isoformat()
    stats = ExplainStats()
    llm = make_llm(task="explanation", model=explainer_model(explainer))
    started = time.perf_counter()
    made = build_explanation_table(db, users, llm, date=date, write_db=False, matcher=matcher, stats=stats)
    seconds = time.perf_counter() - started
    n = max(len(pairs), 1)
    texts = [r["explanation"] for r in made]
    return {"explainer": explainer, "pairs": len(pairs), "first_pass": sum(r["attempts"] == 1 for r in made) / n,
            "kept": len(made) / n, "calls_per_pair": stats.llm_calls / n, "s_per_pair": seconds / n,
            "distinct": len(set(texts)) / max(len(texts), 1),
            "on_topic": sum(names_subject(r["explanation"], r["interest"], facts[r["category_leaf"]]) for r in made)
            / max(len(made), 1),
            "names_interest": sum(names_subject(r["explanation"], r["interest"], "") for r in made) / max(len(made), 1),
            "words": sum(len(t.split()) for t in texts) / max(len(texts), 1),
            "failures": dict(Counter(stats.safety_failures).most_common()),
            "examples": [f"{r['interest']} × {r['category_leaf']}: {r['explanation']}" for r in made[:6]]}


def table(results: list[dict[str, Any]]) -> Table:
    t = Table(title=f"LLM_RE explanation table on held-out users ({bench_intent.PHASE} histories)")
    cols = ("dataset", "explainer", "pairs", "first_pass", "kept", "calls_per_pair", "s_per_pair", "distinct",
            "on_topic", "names_interest", "words", "failures")
    for c in cols:
        t.add_column(c)
    for r in results:
        t.add_row(*(bench_intent.fmt(r[c]) if not isinstance(r[c], dict) else
                    ", ".join(f"{k} {v}" for k, v in r[c].items()) for c in cols))
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="sample_data,ml-100k")
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--explainers", default="base", help="comma-separated: base, packaged, or model dirs")
    ap.add_argument("--phase", default="valid", choices=("test", "valid"))
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "explain"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    bench_intent.PHASE = args.phase
    results = []
    for name in args.datasets.split(","):
        db, rows = held_out_users(name, args)
        for explainer in args.explainers.split(","):
            print(f"{name}: explaining with {explainer}", file=sys.stderr)
            results.append({"dataset": name, **score(db, rows, explainer, Path(args.work))})
    console = Console(width=250)
    console.print(table(results))
    for r in results:
        console.print(f"{r['dataset']} / {r['explainer']}:", *r["examples"], sep="\n  ")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
