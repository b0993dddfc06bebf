"""Tower inputs from the DuckDB store (§2.3.1): item feature ids, per-behaviour user sequences, tag texts.

Only TRAIN-split interactions feed user sequences and training positives, so validation/test never leak in.
Everything the towers need at inference is kept in `TowerFeatures` and saved beside the weights, so a model dir
is self-contained (`load_model` needs no DB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

import duckdb
import numpy as np

from recgpt_cli.splits import SplitData

PAD, UNK = 0, 1
MAX_TAG_TOKENS = 16
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokenizer shared by training tags, catalogue texts and LLM-predicted tags."""
    return _WORD.findall(text.lower())


def encode(texts: list[str], vocab: dict[str, int], max_len: int = MAX_TAG_TOKENS) -> np.ndarray:
    """Texts -> (N, max_len) word ids, 0-padded; unknown words map to UNK."""
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [vocab.get(w, UNK) for w in tokenize(text)][:max_len]
        out[i, : len(ids)] = ids
    return out


def behavior_group(kind: str, value: float | None) -> str:
    """Behaviour type of a sequence. A rating becomes `favorite` (>= 4 stars) or `detail_view` (seen, not loved)."""
    if kind == "rating":
        return "favorite" if value is not None and value >= 4 else "detail_view"
    return kind


def discretize(values: np.ndarray, n_buckets: int) -> np.ndarray:
    """Discretize(.) of §2.3.1: quantile buckets 1..n_buckets; NaN (missing) -> 0."""
    out = np.zeros(len(values), dtype=np.int64)
    ok = ~np.isnan(values)
    if ok.any():
        edges = np.unique(np.quantile(values[ok], np.linspace(0, 1, n_buckets + 1)[1:-1]))
        out[ok] = 1 + np.searchsorted(edges, values[ok], side="right")
    return out


@dataclass
class TowerFeatures:
    """Dense arrays indexed like SplitData.user_ids / item_ids."""

    item_feats: np.ndarray  # (n_items, n_fields) ids: item id, category levels, brand, price bucket, sales bucket
    item_cat: np.ndarray  # (n_items,) finest-category id (0 = none), for L_cate
    title_tokens: np.ndarray  # (n_items, T) tag text 1: the title
    cat_tokens: np.ndarray  # (n_items, T) tag text 2: the category path
    seq_indptr: np.ndarray  # (n_users+1,) CSR over the flat sequence entries below
    seq_item: np.ndarray  # (E,) item of each entry, chronological per user (behaviours interleaved)
    seq_beh: np.ndarray  # (E,) behaviour index of each entry
    train_user: np.ndarray  # (P,) training positives (user, item) = the train split
    train_item: np.ndarray  # (P,)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: Path) -> TowerFeatures:
        with np.load(path) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls)})

    def field_sizes(self) -> list[int]:
        return [int(self.item_feats[:, j].max()) + 1 for j in range(self.item_feats.shape[1])]


def _vocab_ids(values: list[str | None]) -> tuple[np.ndarray, list[str]]:
    names = sorted({v for v in values if v})
    index = {v: i + 1 for i, v in enumerate(names)}
    return np.array([index.get(v, 0) if v else 0 for v in values], dtype=np.int64), names


def build_features(
    con: duckdb.DuckDBPyConnection,
    split: SplitData,
    *,
    n_levels: int = 3,
    n_buckets: int = 10,
    max_seq_len: int = 200,
) -> tuple[TowerFeatures, list[str], dict[str, int]]:
    """Build tower inputs for `split`. Returns (features, behaviour names, tag vocabulary)."""
    n_items = split.n_items
    con.execute("CREATE OR REPLACE TEMP TABLE _tower_items (item_id VARCHAR, idx BIGINT)")
    con.executemany("INSERT INTO _tower_items VALUES (?, ?)", [[v, i] for i, v in enumerate(split.item_ids)])
    rows = con.execute(
        """SELECT t.idx, i.title, i.category_path, i.category_leaf, i.brand, i.price, i.sales
           FROM _tower_items t LEFT JOIN items i USING (item_id) ORDER BY t.idx"""
    ).fetchall()
    titles = [r[1] or "" for r in rows]
    paths = [list(r[2] or []) for r in rows]
    leaves = [r[3] or (r[2][-1] if r[2] else None) for r in rows]
    brands = [r[4] for r in rows]
    price = np.array([np.nan if r[5] is None else float(r[5]) for r in rows])
    sales = np.array([np.nan if r[6] is None else float(r[6]) for r in rows])
    if np.isnan(sales).all():
        # No sales figures in the catalogue: popularity among TRAIN interactions stands in for sales.
        sales = split.item_train_counts().astype(float)

    columns = [np.arange(n_items, dtype=np.int64)]
    for level in range(n_levels):
        columns.append(_vocab_ids([p[level] if len(p) > level else None for p in paths])[0])
    columns.append(_vocab_ids(brands)[0])
    columns.append(discretize(price, n_buckets))
    columns.append(discretize(sales, n_buckets))
    item_cat, _ = _vocab_ids(leaves)

    words: dict[str, int] = {}
    for text in titles + [" ".join(p) for p in paths]:
        for w in tokenize(text):
            words[w] = words.get(w, 0) + 1
    vocab = {w: i + 2 for i, w in enumerate(sorted(words))}  # 0 pad, 1 unknown

    # Per-behaviour sequences over TRAIN pairs only: the split decides which (user, item) pairs are visible.
    beh_rows = con.execute(
        """SELECT b.user_id, b.item_id, b.type, b.value, min(b.ts) AS ts
           FROM behaviors b JOIN splits s
             ON s.protocol = ? AND s.split = 'train' AND s.user_id = b.user_id AND s.item_id = b.item_id
           WHERE b.type <> 'search'
           GROUP BY ALL
           ORDER BY ALL""",  # a fixed order: which duplicate np.unique keeps below must not vary run to run
        [split.protocol],
    ).fetchall()
    groups = [behavior_group(r[2], r[3]) for r in beh_rows]
    behaviors = sorted(set(groups))
    beh_index = {b: i for i, b in enumerate(behaviors)}
    if beh_rows:
        u = np.array([split.user_index[r[0]] for r in beh_rows], dtype=np.int64)
        v = np.array([split.item_index[r[1]] for r in beh_rows], dtype=np.int64)
        b = np.array([beh_index[g] for g in groups], dtype=np.int64)
        ts = np.array([r[4] for r in beh_rows], dtype="datetime64[us]").astype(np.int64)
    else:
        u = v = b = ts = np.zeros(0, dtype=np.int64)
    # One entry per (user, item, behaviour); keep the most recent max_seq_len per (user, behaviour).
    key = np.unique(np.stack([u, b, v]), axis=1, return_index=True)[1] if len(u) else np.zeros(0, dtype=np.int64)
    u, v, b, ts = u[key], v[key], b[key], ts[key]
    order = np.lexsort((v, ts, b, u))
    u, v, b, ts = u[order], v[order], b[order], ts[order]
    if len(u):
        start = np.r_[0, np.flatnonzero((u[1:] != u[:-1]) | (b[1:] != b[:-1])) + 1]
        run_len = np.diff(np.r_[start, len(u)])
        back = np.repeat(start + run_len, run_len) - np.arange(len(u))  # 1 = most recent in its run
        keep = back <= max_seq_len
        u, v, b, ts = u[keep], v[keep], b[keep], ts[keep]
    # then one chronological stream per user, all behaviours interleaved (the sequential tower reads this order;
    # pooling ignores it)
    order = np.lexsort((b, v, ts, u))
    u, v, b = u[order], v[order], b[order]
    indptr = np.zeros(split.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=split.n_users), out=indptr[1:])

    feats = TowerFeatures(
        item_feats=np.stack(columns, axis=1),
        item_cat=item_cat,
        title_tokens=encode(titles, vocab),
        cat_tokens=encode([" ".join(p) for p in paths], vocab),
        seq_indptr=indptr,
        seq_item=v,
        seq_beh=b,
        train_user=split.train.user.astype(np.int64),
        train_item=split.train.item.astype(np.int64),
    )
    return feats, behaviors, vocab


def gather_sequences(feats: TowerFeatures, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened sequence entries of a batch of users: (row in batch, item, behaviour), vectorised CSR gather."""
    starts, ends = feats.seq_indptr[users], feats.seq_indptr[users + 1]
    lengths = ends - starts
    row = np.repeat(np.arange(len(users)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    idx = np.repeat(starts, lengths) + offsets
    return row, feats.seq_item[idx], feats.seq_beh[idx]
