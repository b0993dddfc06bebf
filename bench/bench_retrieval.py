"""TAR vs classic baselines on ml-100k, full ranking, test phase, on a stored split (RecBole's default or
leave-one-out by time).

    python bench/bench_retrieval.py [--protocol recbole|loo] [--variants default,paper] [--reference] [--work DIR]

Variants are the tower presets (presets/*.toml, the files `recgpt train-towers --preset` reads) plus a few named
overrides (VARIANTS). Tags for an ml-100k user (the LLM stage's stand-in): the genres of their TRAIN movies, the 3
most frequent ones, each genre name being one tag. TAR beta=1 is the plain two-tower (user tower only); "best beta"
is picked on the VALIDATION split and reported on test (only for variants that train the tag tower).
`--reference` adds a plain SASRec trained to convergence on the same split (bench/sasrec_reference.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.datasets import ml100k_dir  # noqa: E402
from recgpt_cli.metrics import compute_metrics  # noqa: E402
from recgpt_cli.retrieve import Tag, rank_users  # noqa: E402
from recgpt_cli.splits import SplitData, load_split, make_split  # noqa: E402
from recgpt_cli.store import open_db  # noqa: E402
from recgpt_cli.towers import TowerConfig, load_model, load_preset, train_towers  # noqa: E402

COLUMNS = ("ndcg@10", "recall@10", "hit@10", "itemcoverage@10", "giniindex@10", "averagepopularity@10")
# name -> (preset, overrides of its fields); the split protocol always comes from --protocol
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "paper": ("paper", {}),  # §2.3 exactly: pairs, in-batch + 256 random negatives, mean pooling
    "full": ("paper", {"n_negatives": "all", "in_batch": False}),  # the same with a full softmax
    "default": ("default", {}),  # the best single model on validation (the pooled user tower, 512-d ids)
    "default-e3": ("default", {"ensemble": 3}),  # three default members served as one model
    "variational": ("variational", {}),  # the variational (RecVAE) user tower: the flattest accurate model
    "sequential": ("default-loo", {}),  # the sequential user tower (the loo default)
    # the issue-4 ensembles, as overrides of the default preset
    "users-e3": ("default", {"history_dropout": 0.3, "loss_weighting": "user", "ensemble": 3}),
    "users-pair-e3": ("default", {"ensemble": 3}),
}


def variant_config(name: str, protocol: str) -> TowerConfig:
    """The TowerConfig of a variant: a VARIANTS entry, or any preset name / .toml file as it is."""
    preset, overrides = VARIANTS.get(name, (name, {}))
    return replace(load_preset(preset), protocol=protocol, **overrides)  # type: ignore[arg-type]


def load_ml100k(db: Path) -> None:
    """Import ml-100k with the project importer when present, else a direct load of the atomic files."""
    try:
        from recgpt_cli.importers import import_recbole  # type: ignore[attr-defined]
    except ImportError:
        import_recbole = None
    if import_recbole is not None:
        con = open_db(db)
        import_recbole(con, ml100k_dir())
        con.close()
        return
    src = ml100k_dir()
    con = open_db(db)
    con.execute(f"""INSERT INTO items SELECT "item_id:token", "movie_title:token_seq",
        string_split("class:token_seq", ' '), string_split("class:token_seq", ' ')[-1], NULL, NULL, NULL, NULL
        FROM read_csv('{src / "ml-100k.item"}', delim='\t', header=true, all_varchar=true, quote='')""")
    con.execute(f"""INSERT INTO behaviors SELECT "user_id:token", "item_id:token", NULL, 'rating',
        to_timestamp(CAST("timestamp:float" AS DOUBLE))::TIMESTAMP, CAST("rating:float" AS DOUBLE)
        FROM read_csv('{src / "ml-100k.inter"}', delim='\t', header=true, all_varchar=true)""")
    con.execute("INSERT INTO users SELECT DISTINCT user_id, '{}' FROM behaviors")
    con.close()


def genre_tags(con, split: SplitData, n_tags: int = 3) -> dict[int, list[Tag]]:  # type: ignore[no-untyped-def]
    """Each user's top-`n_tags` genres over their TRAIN movies (our stand-in for LLM-predicted tags)."""
    genres = dict(con.execute("SELECT item_id, category_path FROM items").fetchall())
    indptr, items = split.user_items("train")
    out = {}
    for u in range(split.n_users):
        c = Counter(g for v in items[indptr[u] : indptr[u + 1]] for g in (genres.get(split.item_ids[v]) or []))
        out[u] = [Tag(g, f"genre:{g}") for g, _ in c.most_common(n_tags)]
    return out


def tar_topk(model, split: SplitData, tags: dict[int, list[Tag]], beta: float, phase: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Top-10 per user from `retrieve`'s own merge (exact search), masking what evaluation masks for `phase`."""
    topk = np.full((split.n_users, 10), -1, dtype=np.int64)
    users = np.arange(split.n_users)
    for u, hits in rank_users(model, users, tags, beta=beta, k=10, exclude=split.exclude_for(phase), exact=True):
        topk[u, : len(hits)] = [h.item for h in hits]
    return topk


def score_row(name: str, split: SplitData, test: np.ndarray, valid: np.ndarray, seconds: float,
              epochs: int = 0) -> dict[str, object]:
    """Test metrics of top-10 lists, plus validation NDCG@10 (what model and beta choices may look at)."""
    m = compute_metrics(test, split, phase="test", ks=(10,))
    v = compute_metrics(valid, split, phase="valid", ks=(10,))["ndcg@10"]
    return {"model": name, "valid ndcg@10": v, **{c: m[c] for c in COLUMNS}, "train_s": seconds,
            "s/epoch": seconds / epochs if epochs else float("nan"), "epochs": epochs}


def tar_rows(con, split: SplitData, work: Path, variant: str, args: argparse.Namespace,  # type: ignore[no-untyped-def]
             tags: dict[int, list[Tag]], console: Console) -> list[dict[str, object]]:
    cfg = variant_config(variant, args.protocol)
    cfg.epochs = args.epochs or cfg.epochs
    cfg.patience = args.patience or cfg.patience
    out = work / f"tar-{args.protocol}-{variant}"
    report = train_towers(con, out, cfg, console=console)
    model = load_model(out)
    rows = []
    if cfg.ensemble > 1:  # the first member alone: what the ensemble adds over one model (seed 0)
        single = load_model(out / "member-0")
        first = report.members[0]
        rows.append(score_row(f"TAR {variant}: member 0 alone", split, tar_topk(single, split, tags, 1.0, "test"),
                              tar_topk(single, split, tags, 1.0, "valid"), first.seconds, first.epochs_run))
    betas = [float(b) for b in args.betas.split(",")] if cfg.tag_weight > 0 else [1.0]  # no tag tower: beta 1
    valid_topk = {b: tar_topk(model, split, tags, b, "valid") for b in betas}
    best_beta = max(valid_topk, key=lambda b: compute_metrics(valid_topk[b], split, "valid", ks=(10,))["ndcg@10"])
    for beta in sorted({1.0, best_beta}, reverse=True):
        label = f"TAR {variant} β={beta:g}" + (" (best on valid)" if beta == best_beta and len(betas) > 1 else "")
        valid_b = valid_topk.get(beta)
        rows.append(score_row(label, split, tar_topk(model, split, tags, beta, "test"),
                              valid_b if valid_b is not None else tar_topk(model, split, tags, beta, "valid"),
                              report.seconds, report.epochs_run))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", default="recbole", choices=("recbole", "loo"))
    ap.add_argument("--epochs", type=int, default=0, help="0 = the variant's own")
    ap.add_argument("--patience", type=int, default=0, help="0 = the variant's own")
    ap.add_argument("--variants", default="paper,default")
    ap.add_argument("--betas", default="1,0.9,0.8,0.7,0.5")
    ap.add_argument("--work", default="")
    ap.add_argument("--baselines", default="pop,itemknn,bpr,ease,dlae")
    ap.add_argument("--reference", action="store_true", help="add a plain SASRec trained to convergence")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # the bench box is shared: one busy thread beats two starved ones
    console = Console(stderr=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_retrieval_"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "ml100k.duckdb"
    if not db.exists():
        load_ml100k(db)
    con = open_db(db)
    make_split(con, args.protocol)
    split = load_split(con, args.protocol)
    rows: list[dict[str, object]] = []
    from recgpt_cli.baselines import fit_baseline, recommend

    for name in [b for b in args.baselines.split(",") if b]:
        t0 = time.perf_counter()
        scorer = fit_baseline(name, split, seed=2020)
        seconds = time.perf_counter() - t0
        label = name + (f" (λ={scorer.lam:g}{f', p={scorer.p:g}' if hasattr(scorer, 'p') else ''} on valid)"
                        if hasattr(scorer, "lam") else "")
        epochs = len(getattr(scorer, "history", [])) if name == "bpr" else 0
        rows.append(score_row(label, split, recommend(scorer, split, k=10, phase="test"),
                              recommend(scorer, split, k=10, phase="valid"), seconds, epochs))
        console.print(f"{label}: done in {seconds:.1f}s")
    if args.reference:
        from bench.sasrec_reference import train_reference

        ref = train_reference(split)
        rows.append(score_row("SASRec reference (to convergence)", split, ref.test_topk, ref.valid_topk, ref.seconds,
                              ref.epochs))
    tags = genre_tags(con, split)
    for variant in [v for v in args.variants.split(",") if v]:
        rows += tar_rows(con, split, work, variant, args, tags, console)
    table = Table(title=f"ml-100k, {args.protocol} split, full ranking, test (valid NDCG@10 = what choices saw)")
    for c in ("model", "valid ndcg@10", *COLUMNS, "train_s", "s/epoch", "epochs"):
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        cells = [f"{float(r[c]):.4f}" for c in ("valid ndcg@10", *COLUMNS)]  # type: ignore[arg-type]
        table.add_row(str(r["model"]), *cells, f"{float(r['train_s']):.1f}",  # type: ignore[arg-type]
                      f"{float(r['s/epoch']):.2f}", str(r["epochs"]))  # type: ignore[arg-type]
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
