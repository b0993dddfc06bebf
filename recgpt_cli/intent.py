"""Intent evaluation (issue 8): what the LLM stages' interests and tags are worth, scored split-honestly.

- `interest_prf`: mined interests → leaf categories through φ, against a ground-truth file (sample_data's
  `truth_interests.jsonl`: persistent and life-stage leaves) — macro precision / recall / F1.
- HR@30 tag→category lives in `evaluate.tag_category_hit_rate` (§2.2.2).
- `tag_item_topk` + `subset_metrics`: the items that tags alone retrieve (β = 0 in the TAR model, one list per tag
  merged with a per-tag quota, no user-only top-up), scored as Hit@K / Recall@K on the held-out phase — a tag is
  worth something only if it leads to an item the user really engaged with next.
- `subset_metrics` also gives CategoryDiversity@K, the exploration share (recommended categories absent from the
  user's visible history, an offline stand-in for the paper's CICD), TailPercentage, ItemCoverage and Gini.
- `tag_quality`: share of tags the rules kept, share matching a real catalogue item (§2.2.1 validity), share with
  an empty, placeholder or copied reason.

Every reader refuses tags made from a history that saw the phase being scored (`splits.leak_reason`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recgpt_cli.errors import BadInput
from recgpt_cli.io import iter_jsonl, source_name
from recgpt_cli.metrics import (
    category_diversity,
    exploration_share,
    hit_matrix,
    item_metrics,
    ranking_metrics,
    set_prf,
)
from recgpt_cli.schema import InterestsRecord, TagsRecord, parse_stage_record, record_kind
from recgpt_cli.splits import SplitData, leak_reason
from recgpt_cli.text import reason_problem, unsupported_claims

if TYPE_CHECKING:
    import duckdb

    from recgpt_cli.catalogue import Catalogue
    from recgpt_cli.retrieve import Tag
    from recgpt_cli.tag_category import TagCategoryModel
    from recgpt_cli.towers.saved import TowerModel


def read_intent_records(path: str | Path, *, protocol: str | None = None, phase: str | None = None,
                        split_id: str | None = None) -> list[dict[str, Any]]:
    """mine-interests / predict-tags JSONL, one record per user. With `protocol` and `phase`, a record made from a
    history that saw that phase (or, with `split_id`, cut for another version of the split) is BadInput
    (file:line)."""
    name = source_name(path)
    out = []
    for lineno, rec in iter_jsonl(path):
        if record_kind(rec) not in (None, InterestsRecord.KIND, TagsRecord.KIND):  # another stage's file
            try:
                parse_stage_record(rec, InterestsRecord, TagsRecord)
            except ValueError as exc:
                raise BadInput.at(name, lineno, str(exc)) from None
        if not isinstance(rec.get("user_id"), str) or not isinstance(rec.get("interests", []), list):
            raise BadInput.at(name, lineno, "need \"user_id\" and an \"interests\" list (mine-interests or "
                              "predict-tags output)")
        if protocol is not None and phase is not None:
            why = leak_reason(rec.get("split"), rec.get("phase"), protocol, phase, split_id=rec.get("split_id"),
                              current_id=split_id)
            if why:
                raise BadInput.at(name, lineno, f"record of user {rec['user_id']!r} was {why}")
        out.append(rec)
    return out


def load_truth(path: str | Path, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, set[str]]:
    """Ground-truth interests per user, JSONL {"user_id", "interests": [leaf category, ...]} (sample_data's
    generator; for scoring and labels only, never a prompt). With `con`, every user and category must be the
    store's: truth for another dataset would score or label nothing right."""
    from recgpt_cli.store import known_user_ids

    name = source_name(path)
    if str(path) != "-" and not Path(path).is_file():
        raise BadInput(f"{path}: no such file", "give sample_data/truth_interests.jsonl")
    users = known_user_ids(con) if con is not None else None
    leaves = None if con is None else {str(r[0]) for r in con.execute(
        "SELECT DISTINCT category_leaf FROM items WHERE category_leaf IS NOT NULL").fetchall()}
    out: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    for n, rec in iter_jsonl(path):
        uid, interests = rec.get("user_id"), rec.get("interests")
        err: str | None = None
        if not isinstance(uid, str) or not uid:
            err = "user_id must be a non-empty string"
        elif not isinstance(interests, list) or not all(isinstance(i, str) and i for i in interests):
            err = "interests must be a list of leaf category names (strings)"
        elif uid in first:
            err = f"duplicate user_id {uid!r} (first at line {first[uid]})"
        elif users is not None and uid not in users:
            err = f"unknown user_id {uid!r} (not in the --db)"
        elif leaves is not None and (unknown := [i for i in interests if i not in leaves]):
            err = f"unknown categories {', '.join(map(repr, unknown[:3]))} (no item of the --db has such a leaf)"
        if err is not None:
            raise BadInput.at(name, n, err, "give the truth_interests.jsonl of this --db's dataset")
        first[str(uid)] = n
        out[str(uid)] = {str(i) for i in interests}  # type: ignore[union-attr]
    return out


def interest_texts(rec: Mapping[str, Any]) -> list[str]:
    return [str(i.get("interest")) for i in rec.get("interests") or [] if isinstance(i, dict) and i.get("interest")]


def interest_prf(predicted: Mapping[str, Sequence[str]], truth: Mapping[str, set[str]],
                 phi: TagCategoryModel) -> dict[str, float]:
    """Interest texts per user → φ's leaf for each → macro P/R/F1 against the true leaves, over truth users
    present in `predicted` (users the run did not cover are not counted)."""
    pred = {u: set(phi.predict_leaf(list(texts))) if texts else set() for u, texts in predicted.items()}
    return set_prf(pred, {u: t for u, t in truth.items() if u in predicted})


def tag_quality(records: Iterable[Mapping[str, Any]], catalogue: Catalogue | None) -> dict[str, float]:
    """Rates over predict-tags records: kept / (kept + removed by the rules), share of kept tags matching a real
    catalogue item, share of kept tags whose reason is empty, a placeholder, an id or a copy of the tag."""
    kept = removed = valid = bad = 0
    for rec in records:
        removed += sum(int(v) for v in (rec.get("tag_rules_removed") or {}).values())
        for t in rec.get("tags") or []:
            kept += 1
            tag = str(t.get("tag", ""))
            valid += int(catalogue is not None and catalogue.is_valid(tag))
            bad += int(reason_problem(str(t.get("reason") or ""), tag) is not None)
    total = kept + removed
    return {"tags_kept": kept, "tags_removed": removed, "kept_share": kept / total if total else 0.0,
            # nan (JSON null) when undefined: no tag kept, or no catalogue to check against
            "valid_share": valid / kept if kept and catalogue is not None else float("nan"),
            "bad_reason_share": bad / kept if kept else 0.0}


def reason_grounding(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Share of the interests' and of the tags' reasons that claim nothing beyond the compressed history the model
    was shown (`text.unsupported_claims`; a tag's reason may also name its interest), over records carrying their
    `compressed` text (nan: none to check)."""
    rows = list(records)
    shares = {}
    for key, subject in (("interests", "interest"), ("tags", "tag")):
        checked = grounded = 0
        for rec in rows:
            history = rec.get("compressed")
            if not isinstance(history, str):
                continue
            for x in rec.get(key) or []:
                if isinstance(x, Mapping) and x.get("reason"):
                    checked += 1
                    about = f"{x.get(subject, '')} {x.get('interest', '')}"  # a tag's interest too
                    grounded += not unsupported_claims(str(x["reason"]), history, about)
        shares[f"{subject}_reason_grounded"] = grounded / checked if checked else float("nan")
    return shares


def tag_item_topk(model: TowerModel, split: SplitData, tags: Mapping[int, Sequence[Tag]], users: np.ndarray,
                  phase: str, k: int = 50) -> np.ndarray:
    """(len(users), k) items that the tags alone retrieve (β = 0): each tag's h_t ranks every item (exact), the
    phase's visible history masked; per-tag lists merged by score with quota ceil(k / #tags), no user-only fill.
    Rows of users without tags are -1."""
    import torch

    from recgpt_cli.retrieve import Hit, merge_with_quota

    h_v = model.item_vectors().cpu()
    excl = split.exclude_for(phase)
    out = np.full((len(users), k), -1, dtype=np.int64)
    for r, u in enumerate(np.asarray(users, dtype=np.int64)):
        user_tags = list(tags.get(int(u), []))
        if not user_tags:
            continue
        scores = model.tag_vectors([t.tag for t in user_tags]).cpu() @ h_v.T
        scores[:, torch.as_tensor(excl[1][excl[0][u]: excl[0][u + 1]], dtype=torch.long)] = -torch.inf
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        lists = [[Hit(int(i), float(s), t.tag, t.interest) for i, s in zip(ids, vals, strict=True)
                  if math.isfinite(float(s))]
                 for t, ids, vals in zip(user_tags, top.indices.tolist(), top.values.tolist(), strict=True)]
        hits = merge_with_quota(lists, k, math.ceil(k / len(lists)), [])
        out[r, : len(hits)] = [h.item for h in hits]
    return out


def subset_metrics(topk: np.ndarray, users: np.ndarray, split: SplitData, phase: str, ks: Sequence[int],
                   item_category: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy (RecBole definitions) and beyond-accuracy metrics of top-K rows for a subset of users (row i =
    user users[i]); only users with a positive in `phase` count, as in `compute_metrics`."""
    pos = split.user_items(phase)
    users = np.asarray(users, dtype=np.int64)
    n_pos = np.diff(pos[0])[users]
    keep = n_pos > 0
    users, topk, n_pos = users[keep], topk[keep], n_pos[keep]
    out: dict[str, float] = {"n_users": int(len(users))}
    out.update(ranking_metrics(hit_matrix(topk, pos, users), n_pos, ks))
    out.update(item_metrics(topk, split.n_items, split.item_train_counts(), ks))
    if item_category is not None:
        for k in ks:
            out[f"categorydiversity@{k}"] = float(category_diversity(topk, item_category, k).mean()) if len(users) \
                else 0.0
            out[f"exploration@{k}"] = float(exploration_share(
                topk, item_category, split.exclude_for(phase), users, k).mean()) if len(users) else 0.0
    return out
