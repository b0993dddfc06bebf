"""hnswlib vs exact inner-product search over synthetic item vectors (the `retrieve` index, §2.3.3).

    python bench/bench_hnsw.py [--items 100000] [--dim 64] [--queries 1000] [--k 100]

Item vectors are clustered unit vectors (like trained tower outputs: items of a category sit together), queries
are mixtures of a few clusters (like beta-fused user/tag vectors). Recall@k = |approx top-k ∩ exact top-k| / k.
Targets (issue 4): recall@100 >= 0.99 at >= 10x the exact search's queries/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recgpt_cli.retrieve import hnsw_index  # noqa: E402


def synthetic(n: int, dim: int, n_queries: int, kind: str = "lowrank", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`lowrank`: intrinsic dimension 16 linearly embedded in `dim` plus a little noise, as trained tower outputs
    are; `clustered`: 256 Gaussian blobs in full `dim`, a harder, near-isotropic case."""
    rng = np.random.default_rng(seed)
    if kind == "lowrank":
        w = rng.standard_normal((16, dim))
        items = rng.standard_normal((n, 16)) @ w + 0.05 * rng.standard_normal((n, dim))
        queries = rng.standard_normal((n_queries, 16)) @ w
        items /= np.linalg.norm(items, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        return items.astype(np.float32), queries.astype(np.float32)
    centers = rng.standard_normal((256, dim))
    items = centers[rng.integers(0, 256, n)] + 0.6 * rng.standard_normal((n, dim))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    mix = rng.dirichlet(np.ones(3), n_queries)
    queries = np.einsum("qc,qcd->qd", mix, centers[rng.integers(0, 256, (n_queries, 3))])
    queries += 0.3 * rng.standard_normal(queries.shape)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return items.astype(np.float32), queries.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--M", type=int, default=32)
    ap.add_argument("--efs", default="100,200,400")
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", choices=("lowrank", "clustered"), default="lowrank")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    items, queries = synthetic(args.items, args.dim, args.queries, args.data)
    h_v, q = torch.from_numpy(items), torch.from_numpy(queries)
    t0 = time.perf_counter()
    exact = (q @ h_v.T).topk(args.k, dim=1).indices.numpy()
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = hnsw_index(items, m=args.M, ef_construction=args.ef_construction)
    build_s = time.perf_counter() - t0
    index.set_num_threads(args.threads)
    table = Table(title=f"{args.data}: {args.items:,} items x dim {args.dim}, {args.queries:,} queries, top-{args.k}, "
                        f"{args.threads} thread(s); hnsw build {build_s:.1f}s (M={args.M}, efC={args.ef_construction})")
    for col in ("search", "ef", "recall@k", "queries/s", "speed-up"):
        table.add_column(col, justify="right")
    table.add_row("exact (torch matmul)", "-", "1.0000", f"{args.queries / exact_s:,.0f}", "1.0x")
    for ef in [int(e) for e in args.efs.split(",")]:
        index.set_ef(max(ef, args.k))
        t0 = time.perf_counter()
        labels, _ = index.knn_query(queries, k=args.k)
        s = time.perf_counter() - t0
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(labels, exact, strict=True)])
        table.add_row("hnswlib", str(ef), f"{recall:.4f}", f"{args.queries / s:,.0f}", f"{exact_s / s:.1f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
