"""What the LLM stages add (issue 8): the embedded model's interests and tags against non-LLM baselines, split-honest.

    python bench/bench_intent.py [--datasets sample_data,ml-100k] [--users 100] [--work bench/out/intent]
                                 [--model PATH.gguf] [--max-interests 3] [--json FILE]

Per dataset, leave-one-out by time (the last interaction is test): a seeded set of `--users` users with a test and
a valid item; their histories compressed for the test phase (train + valid visible, cut at the newest visible
interaction: no test item reaches a prompt); the embedded model mines interests and predicts tags for them. Tag
sources on the same users:

- llm: mine-interests (`--max-interests`, 3) + predict-tags (9 tags, at most 3 per interest, taken in turns; the
  embedded model, the project's rules, catalogue rules on);
- freq-categories: the user's most frequent leaf categories in the visible history;
- pop-categories: the globally most popular leaf categories in train;
- recent-titles: titles of the user's most recent visible engagements;
- oracle: titles of the user's held-out test items (the ceiling; it uses the answer).

`--phase valid` does the same one step earlier (histories up to the train items, scored on the valid item), for
choices such as β that must not look at test.

Columns: interest P/R/F1 against sample_data's ground truth (φ maps texts to leaves), HR@30 tag→category, Hit@50 and
Recall@50 of the items the tags alone retrieve (β = 0), tag quality rates (llm only: the rules' kept share; valid =
matches a catalogue item; bad reason), the prompt ceiling (llm only: share of users whose held-out category is
among the categories the compressed history names), LLM seconds and tokens per user; then TAR retrieval (a
users-batching tower with the tag losses at weight 0.1, trained on train, one model per dataset) at β ∈ {1, 0.9,
0.7, 0.5}: NDCG@10, Hit@10, CategoryDiversity@10, exploration share, ItemCoverage@10, Gini@10. Non-LLM sources are
also scored on all users. The LLM cache (`--work`/llm-cache) makes a rerun fast; the tower is trained once per
work folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.datasets import ml100k_dir  # noqa: E402
from recgpt_cli.catalogue import Catalogue  # noqa: E402
from recgpt_cli.compress import DEFAULT_MAX_TOKENS, SplitView, compress_users, default_reference_date  # noqa: E402
from recgpt_cli.evaluate import item_category_codes, next_item_categories, tag_category_hit_rate  # noqa: E402
from recgpt_cli.importers import import_jsonl, import_recbole  # noqa: E402
from recgpt_cli.intent import interest_prf, load_truth, reason_grounding, subset_metrics, tag_item_topk, tag_quality  # noqa: E402
from recgpt_cli.interests import InterestMiner  # noqa: E402
from recgpt_cli.llm.aligned import BASE_MODEL  # noqa: E402
from recgpt_cli.retrieve import Tag, rank_users  # noqa: E402
from recgpt_cli.splits import SplitData, load_split, make_split  # noqa: E402
from recgpt_cli.store import open_db  # noqa: E402
from recgpt_cli.tag_category import fit_tag_category  # noqa: E402
from recgpt_cli.tags import CONSTRAIN_MODES, DEFAULT_CONSTRAIN, EXPLORE, TagPredictor  # noqa: E402
from recgpt_cli.tokens import token_counter  # noqa: E402
from recgpt_cli.towers import TowerConfig, load_model, train_towers  # noqa: E402
from recgpt_cli.towers.config import load_preset  # noqa: E402

SAMPLE = ROOT / "sample_data"
PROTOCOL = "loo"
PHASE = "test"  # `--phase valid` (main) re-binds it: histories cut before the valid item, scored on it (choosing β)
BETAS = (1.0, 0.9, 0.7, 0.5)
N_BASELINE_TAGS = 9  # and the LLM keeps at most 9 tags
BENCH_INTERESTS = 4  # what the logs samples train (align.data.LogsConfig): the newest engagement's category + 3 by
# count (twenty-fourth session); before it 3 by count, and 8, and 5 by recency, measured no better
# users batching, history-only user tower, tag losses at 0.1 so that h_t means something (bench_retrieval's
# users-tag variant, one member)
# the tower `train-towers` serves (the default preset), on this bench's split
TOWER = {**asdict(load_preset("default")), "protocol": PROTOCOL}


def load(name: str, db: Path) -> None:
    if db.exists():
        return
    con = open_db(db)
    if name == "sample_data":
        import_jsonl(con, users=SAMPLE / "users.jsonl", items=SAMPLE / "items.jsonl",
                     behaviors=SAMPLE / "behaviors.jsonl")
    else:
        import_recbole(con, ml100k_dir())
    make_split(con, PROTOCOL)
    con.close()


def pick_users(split: SplitData, n: int, seed: int) -> list[str]:
    """A seeded set of users with a test and a valid item (so the test phase has a visible history)."""
    has = np.diff(split.user_items("test")[0]) > 0
    has &= np.diff(split.user_items("valid")[0]) > 0
    pool = np.flatnonzero(has)
    pick = np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False)
    return sorted(split.user_ids[i] for i in pick)


def scored_store(name: str, work: Path, *, read_only: bool = False) -> tuple[Any, list[str]]:
    """The dataset's store `work/<name>.duckdb` (imported and split once) and the 100 users this bench scores, whom
    every training set built from the store must leave out."""
    db = work / f"{name}.duckdb"
    load(name, db)
    con = open_db(db, read_only=read_only)
    return con, pick_users(load_split(con, PROTOCOL), 100, 0)


def record(user_id: str, split_id: str, tags: list[str], interests: list[str] | None = None) -> dict[str, Any]:
    ints = interests if interests is not None else tags
    return {"user_id": user_id, "split": PROTOCOL, "phase": PHASE, "split_id": split_id,
            "interests": [{"interest_id": f"I{i}", "interest": t} for i, t in enumerate(ints, 1)],
            "tags": [{"tag": t, "interest_id": "I1", "interest": ints[0] if ints else None, "reason": ""}
                     for t in tags]}


def baseline_records(con: Any, split: SplitData, users: list[str]) -> dict[str, list[dict[str, Any]]]:
    """freq-categories, pop-categories, recent-titles, oracle tag records, from data the test phase may see
    (the oracle alone reads the test items)."""
    info = dict((r[0], (r[1], r[2])) for r in con.execute("SELECT item_id, title, category_leaf FROM items").fetchall())
    visible = split.exclude_for(PHASE)  # train + valid
    pop = Counter(info[split.item_ids[v]][1] for v in split.train.item if info[split.item_ids[v]][1])
    pop_leaves = [c for c, _ in pop.most_common(N_BASELINE_TAGS)]
    ts: dict[tuple[int, int], np.datetime64] = {}
    for phase in ("train", "valid"):
        part = split.phase(phase)
        for u, v, t in zip(part.user, part.item, part.ts, strict=True):
            ts[(int(u), int(v))] = t
    test_ip, test_items = split.user_items(PHASE)
    sid = split.split_id
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in ("freq-categories", "pop-categories", "recent-titles",
                                                             "oracle")}
    for uid in users:
        u = split.user_index[uid]
        items = visible[1][visible[0][u]: visible[0][u + 1]]
        leaves = Counter(info[split.item_ids[v]][1] for v in items if info[split.item_ids[v]][1])
        freq = [c for c, _ in sorted(leaves.items(), key=lambda x: (-x[1], x[0]))][:N_BASELINE_TAGS]
        recent = sorted(items, key=lambda v: ts[(u, int(v))], reverse=True)[:N_BASELINE_TAGS]
        held = test_items[test_ip[u]: test_ip[u + 1]]
        out["freq-categories"].append(record(uid, sid, freq))
        out["pop-categories"].append(record(uid, sid, pop_leaves))
        out["recent-titles"].append(record(uid, sid, [info[split.item_ids[v]][0] for v in recent]))
        out["oracle"].append(record(uid, sid, [info[split.item_ids[v]][0] for v in held]))
    return out


def llm_records(db: Path, users: list[str], work: Path, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict]:
    """Split-aware compression → mine-interests → predict-tags with the embedded model (cached in `work`)."""
    import os

    os.environ["RECGPT_CACHE_DIR"] = str(work / "llm-cache")
    from recgpt_cli.llm.factory import make_llm

    con = open_db(db, read_only=True)
    compressed = [u.to_record() for u in compress_users(
        con, date=default_reference_date(con), max_tokens=args.history_tokens, user_ids=users,
        token_counter=token_counter(), view=SplitView(PROTOCOL, PHASE))]
    catalogue = Catalogue.from_db(con)
    # The most HR@30 a model can reach by naming only categories its prompt shows (the interest rules drop the
    # unsupported ones): the share of users whose next category (HR@30's truth) is among them.
    truth = next_item_categories(con, PROTOCOL, PHASE)
    con.close()
    ceiling = float(np.mean([truth.get(r["user_id"]) in r["categories"] for r in compressed]))
    # no --model: the raw embedded model (`base`), not the stages' default (the packaged alignment adapter)
    kwargs: dict[str, Any] = {"model": args.model or BASE_MODEL}
    miner = InterestMiner(make_llm(task="interest_mining", **kwargs), None, max_interests=args.max_interests)
    predictor = TagPredictor(make_llm(task="tag_prediction", **kwargs), None, n_tags=N_BASELINE_TAGS,
                             max_tags_per_call=3, catalogue=catalogue, constrain=args.constrain,
                             explore=getattr(args, "explore", EXPLORE))  # bench_explain, bench_incremental: none
    seconds = prompt = completion = 0.0
    out = []
    started = time.perf_counter()
    for i, rec in enumerate(compressed, 1):
        row, gens = miner(rec)
        row, more = predictor(row)
        for g in gens + more:  # what each answer cost when it was made (a rerun answers from the cache)
            if g.origin is not None:
                seconds += g.origin.latency_s
                prompt += g.origin.prompt_tokens
                completion += g.origin.completion_tokens
        out.append(row)
        if i % 10 == 0:
            print(f"  llm {i}/{len(compressed)} users, {time.perf_counter() - started:.0f}s", file=sys.stderr)
    cost = {"prompt_ceiling": ceiling, "llm_s_per_user": seconds / len(out), "prompt_tok_per_user": prompt / len(out),
            "completion_tok_per_user": completion / len(out)}
    return out, cost


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def tower(db: Path, work: Path, name: str) -> Any:
    out = work / f"{name}-default-tar"  # (`{name}-tar` held the 64-d tower of sessions before the 27th)
    if not (out / "model.pt").exists():
        con = open_db(db)
        train_towers(con, out, TowerConfig(**TOWER))  # type: ignore[arg-type]
        con.close()
    return load_model(out)


def evaluate_source(con: Any, split: SplitData, model: Any, rows: list[dict[str, Any]], path: Path,
                    catalogue: Catalogue, phi: Any, truth: dict[str, set[str]] | None, codes: np.ndarray
                    ) -> dict[str, Any]:
    users = np.array([split.user_index[r["user_id"]] for r in rows], dtype=np.int64)
    tags = {split.user_index[r["user_id"]]: [Tag(t["tag"], t.get("interest")) for t in r["tags"]] for r in rows}
    out: dict[str, Any] = {"users": len(rows)}
    if truth is not None:
        prf = interest_prf({r["user_id"]: [i["interest"] for i in r["interests"]] for r in rows}, truth, phi)
        out.update(interest_p=prf["precision"], interest_r=prf["recall"], interest_f1=prf["f1"])
    # HR@30 reads the interest tags only: N_BASELINE_TAGS of them, as many as each non-LLM source gives
    # (exploration tags, outside predict-tags' --n-tags, would buy hits with extra slots)
    focused = [{**r, "tags": [t for t in r["tags"] if not t.get("explore")]} for r in rows]
    hr_path = path if focused == rows else write_jsonl(path.with_suffix(".interest-tags.jsonl"), focused)
    out["hr@30"] = tag_category_hit_rate(con, hr_path, PROTOCOL, PHASE, phi=phi)["hr_tagcategory@30"]
    out["explore_tags"] = float(np.mean([sum(bool(t.get("explore")) for t in r["tags"]) for r in rows]))
    m = subset_metrics(tag_item_topk(model, split, tags, users, PHASE, 50), users, split, PHASE, (50,))
    out.update({"tagitem_hit@50": m["hit@50"], "tagitem_recall@50": m["recall@50"]})
    out.update(tag_quality(rows, catalogue))
    out.update(reason_grounding(rows))
    for beta in BETAS:
        topk = np.full((len(users), 10), -1, dtype=np.int64)
        pos = {int(u): r for r, u in enumerate(users)}
        for u, hits in rank_users(model, users, tags, beta=beta, k=10, exclude=split.exclude_for(PHASE), exact=True):
            topk[pos[u], : len(hits)] = [h.item for h in hits]
        m = subset_metrics(topk, users, split, PHASE, (10,), codes)
        out[f"beta={beta}"] = {c: m[c] for c in ("ndcg@10", "hit@10", "categorydiversity@10", "exploration@10",
                                                  "itemcoverage@10", "giniindex@10")}
    return out


def run_dataset(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"{name}.duckdb"
    load(name, db)
    con = open_db(db, read_only=True)
    split = load_split(con, PROTOCOL)
    users = pick_users(split, args.users, args.seed)
    if getattr(args, "subset", None):  # the first N of the same pick (bench_align scores a cheaper subset)
        users = users[: args.subset]
    con.close()
    print(f"{name}: {len(users)} users; training the tower", file=sys.stderr)
    t0 = time.perf_counter()
    model = tower(db, work, name)
    print(f"{name}: tower ready in {time.perf_counter() - t0:.0f}s; LLM stages", file=sys.stderr)
    llm_rows, cost = llm_records(db, users, work, args)
    con = open_db(db, read_only=True)
    catalogue = Catalogue.from_db(con, with_phi=False)
    phi, _ = fit_tag_category(con, holdout=0.0)
    codes = item_category_codes(con, split)
    truth = load_truth(SAMPLE / "truth_interests.jsonl") if name == "sample_data" else None
    sources = {"llm": llm_rows, **baseline_records(con, split, users)}
    all_users = [split.user_ids[u] for u in np.flatnonzero(np.diff(split.user_items(PHASE)[0]) > 0)]
    every = baseline_records(con, split, all_users)
    results = []
    for src, rows in [*sources.items(), *((f"{k} (all users)", v) for k, v in every.items() if k != "oracle")]:
        path = write_jsonl(work / f"{name}-{src.split()[0]}{'-all' if 'all' in src else ''}.jsonl", rows)
        row = {"dataset": name, "source": src, **evaluate_source(con, split, model, rows, path, catalogue, phi,
                                                                  truth, codes)}
        if src == "llm":
            row.update(cost, constrain=args.constrain)
        else:  # no rules ran: the kept share and reasons say nothing for a non-LLM source
            row.update(kept_share=float("nan"), bad_reason_share=float("nan"))  # (no history: grounding is nan)
        results.append(row)
    con.close()
    return results


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if v != v else f"{v:.4f}" if abs(v) < 10 else f"{v:,.0f}"
    return str(v)


def tables(results: list[dict[str, Any]]) -> list[Table]:
    a = Table(title=f"Intent: interests and tags (LOO {PHASE} phase, split-aware histories)")
    cols = ["dataset", "source", "users", "interest_p", "interest_r", "interest_f1", "hr@30", "tagitem_hit@50",
            "tagitem_recall@50", "kept_share", "valid_share", "bad_reason_share", "interest_reason_grounded",
            "tag_reason_grounded", "prompt_ceiling", "llm_s_per_user",
            "prompt_tok_per_user", "completion_tok_per_user"]
    for c in cols:
        a.add_column(c, justify="left" if c in ("dataset", "source") else "right")
    for r in results:
        a.add_row(*(fmt(r.get(c, float("nan"))) for c in cols))
    b = Table(title="TAR retrieval with those tags (same users; beta = 1 ignores tags)")
    mcols = ["ndcg@10", "hit@10", "categorydiversity@10", "exploration@10", "itemcoverage@10", "giniindex@10"]
    for c in ["dataset", "source", "beta", *mcols]:
        b.add_column(c, justify="left" if c in ("dataset", "source") else "right")
    for r in results:
        for beta in BETAS:
            if beta == 1.0 and r["source"] not in ("llm",) and "all users" not in r["source"]:
                continue
            m = r[f"beta={beta}"]
            b.add_row(r["dataset"], "(no tags)" if beta == 1.0 else r["source"], str(beta), *(fmt(m[c]) for c in mcols))
    return [a, b]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="sample_data,ml-100k")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--history-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                    help="compress budget per user (prompt size)")
    ap.add_argument("--model", default=None, help="GGUF file or aligned model dir (default: the raw embedded "
                    "model; the packaged alignment adapter is `--model recgpt_cli/llm/aligned`)")
    ap.add_argument("--max-interests", type=int, default=BENCH_INTERESTS, help="mine-interests --max-interests")
    ap.add_argument("--constrain", default=DEFAULT_CONSTRAIN, choices=CONSTRAIN_MODES,
                    help="predict-tags --constrain (constrained decoding of the tags)")
    ap.add_argument("--explore", type=int, default=EXPLORE, help="predict-tags --explore (exploration tags per "
                    "interest; HR@30 reads the other tags, as many as the non-LLM sources give)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "intent"))
    ap.add_argument("--phase", default="test", choices=("test", "valid"),
                    help="valid: histories cut before the valid item and scored on it (to choose β; never test)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    global PHASE
    PHASE = args.phase
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = [r for name in args.datasets.split(",") for r in run_dataset(name, args)]
    console = Console(width=250)
    for t in tables(results):
        console.print(t)
    console.print(f"total {time.perf_counter() - started:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
