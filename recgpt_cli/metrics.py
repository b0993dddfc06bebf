"""Top-K metrics with RecBole's definitions (recbole/evaluator/metrics.py), full ranking, vectorised numpy.

Accuracy: Recall, NDCG, Hit, MRR, Precision — averaged over users that have at least one positive in the
evaluated phase (others are excluded, as RecBole does). Beyond accuracy (§3, Figure 1 of the paper):
ItemCoverage, AveragePopularity (popularity = train interaction count), GiniIndex, TailPercentage (RecBole's
default ``tail_ratio`` 0.1: the 10% least popular items seen in train, plus — our addition — items never
seen in train), category diversity per user, and exposure share by item-popularity decile. Plus the
paper's HR@30 of tag→category predictions (§2.2.2).

Differences from RecBole, on purpose: ItemCoverage and Gini divide by the real number of items (RecBole's
``num_items`` counts its padding item, e.g. 1683 for ml-100k's 1682 — a 0.06% difference); a top-K row may
be padded with -1 when a system returns fewer than K items (a miss, popularity 0, not an exposure).

Example::

    from recgpt_cli.metrics import full_rank_topk, compute_metrics
    scores = model_scores                                   # (n_users, n_items), rows = data.user_ids order
    topk = full_rank_topk(scores, data.exclude_for("test"), k=20)   # masks train+valid items
    compute_metrics(topk, data, phase="test", ks=(10, 20))  # {"ndcg@10": ..., "recall@20": ..., ...}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from recgpt_cli.splits import SplitData

ACCURACY = ("recall", "ndcg", "hit", "mrr", "precision")
BEYOND = ("itemcoverage", "averagepopularity", "giniindex", "tailpercentage")
TAIL_RATIO = 0.1  # RecBole's default `tail_ratio`


def full_rank_topk(
    scores: np.ndarray | torch.Tensor,
    exclude_csr: tuple[np.ndarray, np.ndarray] | None,
    k: int,
    rows: np.ndarray | None = None,
    batch_rows: int = 4096,
) -> np.ndarray:
    """Top-`k` item indices per row of `scores` (n_rows, n_items), best first, after masking excluded items.

    `exclude_csr` = (indptr, indices) per user (e.g. SplitData.exclude_for("test")); `rows[i]` is the user index
    of score row i (default: row i is user i). Masked items get -inf; slots that would need a masked item
    (fewer than k candidates) are -1."""
    import torch

    n_rows, n_items = int(scores.shape[0]), int(scores.shape[1])
    k = min(k, n_items)
    rows = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty((n_rows, k), dtype=np.int64)
    for start in range(0, n_rows, batch_rows):
        stop = min(start + batch_rows, n_rows)
        if isinstance(scores, torch.Tensor):
            block = scores[start:stop].detach().to("cpu", torch.float32).clone()
        else:
            block = torch.tensor(np.asarray(scores[start:stop], dtype=np.float32))
        if exclude_csr is not None:
            r, c = _csr_rows(exclude_csr, rows[start:stop])
            block[torch.from_numpy(r), torch.from_numpy(c)] = float("-inf")
        vals, idx = torch.topk(block, k, dim=1)
        top = idx.numpy().astype(np.int64)
        top[torch.isneginf(vals).numpy()] = -1
        out[start:stop] = top
    return out


def _csr_rows(csr: tuple[np.ndarray, np.ndarray], users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row position, item) pairs of the CSR entries of `users`, vectorised."""
    indptr, indices = csr
    lens = indptr[users + 1] - indptr[users]
    total = int(lens.sum())
    row = np.repeat(np.arange(len(users)), lens)
    offsets = np.repeat(indptr[users] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return row.astype(np.int64), indices[offsets + np.arange(total)].astype(np.int64)


def hit_matrix(topk: np.ndarray, pos_csr: tuple[np.ndarray, np.ndarray], users: np.ndarray) -> np.ndarray:
    """Boolean (n, K): topk[i, j] is among user users[i]'s positives (pos_csr = (indptr, sorted indices))."""
    r, c = _csr_rows(pos_csr, np.asarray(users, dtype=np.int64))
    width = int(max(topk.max(initial=0), c.max(initial=0))) + 2  # encode (row, item) as one int64 key
    pos_keys = r * width + c
    keys = np.arange(topk.shape[0])[:, None] * width + np.where(topk >= 0, topk, width - 1)
    return np.isin(keys, pos_keys)


def ranking_metrics(hits: np.ndarray, n_pos: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """Recall/NDCG/Hit/MRR/Precision@k from a boolean hit matrix (n_users, K) and positives per user.

    Users with n_pos == 0 are excluded. Definitions follow RecBole (NDCG's ideal DCG uses min(|R(u)|, k))."""
    keep = n_pos > 0
    hits, n_pos = hits[keep].astype(np.float64), n_pos[keep].astype(np.float64)
    big_k = hits.shape[1]
    out: dict[str, float] = {}
    if hits.shape[0] == 0:
        return {f"{m}@{k}": 0.0 for k in ks for m in ACCURACY}
    discount = 1.0 / np.log2(np.arange(2, big_k + 2))
    dcg = np.cumsum(hits * discount, axis=1)
    idcg_table = np.cumsum(discount)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), big_k)
    cum_hits = np.cumsum(hits, axis=1)
    for k in ks:
        if k > big_k:
            raise ValueError(f"k={k} but the top-K lists have only {big_k} columns")
        h = cum_hits[:, k - 1]
        idcg = idcg_table[np.minimum(n_pos, k).astype(np.int64) - 1]
        out[f"recall@{k}"] = float(np.mean(h / n_pos))
        out[f"ndcg@{k}"] = float(np.mean(dcg[:, k - 1] / idcg))
        out[f"hit@{k}"] = float(np.mean(h > 0))
        out[f"mrr@{k}"] = float(np.mean(np.where(first < k, 1.0 / (first + 1), 0.0)))
        out[f"precision@{k}"] = float(np.mean(h / k))
    return out


def tail_items(item_counts: np.ndarray, tail_ratio: float = TAIL_RATIO) -> np.ndarray:
    """Boolean mask of long-tail items (RecBole TailPercentage): if tail_ratio > 1, items with train count
    <= tail_ratio; else the max(int(n_seen * ratio), 1) least popular items seen in train (ties by index).
    Items never seen in train are tail too (RecBole leaves them out of its count table)."""
    mask = item_counts == 0
    if tail_ratio > 1:
        return mask | (item_counts <= tail_ratio)
    seen = np.flatnonzero(item_counts > 0)
    cut = max(int(len(seen) * tail_ratio), 1)
    order = seen[np.lexsort((seen, item_counts[seen]))][:cut]
    mask[order] = True
    return mask


def item_metrics(
    topk: np.ndarray, n_items: int, item_counts: np.ndarray, ks: Iterable[int], tail_ratio: float = TAIL_RATIO
) -> dict[str, float]:
    """ItemCoverage, AveragePopularity, GiniIndex, TailPercentage @k over the given users' top-K rows."""
    out: dict[str, float] = {}
    tail = tail_items(item_counts, tail_ratio)
    valid = topk >= 0
    safe = np.where(valid, topk, 0)
    pop = np.where(valid, item_counts[safe], 0).astype(np.float64)
    is_tail = np.where(valid, tail[safe], False).astype(np.float64)
    n = topk.shape[0]
    for k in ks:
        sub = topk[:, :k]
        rec = sub[sub >= 0]
        counts = np.bincount(rec, minlength=n_items) if n else np.zeros(n_items, dtype=np.int64)
        out[f"itemcoverage@{k}"] = float(np.count_nonzero(counts) / n_items)
        out[f"averagepopularity@{k}"] = float(pop[:, :k].sum(axis=1).mean() / k) if n else 0.0
        out[f"giniindex@{k}"] = gini_index(counts)
        out[f"tailpercentage@{k}"] = float(is_tail[:, :k].sum(axis=1).mean() / k) if n else 0.0
    return out


def gini_index(exposure_counts: np.ndarray) -> float:
    """RecBole's GiniIndex of per-item exposure counts (zeros for items never recommended included):
    sum_i (2i - n - 1) P_(i) / (n * sum P), with P sorted non-decreasing, i = 1..n."""
    p = np.sort(np.asarray(exposure_counts, dtype=np.float64))
    n, total = len(p), p.sum()
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * p) / (n * total))


def category_diversity(topk: np.ndarray, item_category: np.ndarray, k: int) -> np.ndarray:
    """Per user: distinct leaf categories among the top-k / k. `item_category` = int code per item (-1 unknown,
    counted as its own category per item)."""
    sub = topk[:, :k]
    cats = np.where(sub >= 0, item_category[np.where(sub >= 0, sub, 0)], -2)
    # unknown category: distinct per item, so give it a unique negative code
    cats = np.where(cats == -1, -3 - np.where(sub >= 0, sub, 0), cats)
    srt = np.sort(cats, axis=1)
    distinct = 1 + np.count_nonzero(np.diff(srt, axis=1), axis=1) - (srt == -2).any(axis=1)
    return distinct / k


def popularity_deciles(item_counts: np.ndarray) -> np.ndarray:
    """Decile 0..9 of each item by train popularity, 0 = most popular tenth (ties by item index)."""
    n = len(item_counts)
    order = np.lexsort((np.arange(n), -item_counts))
    dec = np.empty(n, dtype=np.int64)
    dec[order] = (np.arange(n) * 10) // max(n, 1)
    return dec


def exposure_by_decile(topk: np.ndarray, item_counts: np.ndarray, k: int) -> list[float]:
    """Share of all top-k slots that go to each item-popularity decile (the paper's Figure 1 PVR by group)."""
    sub = topk[:, :k]
    rec = sub[sub >= 0]
    if rec.size == 0:
        return [0.0] * 10
    share = np.bincount(popularity_deciles(item_counts)[rec], minlength=10) / rec.size
    return [float(x) for x in share]


def hitrate_by_decile(topk: np.ndarray, hits: np.ndarray, item_counts: np.ndarray, k: int) -> list[float]:
    """Per decile: hits / exposures among top-k slots (a CTR analogue, Figure 1); 0 where never exposed."""
    sub, h = topk[:, :k], hits[:, :k]
    valid = sub >= 0
    dec = popularity_deciles(item_counts)[sub[valid]]
    shown = np.bincount(dec, minlength=10)
    hit = np.bincount(dec, weights=h[valid].astype(np.float64), minlength=10)
    return [float(x) for x in np.divide(hit, shown, out=np.zeros(10), where=shown > 0)]


def compute_metrics(
    topk: np.ndarray,
    split_data: SplitData,
    phase: str = "test",
    ks: Sequence[int] = (10, 20),
    item_category: np.ndarray | None = None,
    tail_ratio: float = TAIL_RATIO,
    with_deciles: bool = False,
) -> dict[str, Any]:
    """Every metric for top-K lists of ALL users (row i = split_data user i; pad with -1), on `phase`.

    Returns lower-case keys ("ndcg@10", "itemcoverage@20", ...), "n_users" (users evaluated = those with a
    positive in `phase`), "categorydiversity@k" when `item_category` is given, and with `with_deciles`
    "exposure_decile@k" / "hitrate_decile@k" lists of 10 floats (decile 0 = most popular items)."""
    if topk.shape[0] != split_data.n_users:
        raise ValueError(f"topk has {topk.shape[0]} rows, the split has {split_data.n_users} users")
    pos_csr = split_data.user_items(phase)
    n_pos = np.diff(pos_csr[0])
    users = np.flatnonzero(n_pos > 0)
    sub = topk[users]
    hits = hit_matrix(sub, pos_csr, users)
    counts = split_data.item_train_counts()
    out: dict[str, Any] = {"n_users": int(len(users))}
    out.update(ranking_metrics(hits, n_pos[users], ks))
    out.update(item_metrics(sub, split_data.n_items, counts, ks, tail_ratio))
    for k in ks:
        if item_category is not None:
            div = category_diversity(sub, item_category, k)
            out[f"categorydiversity@{k}"] = float(div.mean()) if len(users) else 0.0
        if with_deciles:
            out[f"exposure_decile@{k}"] = exposure_by_decile(sub, counts, k)
            out[f"hitrate_decile@{k}"] = hitrate_by_decile(sub, hits, counts, k)
    return out


def hr_tag_category(pred_tag_categories: Mapping[str, set[str]], next_item_category: Mapping[str, str]) -> float:
    """HR@30 of §2.2.2: share of users whose actual next item's category is among the categories φ gives
    their (30) predicted tags. Users = those with a ground-truth next item; no prediction counts as a miss."""
    if not next_item_category:
        return 0.0
    hit = sum(1 for u, cat in next_item_category.items() if cat in pred_tag_categories.get(u, set()))
    return hit / len(next_item_category)


def set_prf(pred: Mapping[str, set[str]], truth: Mapping[str, set[str]]) -> dict[str, float]:
    """Macro precision / recall / F1 of predicted sets against true sets, over the users in `truth` with a
    non-empty true set (a user with no prediction scores 0 on all three). Interest mining vs ground truth."""
    users = [u for u, t in truth.items() if t]
    if not users:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "users": 0}
    p = np.zeros(len(users))
    r = np.zeros(len(users))
    for i, u in enumerate(users):
        got, want = pred.get(u, set()), truth[u]
        hit = len(got & want)
        p[i] = hit / len(got) if got else 0.0
        r[i] = hit / len(want)
    f = np.divide(2 * p * r, p + r, out=np.zeros(len(users)), where=(p + r) > 0)
    return {"precision": float(p.mean()), "recall": float(r.mean()), "f1": float(f.mean()), "users": len(users)}


def exploration_share(topk: np.ndarray, item_category: np.ndarray, history_csr: tuple[np.ndarray, np.ndarray],
                      users: np.ndarray, k: int) -> np.ndarray:
    """Per row: share of the top-k recommended items whose leaf category is absent from the categories of that
    user's visible history (`history_csr` rows = `users[i]`). An offline stand-in for the paper's CICD (§4.2):
    how far recommendations go beyond what the user already browses. Rows with no item score 0."""
    indptr, indices = history_csr
    out = np.zeros(topk.shape[0])
    for i, u in enumerate(np.asarray(users, dtype=np.int64)):
        row = topk[i, :k]
        row = row[row >= 0]
        if not len(row):
            continue
        seen = set(item_category[indices[indptr[u]: indptr[u + 1]]].tolist())
        cats = item_category[row]
        out[i] = float(np.mean([c < 0 or c not in seen for c in cats.tolist()]))
    return out
