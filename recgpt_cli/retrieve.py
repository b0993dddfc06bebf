"""Tag-aware retrieval (paper §2.3.3): h_fuse = beta*h_u + (1-beta)*h_t for each predicted tag t of a user.

Each fused vector pulls its own top-K from an hnswlib inner-product index over the item vectors h_v (or an exact
torch matmul with `exact=True`, used to check recall). The per-tag lists are merged by score, each tag holding an
even share of every prefix of the list (or at most `per_tag_quota` items), so one tag cannot take the top; then the
user-only list (beta = 1) tops it up. Users without tags get the user-only list. Items the user already engaged
with are filtered out.

    from recgpt_cli.retrieve import retrieve
    for rec in retrieve(con, load_model("models/tar"), tags_by_user, k=50):
        ...   # {"user_id","item_id","rank","score","tag","interest"}
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch

from recgpt_cli.errors import BadInput
from recgpt_cli.io import iter_jsonl, source_name
from recgpt_cli.schema import TagsRecord, parse_stage_record
from recgpt_cli.splits import SPLIT_ID_CHARS
from recgpt_cli.tags import DEFAULT_BETA
from recgpt_cli.towers.saved import TowerModel

Csr = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Tag:
    tag: str
    interest: str | None = None  # the interest's text
    interest_id: str | None = None  # its mine-interests id ("I1")
    split: str | None = None  # provenance of the history the tag came from (compress --split/--phase)
    phase: str | None = None
    split_id: str | None = None


@dataclass(frozen=True)
class Hit:
    item: int
    score: float
    tag: str | None
    interest: str | None
    interest_id: str | None = None


class ExactSearch:
    """Brute-force inner product over all items (torch), excluded items masked before top-k."""

    def __init__(self, h_v: np.ndarray) -> None:
        self.h_v = torch.as_tensor(h_v)

    def search(self, q: np.ndarray, k: int, exclude: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        scores = torch.as_tensor(q) @ self.h_v.T
        for r, ex in enumerate(exclude):
            scores[r, torch.as_tensor(ex, dtype=torch.long)] = -torch.inf
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        return top.indices.numpy(), top.values.numpy()


class HnswSearch:
    """hnswlib index in inner-product space; over-fetches to make room for filtered items."""

    def __init__(self, index: Any, n_items: int, ef: int) -> None:
        self.index, self.n_items, self.ef = index, n_items, ef

    def search(self, q: np.ndarray, k: int, exclude: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        fetch = min(self.n_items, k + max((len(e) for e in exclude), default=0))
        self.index.set_ef(max(self.ef, fetch))
        labels, dist = self.index.knn_query(q, k=fetch)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        sims = np.full((len(q), k), -np.inf, dtype=np.float32)
        for r, ex in enumerate(exclude):
            keep = ~np.isin(labels[r], ex)
            row_ids, row_sims = labels[r][keep][:k], 1.0 - dist[r][keep][:k]  # hnswlib 'ip' distance = 1 - dot
            ids[r, : len(row_ids)], sims[r, : len(row_ids)] = row_ids, row_sims
        return ids, sims


def hnsw_index(h_v: np.ndarray, *, m: int = 32, ef_construction: int = 200, cache_dir: Path | None = None) -> Any:
    """Build (or load from `cache_dir`, keyed by a hash of the vectors) an hnswlib 'ip' index over item vectors."""
    import hnswlib

    key = hashlib.sha256(np.ascontiguousarray(h_v, dtype=np.float32).tobytes()).hexdigest()[:16]
    path = cache_dir / f"hnsw-{key}-M{m}-efc{ef_construction}.bin" if cache_dir is not None else None
    index = hnswlib.Index(space="ip", dim=h_v.shape[1])
    if path is not None and path.exists():
        index.load_index(str(path), max_elements=len(h_v))
        return index
    index.init_index(max_elements=len(h_v), ef_construction=ef_construction, M=m, random_seed=0)
    index.add_items(h_v.astype(np.float32), np.arange(len(h_v)))
    if path is not None:
        tmp = path.with_suffix(".tmp")
        index.save_index(str(tmp))
        tmp.replace(path)
    return index


def merge_with_quota(lists: list[list[Hit]], k: int, quota: int | None, fill: list[Hit]) -> list[Hit]:
    """Merge per-tag ranked lists by score, no duplicates; top up from `fill` when the lists run out.
    `quota`: at most that many items per tag. None: every prefix shares out evenly — the n-th item comes from a
    tag holding fewer than ceil(n / len(lists)) of the first n - 1 — so the top 10 of a 50-item list is the
    10-item list (with a fixed ceil(k / tags), `retrieve --k 50` let the highest-scoring tags fill the top 10)."""
    out: list[Hit] = []
    taken: set[int] = set()
    heads = [0] * len(lists)
    count = [0] * len(lists)
    while len(out) < k:
        cap = quota if quota is not None else math.ceil((len(out) + 1) / max(len(lists), 1))
        best = -1
        for i, lst in enumerate(lists):
            while heads[i] < len(lst) and lst[heads[i]].item in taken:
                heads[i] += 1
            if count[i] < cap and heads[i] < len(lst) and (
                    best < 0 or lst[heads[i]].score > lists[best][heads[best]].score):
                best = i
        if best < 0:
            break
        hit = lists[best][heads[best]]
        out.append(hit)
        taken.add(hit.item)
        count[best] += 1
    for hit in fill:
        if len(out) == k:
            break
        if hit.item not in taken:
            out.append(hit)
            taken.add(hit.item)
    return out


def rank_users(
    model: TowerModel,
    users: np.ndarray,
    tags: Mapping[int, list[Tag]],
    *,
    beta: float = DEFAULT_BETA,
    k: int = 50,
    per_tag_quota: int | None = None,
    exclude: Csr | None = None,
    exact: bool = False,
    ef: int = 200,
    m: int = 32,
    batch: int = 512,
) -> Iterator[tuple[int, list[Hit]]]:
    """Yield (user index, hits) for each of `users`, best first. `exclude` = CSR of items to filter per user
    (default: the model's train pairs). Tags are those in `tags[user]`; none -> beta = 1."""
    h_v = model.item_vectors().cpu().numpy()
    if exclude is None:
        fu, fi = model.feats.train_user, model.feats.train_item
        order = np.lexsort((fi, fu))
        indptr = np.zeros(len(model.user_ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(fu, minlength=len(model.user_ids)), out=indptr[1:])
        exclude = (indptr, fi[order])
    if exact:
        searcher: ExactSearch | HnswSearch = ExactSearch(h_v)
    else:
        index = hnsw_index(h_v, m=m, ef_construction=max(ef, 100), cache_dir=model.directory)
        searcher = HnswSearch(index, len(h_v), ef)
    for start in range(0, len(users), batch):
        part = np.asarray(users[start : start + batch], dtype=np.int64)
        h_u = model.user_vectors(part).cpu().numpy()
        # one query per (user, tag) plus the user-only query; h_fuse = beta*h_u + (1-beta)*h_t (§2.3.3)
        q_rows, q_tag, texts = [], [], []
        for r, u in enumerate(part):
            for tag in tags.get(int(u), []) if beta < 1.0 else []:
                q_rows.append(r)
                q_tag.append(tag)
                texts.append(tag.tag)
        h_t = model.tag_vectors(texts).cpu().numpy() if texts else np.zeros((0, h_v.shape[1]), np.float32)
        q = np.concatenate([h_u, beta * h_u[q_rows] + (1.0 - beta) * h_t]).astype(np.float32)
        rows = np.concatenate([np.arange(len(part)), np.asarray(q_rows, dtype=np.int64)])
        excl = [exclude[1][exclude[0][part[r]] : exclude[0][part[r] + 1]] for r in rows]
        ids, sims = searcher.search(q, k, excl)
        per_user: list[list[list[Hit]]] = [[] for _ in part]
        for j in range(len(part), len(q)):
            tag = q_tag[j - len(part)]
            per_user[rows[j]].append(_hits(ids[j], sims[j], tag.tag, tag.interest, tag.interest_id))
        for r, u in enumerate(part):
            own = _hits(ids[r], sims[r], None, None)
            lists = per_user[r]
            yield int(u), (merge_with_quota(lists, k, per_tag_quota, own) if lists else own)


def _hits(ids: np.ndarray, sims: np.ndarray, tag: str | None, interest: str | None,
          interest_id: str | None = None) -> list[Hit]:
    return [Hit(int(i), float(s), tag, interest, interest_id) for i, s in zip(ids, sims, strict=True) if i >= 0]


def engaged_items(con: duckdb.DuckDBPyConnection, model: TowerModel) -> Csr:
    """Every item each model user has any behaviour on in the DB (for serving: never re-recommend)."""
    u_pos = {u: i for i, u in enumerate(model.user_ids)}
    v_pos = {v: i for i, v in enumerate(model.item_ids)}
    pairs = [(u_pos[u], v_pos[v]) for u, v in con.execute(
        "SELECT DISTINCT user_id, item_id FROM behaviors WHERE item_id IS NOT NULL").fetchall()
        if u in u_pos and v in v_pos]
    arr = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    indptr = np.zeros(len(model.user_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(arr[:, 0], minlength=len(model.user_ids)), out=indptr[1:])
    return indptr, arr[:, 1]


def read_tags(path: str | Path, lines: dict[str, int] | None = None) -> tuple[dict[str, list[Tag]], int]:
    """Tags per user from predict-tags JSONL (schema.TagsRecord: {"user_id", "tags": [{"tag", "interest_id",
    "interest", ...}]}). Returns (tags by user id, number of records with no usable tags); `lines` gets each
    user's first line number. A user's records must come from one history (the same split, phase and cut): the
    rows `retrieve` makes carry one provenance per user, which `evaluate` checks."""
    out: dict[str, list[Tag]] = {}
    origin: dict[str, tuple[tuple[str | None, ...], int]] = {}
    empty = 0
    for line, rec in iter_jsonl(path):
        try:
            record = parse_stage_record(rec, TagsRecord)
        except ValueError as exc:
            raise BadInput.at(source_name(path), line, str(exc)) from None
        assert isinstance(record, TagsRecord)
        prov = (record.split, record.phase, record.cut, record.split_id)
        first, first_line = origin.setdefault(record.user_id, (prov, line))
        if prov != first:
            raise BadInput.at(source_name(path), line, f"user {record.user_id!r}: tags from another history than "
                              f"line {first_line}'s ({_history_name(prov)} vs {_history_name(first)})",
                              "give each user's tags from one `recgpt compress` run")
        parsed = [Tag(t.tag, t.interest, t.interest_id, record.split, record.phase, record.split_id)
                  for t in record.tags]
        empty += not parsed
        out.setdefault(record.user_id, []).extend(parsed)
        if lines is not None:
            lines.setdefault(record.user_id, line)
    return out, empty


def _history_name(prov: tuple[str | None, ...]) -> str:
    split, phase, cut, _ = prov
    return f"{split} split, {phase} phase, cut {cut}" if split else "the full history"


def model_split_id(model: TowerModel) -> str | None:
    """The `SplitData.split_id` of the split the model trained on (None: a model from before fingerprints)."""
    fingerprint = model.config.get("split_fingerprint")
    return fingerprint[:SPLIT_ID_CHARS] if isinstance(fingerprint, str) else None


def check_tags_split(tags_by_user: Mapping[str, list[Tag]], model: TowerModel, name: str,
                     lines: Mapping[str, int]) -> None:
    """Refuse tags made from a history cut for another split than the model trained on: its rows would mix two
    versions of what is held out. Tags from the full history (serving, no split) go through."""
    model_split, model_id = model.config.get("protocol"), model_split_id(model)
    for user, tags in tags_by_user.items():
        if not tags or tags[0].split is None:
            continue
        t = tags[0]
        if t.split != model_split or t.split_id != model_id:
            raise BadInput.at(name, lines.get(user, 0),
                              f"user {user!r}: tags from a history cut for the {t.split} split (id {t.split_id}), "
                              f"but the model trained on the {model_split} split (id {model_id})",
                              f"compress with `--split {model_split}` on the --db the model trained on")


def retrieve(
    con: duckdb.DuckDBPyConnection | None,
    model: TowerModel,
    tags_by_user: Mapping[str, list[Tag]] | None = None,
    *,
    beta: float = DEFAULT_BETA,
    k: int = 50,
    per_tag_quota: int | None = None,
    exact: bool = False,
    exclude: str = "train",
    users: Iterable[str] | None = None,
    ef: int = 200,
    m: int = 32,
) -> Iterator[dict[str, Any]]:
    """Recommendations as JSONL-ready dicts {"user_id","item_id","rank","score","tag","interest_id","interest"}
    (schema.Recommendation, §2.3.3).

    users: user ids to serve (default: every user the model knows). exclude: "train" filters the model's train
    pairs (what evaluation needs), "all" every item the user has a behaviour on in `con` (serving)."""
    if not 0.0 <= beta <= 1.0:
        raise BadInput(f"--beta {beta}: must be between 0 and 1")
    if k < 1:
        raise BadInput(f"--k {k}: must be at least 1")
    u_pos = {u: i for i, u in enumerate(model.user_ids)}
    wanted = list(u_pos) if users is None else [u for u in users if u in u_pos]
    tags = {u_pos[u]: t for u, t in (tags_by_user or {}).items() if u in u_pos}
    if beta < 1.0 and any(tags.values()) and not model.config.get("tag_weight", 1.0):
        # no L_tag / L_cate: h_t is the tag tower's random initialisation, and fusing it costs NDCG@10 on both
        # benchmark datasets without widening anything (bench/README.md, twenty-seventh session)
        raise BadInput(f"{model.directory or 'the model'}: its tag tower was never trained (--tag-weight 0), so "
                       f"tags fused at --beta {beta} would only add noise",
                       "train the towers with --tag-weight > 0 (as the default preset does), or pass --beta 1")
    excl = engaged_items(con, model) if exclude == "all" and con is not None else None
    model_id = model_split_id(model)
    for u, hits in rank_users(model, np.array([u_pos[u] for u in wanted], dtype=np.int64), tags, beta=beta, k=k,
                              per_tag_quota=per_tag_quota, exclude=excl, exact=exact, ef=ef, m=m):
        # rows that a tag produced carry the tag's provenance (one per user: `read_tags`), so `evaluate` can refuse
        # leaked tags; every row carries the split the model trained on, whose train items the lists leave out
        origin = (tags.get(u) or [Tag("")])[0]
        for rank, h in enumerate(hits, start=1):
            row = {"user_id": model.user_ids[u], "item_id": model.item_ids[h.item], "rank": rank,
                   "score": round(h.score, 6), "tag": h.tag, "interest_id": h.interest_id, "interest": h.interest}
            if h.tag is not None:
                row.update(split=origin.split, phase=origin.phase)
            if model_id is not None:
                row["split_id"] = model_id
            if excl is not None:
                row["exclude"] = "all"
            yield row
