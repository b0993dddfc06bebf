"""Classic baselines the paper's retrieval is measured against: Pop, ItemKNN, BPR (RecBole-like), EASE and DLAE.

- ``pop``: items by train interaction count (same list for everyone, history masked).
- ``itemknn``: cosine item–item similarity on the train user×item matrix with `shrink`, each item keeping its
  `k` most similar neighbours (RecBole's ``ComputeSimilarity``, defaults k=100, shrink=0); score(u, j) =
  Σ_i R[u,i]·W[i,j].
- ``bpr``: matrix factorisation with the BPR loss, one uniform negative per positive (never a train item of
  the user), Adam, xavier-normal init, 64 dims — RecBole's defaults — with early stopping on valid NDCG@10.
- ``ease``: EASE^R (Steck 2019), a closed-form item–item linear model with a zero diagonal:
  P = (XᵀX + λI)⁻¹, B_ij = −P_ij / P_jj, B_jj = 0; score(u) = X_u·B. λ is chosen on valid NDCG@10.
- ``dlae``: DLAE (Steck 2020, "Autoencoders that don't overfit towards the identity"), the closed form of a
  full-rank linear autoencoder trained under input dropout p: B = (G + Λ)⁻¹G with Λ = p/(1−p)·diag(G) + λI;
  the dropout, not a zero-diagonal constraint, keeps B from the identity. p and λ are chosen on valid NDCG@10.
  On ml-100k it is a little stronger than EASE (bench/README.md, issue 11).

Example::

    from recgpt_cli.baselines import fit_baseline, recommend
    scorer = fit_baseline("itemknn", split_data, seed=2020)
    topk = recommend(scorer, split_data, k=20)          # (n_users, 20), train+valid masked
    compute_metrics(topk, split_data, "test", ks=(10, 20))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from recgpt_cli.errors import BadInput
from recgpt_cli.io import jsonl_writer
from recgpt_cli.metrics import compute_metrics, full_rank_topk
from recgpt_cli.splits import SplitData

BASELINES: tuple[str, ...] = ("pop", "itemknn", "bpr", "ease", "dlae")
EASE_LAMBDAS: tuple[float, ...] = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
DLAE_DROPOUTS: tuple[float, ...] = (0.1, 0.25, 0.33, 0.5, 0.67)
DLAE_LAMBDAS: tuple[float, ...] = (10.0, 50.0, 100.0, 200.0, 500.0)


class Scorer(Protocol):
    name: str

    def score(self, users: np.ndarray) -> torch.Tensor:
        """Scores (len(users), n_items), higher = better."""
        ...


@dataclass
class PopScorer:
    counts: torch.Tensor  # train count per item
    name: str = "pop"

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.counts.expand(len(users), -1)


def _train_matrix(split_data: SplitData) -> torch.Tensor:
    indptr, indices = split_data.user_items("train")
    rows = np.repeat(np.arange(split_data.n_users), np.diff(indptr))
    idx = torch.from_numpy(np.stack([rows, indices]))
    vals = torch.ones(len(indices), dtype=torch.float32)
    shape = (split_data.n_users, split_data.n_items)
    return torch.sparse_coo_tensor(idx, vals, shape, check_invariants=False).coalesce()


@dataclass
class ItemKNNScorer:
    train: torch.Tensor  # sparse (n_users, n_items)
    w: torch.Tensor  # sparse (n_items, n_items): W[i, j] = sim of neighbour i to item j
    name: str = "itemknn"

    def score(self, users: np.ndarray) -> torch.Tensor:
        r = torch.index_select(self.train, 0, torch.from_numpy(np.asarray(users, dtype=np.int64))).to_dense()
        return torch.sparse.mm(self.w.t(), r.t()).t()  # (R_u · W)


def fit_itemknn(split_data: SplitData, k: int = 100, shrink: float = 0.0, block: int = 512) -> ItemKNNScorer:
    """Cosine item–item kNN as RecBole: sim = dot / (‖i‖‖j‖ + shrink + 1e-6), self-similarity 0, top-k per item."""
    r = _train_matrix(split_data)
    n = split_data.n_items
    norms = torch.sqrt(torch.sparse.sum(r, dim=0).to_dense())  # binary matrix: squared norm = count
    rt = r.t().coalesce()
    k = min(k, n)
    rows, cols, vals = [], [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        cols_dense = torch.index_select(r, 1, torch.arange(start, stop)).to_dense()  # (n_users, b)
        sim = torch.sparse.mm(rt, cols_dense)  # (n_items, b): dot of every item with items start..stop
        sim[torch.arange(start, stop), torch.arange(stop - start)] = 0.0
        sim = sim / (norms[:, None] * norms[None, start:stop] + shrink + 1e-6)
        top_v, top_i = torch.topk(sim, k, dim=0)  # neighbours of each column item
        keep = top_v != 0
        rows.append(top_i[keep])
        cols.append((torch.arange(start, stop).expand(k, -1))[keep])
        vals.append(top_v[keep])
    w = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals), (n, n),
                                check_invariants=False)
    return ItemKNNScorer(r, w.coalesce())


@dataclass
class BPRScorer:
    user_emb: torch.Tensor
    item_emb: torch.Tensor
    name: str = "bpr"
    history: list[dict[str, float]] = field(default_factory=list)

    def score(self, users: np.ndarray) -> torch.Tensor:
        return self.user_emb[torch.from_numpy(np.asarray(users, dtype=np.int64))] @ self.item_emb.T


def _sample_negatives(users: np.ndarray, pos_keys: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform negative per row, redrawn while it is one of the user's train items (RecBole's sampler)."""
    neg = rng.integers(0, n_items, size=len(users))
    bad = np.isin(users * n_items + neg, pos_keys)
    while bad.any():
        neg[bad] = rng.integers(0, n_items, size=int(bad.sum()))
        bad[bad] = np.isin(users[bad] * n_items + neg[bad], pos_keys)
    return neg


def fit_bpr(
    split_data: SplitData, seed: int = 2020, dim: int = 64, lr: float = 1e-3, batch_size: int = 2048,
    max_epochs: int = 300, patience: int = 10, on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> BPRScorer:
    """BPR-MF (RecBole defaults) with early stopping on valid NDCG@10: keeps the best epoch's embeddings."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    users, items = split_data.train.user, split_data.train.item
    if len(users) == 0:
        raise BadInput("the train split is empty", "import more behaviours before fitting a baseline")
    n_items = split_data.n_items
    pos_keys = np.unique(users * n_items + items)
    user_emb = torch.nn.Parameter(torch.empty(split_data.n_users, dim))
    item_emb = torch.nn.Parameter(torch.empty(n_items, dim))
    torch.nn.init.xavier_normal_(user_emb, generator=gen)
    torch.nn.init.xavier_normal_(item_emb, generator=gen)
    opt = torch.optim.Adam([user_emb, item_emb], lr=lr)
    exclude = split_data.exclude_for("valid")
    has_valid = len(split_data.valid) > 0
    best, best_state, bad_epochs = -1.0, None, 0
    history: list[dict[str, float]] = []
    for epoch in range(max_epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(users))
        neg = _sample_negatives(users[order], pos_keys, n_items, rng)
        total = 0.0
        for s in range(0, len(order), batch_size):
            b = order[s: s + batch_size]
            u = torch.from_numpy(users[b])
            pos, ng = torch.from_numpy(items[b]), torch.from_numpy(neg[s: s + batch_size])
            eu = user_emb[u]
            diff = (eu * item_emb[pos]).sum(1) - (eu * item_emb[ng]).sum(1)
            loss = -torch.nn.functional.logsigmoid(diff).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        row: dict[str, float] = {"epoch": epoch + 1, "loss": total / len(order), "seconds": time.perf_counter() - t0}
        if has_valid:
            with torch.no_grad():
                topk = full_rank_topk(user_emb @ item_emb.T, exclude, 10)
            row["valid_ndcg@10"] = compute_metrics(topk, split_data, "valid", ks=(10,))["ndcg@10"]
            if row["valid_ndcg@10"] > best:
                best, bad_epochs = row["valid_ndcg@10"], 0
                best_state = (user_emb.detach().clone(), item_emb.detach().clone())
            else:
                bad_epochs += 1
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if has_valid and bad_epochs >= patience:
            break
    u_final, i_final = best_state if best_state is not None else (user_emb.detach(), item_emb.detach())
    return BPRScorer(u_final, i_final, history=history)


@dataclass
class EASEScorer:
    train: torch.Tensor  # sparse (n_users, n_items)
    b: torch.Tensor  # dense (n_items, n_items); zero diagonal for EASE, not for DLAE (evaluation masks history)
    lam: float
    name: str = "ease"
    history: list[dict[str, float]] = field(default_factory=list)  # valid NDCG@10 per λ tried

    def score(self, users: np.ndarray) -> torch.Tensor:
        r = torch.index_select(self.train, 0, torch.from_numpy(np.asarray(users, dtype=np.int64))).to_dense()
        return r @ self.b


def ease_weights(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """EASE's closed form from the item Gram matrix G = XᵀX: B = I − P·diag(1/diag(P)) with P = (G + λI)⁻¹,
    i.e. B_ij = −P_ij / P_jj off the diagonal and B_jj = 0 (Steck 2019, eq. 8). float64 for the inverse."""
    p = torch.linalg.inv(gram.double() + lam * torch.eye(gram.shape[0], dtype=torch.float64))
    b = -p / torch.diagonal(p)[None, :]
    b.fill_diagonal_(0.0)
    return b.float()


def dlae_weights(gram: torch.Tensor, p: float, lam: float) -> torch.Tensor:
    """DLAE's closed form from G = XᵀX (Steck 2020): B = (G + Λ)⁻¹G = I − (G + Λ)⁻¹Λ, Λ = p/(1−p)·diag(G) + λI
    (Λ diagonal, so (G + Λ)⁻¹Λ scales the inverse's columns). float64 for the inverse."""
    g = gram.double()
    reg = p / (1.0 - p) * torch.diagonal(g) + lam
    inv = torch.linalg.inv(g + torch.diag(reg))
    return (torch.eye(g.shape[0], dtype=torch.float64) - inv * reg[None, :]).float()


@dataclass
class DLAEScorer(EASEScorer):
    p: float = 0.5  # the input dropout DLAE is the expectation of
    name: str = "dlae"


def _best_on_valid(split_data: SplitData, x: torch.Tensor,
                   candidates: Iterable[tuple[EASEScorer, dict[str, float]]]) -> EASEScorer:
    """The candidate with the best valid NDCG@10 (train masked); every candidate's score goes to its history.
    `candidates` is lazy, so only the best and the current item-item matrix are held."""
    best, best_ndcg, history = None, -1.0, []
    exclude = split_data.exclude_for("valid")
    for scorer, param in candidates:
        ndcg = compute_metrics(full_rank_topk(x @ scorer.b, exclude, 10), split_data, "valid", ks=(10,))["ndcg@10"]
        history.append({**param, "valid_ndcg@10": ndcg})
        if ndcg > best_ndcg:
            best, best_ndcg = scorer, ndcg
    assert best is not None, "no candidate"
    best.history = history
    return best


def _train_gram(split_data: SplitData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sparse train matrix, its dense form, the item Gram matrix), refusing an empty train split."""
    r = _train_matrix(split_data)
    if r._nnz() == 0:
        raise BadInput("the train split is empty", "import more behaviours before fitting a baseline")
    x = r.to_dense()
    return r, x, x.T @ x


def fit_ease(split_data: SplitData, lam: float | None = None, lambdas: tuple[float, ...] = EASE_LAMBDAS) -> EASEScorer:
    """EASE on the train matrix; `lam` None = the λ of `lambdas` with the best valid NDCG@10 (train masked)."""
    r, x, gram = _train_gram(split_data)
    if lam is not None or len(split_data.valid) == 0:
        chosen = lam if lam is not None else lambdas[0]
        return EASEScorer(r, ease_weights(gram, chosen), chosen)
    return _best_on_valid(split_data, x, ((EASEScorer(r, ease_weights(gram, c), c), {"lambda": c}) for c in lambdas))


def fit_dlae(split_data: SplitData, p: float | None = None, lam: float | None = None,
             dropouts: tuple[float, ...] = DLAE_DROPOUTS, lambdas: tuple[float, ...] = DLAE_LAMBDAS) -> DLAEScorer:
    """DLAE on the train matrix; p / lam None = chosen with the other over the grid on valid NDCG@10."""
    if p is not None and not 0.0 <= p < 1.0:
        raise BadInput(f"DLAE dropout p = {p}: must be in [0, 1)")
    r, x, gram = _train_gram(split_data)
    grid = [(pp, ll) for pp in ((p,) if p is not None else dropouts) for ll in ((lam,) if lam is not None else lambdas)]
    if len(grid) == 1 or len(split_data.valid) == 0:
        pp, ll = grid[0]
        return DLAEScorer(r, dlae_weights(gram, pp, ll), ll, p=pp)
    best = _best_on_valid(split_data, x, ((DLAEScorer(r, dlae_weights(gram, pp, ll), ll, p=pp), {"p": pp, "lambda": ll})
                                          for pp, ll in grid))
    assert isinstance(best, DLAEScorer)
    return best


def fit_baseline(name: str, split_data: SplitData, seed: int = 2020, **options: Any) -> Scorer:
    """Fit baseline `name` (pop | itemknn | bpr | ease | dlae) on the train split. Options go to fit_itemknn /
    fit_bpr / fit_ease / fit_dlae."""
    if name == "pop":
        return PopScorer(torch.from_numpy(split_data.item_train_counts().astype(np.float32))[None, :])
    if name == "itemknn":
        return fit_itemknn(split_data, **options)
    if name == "bpr":
        return fit_bpr(split_data, seed=seed, **options)
    if name == "ease":
        return fit_ease(split_data, **options)
    if name == "dlae":
        return fit_dlae(split_data, **options)
    raise BadInput(f"unknown baseline {name!r}", f"use one of: {', '.join(BASELINES)}")


def recommend(scorer: Scorer, split_data: SplitData, k: int = 20, phase: str = "test", batch: int = 1024) -> np.ndarray:
    """Top-k items for every user (row = user index), masking what the user had before `phase`
    (train for valid; train+valid for test). -1 pads rows with fewer than k candidates."""
    exclude = split_data.exclude_for(phase)
    out = np.empty((split_data.n_users, min(k, split_data.n_items)), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, split_data.n_users, batch):
            users = np.arange(s, min(s + batch, split_data.n_users))
            out[users] = full_rank_topk(scorer.score(users), exclude, k, rows=users)
    return out


def write_recs(out: str | Path, topk: np.ndarray, split_data: SplitData) -> int:
    """Write a top-k matrix as recommendation JSONL {"user_id","item_id","rank"}; returns rows written."""
    n = 0
    with jsonl_writer(out) as writer:
        for u in range(topk.shape[0]):
            for rank, v in enumerate(topk[u][topk[u] >= 0], start=1):
                writer.write({"user_id": split_data.user_ids[u], "item_id": split_data.item_ids[int(v)], "rank": rank})
                n += 1
    return n
