"""Offline evaluation on the stored split: full ranking, RecBole metric definitions (issue 4; paper §3 / Figure 1).

Three entry points, all scored by the same code (`recgpt_cli.metrics.compute_metrics`):

- `evaluate_model(con, model_dir)` — a trained tower model (`recgpt train-towers`), every user × every item,
  train+valid items masked (as RecBole's full-sort test), top-K.
- `evaluate_recs(con, recs)` — any system's lists, `{user_id: [item_id, ...best first]}`.
- `read_recs(path, split_data)` — recommendation JSONL ({"user_id","item_id","rank"|"score"}), e.g. from
  `recgpt retrieve` or `recgpt_cli.baselines.write_recs`, into a top-K matrix, with file:line errors.

Example::

    from recgpt_cli.evaluate import evaluate_recs
    with connect("shop.duckdb") as con:
        m = evaluate_recs(con, {"u1": ["i9", "i4"], ...}, protocol="recbole", ks=(10, 20))
    m["ndcg@10"], m["itemcoverage@10"], m["exposure_decile@10"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from recgpt_cli.errors import BadInput
from recgpt_cli.io import iter_jsonl, source_name
from recgpt_cli.metrics import compute_metrics, exploration_share, full_rank_topk, hit_matrix
from recgpt_cli.schema import Recommendation, parse_stage_record, record_kind
from recgpt_cli.splits import SplitData, ensure_split, leak_reason, load_split

DEFAULT_KS = (10, 20)


def item_category_codes(con: duckdb.DuckDBPyConnection, split_data: SplitData) -> np.ndarray:
    """Int code of each item's leaf category in split_data's item order (-1 when unknown)."""
    rows = con.execute("SELECT item_id, category_leaf FROM items WHERE category_leaf IS NOT NULL").fetchall()
    codes: dict[str, int] = {}
    out = np.full(split_data.n_items, -1, dtype=np.int64)
    for item_id, leaf in rows:
        idx = split_data.item_index.get(item_id)
        if idx is not None:
            out[idx] = codes.setdefault(leaf, len(codes))
    return out


def score_topk(split_data: SplitData, scores: Any, k: int, phase: str = "test") -> np.ndarray:
    """Top-k of full scores (n_users, n_items) with the history of `phase` masked (train, + valid for test)."""
    return full_rank_topk(scores, split_data.exclude_for(phase), k)


def metrics_for_topk(
    con: duckdb.DuckDBPyConnection, split_data: SplitData, topk: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
    phase: str = "test",
) -> dict[str, Any]:
    """compute_metrics with category diversity and popularity deciles, plus protocol/phase/k in the result."""
    out: dict[str, Any] = {"protocol": split_data.protocol, "phase": phase}
    out.update(compute_metrics(topk, split_data, phase, ks, item_category=item_category_codes(con, split_data),
                               with_deciles=True))
    return out


def evaluate_model(
    con: duckdb.DuckDBPyConnection, model_dir: str | Path, protocol: str = "recbole",
    ks: Sequence[int] = DEFAULT_KS, phase: str = "test",
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of a trained tower model (y_col = h_u·h_v, β = 1) on `phase` of the stored split; also returns the
    top-K matrix (for plots)."""
    from recgpt_cli.saved_model import load_tower_model
    from recgpt_cli.towers import score_all  # the towers stage; imported lazily (torch)

    split_data = load_split(con, protocol)
    model = load_tower_model(model_dir, con)
    topk = score_topk(split_data, score_all(model, split_data), max(ks), phase)
    return metrics_for_topk(con, split_data, topk, ks, phase), topk


def recs_to_topk(recs: Mapping[str, Sequence[str]], split_data: SplitData, k: int) -> np.ndarray:
    """{user_id: [item_id best first]} → (n_users, k) item indices, -1 padded; unknown ids are BadInput."""
    topk = np.full((split_data.n_users, k), -1, dtype=np.int64)
    for user_id, items in recs.items():
        u = split_data.user_index.get(user_id)
        if u is None:
            raise BadInput(f"recommendations for unknown user {user_id!r}", "user ids must be in the DB's interactions")
        row = []
        for item_id in items[:k]:
            v = split_data.item_index.get(item_id)
            if v is None:
                raise BadInput(f"recommendation of unknown item {item_id!r} for user {user_id!r}")
            row.append(v)
        topk[u, : len(row)] = row
    return topk


def evaluate_recs(
    con: duckdb.DuckDBPyConnection, recs: Mapping[str, Sequence[str]], protocol: str = "recbole",
    ks: Sequence[int] = DEFAULT_KS, phase: str = "test",
) -> dict[str, Any]:
    """Metrics of given recommendation lists on `phase` of the stored split (made with seed 2020 if missing).
    Users without a list count as misses; lists shorter than K are padded (never filled)."""
    split_data = ensure_split(con, protocol)
    topk = recs_to_topk(recs, split_data, max(ks))
    return metrics_for_topk(con, split_data, topk, ks, phase)


def read_recs(path: str | Path, split_data: SplitData, k: int, phase: str = "test"
              ) -> tuple[np.ndarray, dict[str, int]]:
    """Read recommendation JSONL into a (n_users, k) top-k matrix: per user, items by ascending "rank", else by
    descending "score" (ties by file order). Returns (topk, counts of rows read/kept/duplicates/seen items).
    A row that an LLM tag produced (`tag` set) must come from a history cut for `phase` (BadInput otherwise)."""
    name = source_name(path)
    per_user: dict[int, list[tuple[float, int, int]]] = {}
    ordered_by: dict[int, str] = {}  # "rank" or "score", per user
    n_rows = 0
    current_id = split_data.split_id
    for lineno, rec in iter_jsonl(path):
        n_rows += 1
        if record_kind(rec) not in (None, Recommendation.KIND):  # another stage's file given by mistake
            try:
                parse_stage_record(rec, Recommendation)
            except ValueError as exc:
                raise BadInput.at(name, lineno, str(exc)) from None
        user_id, item_id = rec.get("user_id"), rec.get("item_id")
        if not isinstance(user_id, str) or not isinstance(item_id, str):
            raise BadInput.at(name, lineno, "need string fields \"user_id\" and \"item_id\"")
        u = split_data.user_index.get(user_id)
        if u is None:
            raise BadInput.at(name, lineno, f"unknown user_id {user_id!r} (no interactions in the DB)",
                              "evaluate with the --db the recommendations were made from")
        v = split_data.item_index.get(item_id)
        if v is None:
            raise BadInput.at(name, lineno, f"unknown item_id {item_id!r} (not in the items table)")
        if rec.get("exclude") == "all":
            raise BadInput.at(name, lineno, "a serving list (`retrieve --exclude all`): it leaves out the held-out "
                              "items it would be scored on", "retrieve with --exclude train to evaluate")
        if rec.get("split_id") not in (None, current_id):
            raise BadInput.at(name, lineno, f"made by a model trained on another version of the split (id "
                              f"{rec['split_id']}; this --db's {split_data.protocol} split is {current_id}), whose "
                              "train items may be held out here", "retrieve again with a model trained on this --db")
        if rec.get("tag") is not None:
            why = leak_reason(rec.get("split"), rec.get("phase"), split_data.protocol, phase,
                              split_id=rec.get("split_id"), current_id=current_id)
            if why:
                raise BadInput.at(name, lineno, f"recommendation from tag {rec['tag']!r}: the tag was {why}")
        by = "rank" if rec.get("rank") is not None else "score" if rec.get("score") is not None else None
        if by is None:
            raise BadInput.at(name, lineno, "need a \"rank\" (1 = best) or a \"score\" (higher = better)")
        value = rec[by]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise BadInput.at(name, lineno, f"{by} must be a finite number, got {value!r}")
        if by == "rank" and value < 1:
            raise BadInput.at(name, lineno, f"rank must be at least 1 (1 = best), got {value!r}")
        if ordered_by.setdefault(u, by) != by:  # a rank and a score are not one scale
            raise BadInput.at(name, lineno, f"user {user_id!r} has rows ranked by {ordered_by[u]} and by {by}",
                              "give every row of a user a rank, or every row a score")
        per_user.setdefault(u, []).append((float(value if by == "rank" else -value), lineno, v))
    topk = np.full((split_data.n_users, k), -1, dtype=np.int64)
    dups = 0
    for u, rows in per_user.items():
        seen: set[int] = set()
        ordered = []
        for _, _, v in sorted(rows):
            if v in seen:
                dups += 1
                continue
            seen.add(v)
            ordered.append(v)
        topk[u, : min(k, len(ordered))] = ordered[:k]
    return topk, {"rows": n_rows, "users": len(per_user), "duplicates_dropped": dups}


def history_hits(topk: np.ndarray, split_data: SplitData, phase: str = "test") -> int:
    """How many recommended slots hold an item the user already had before `phase` (never a hit)."""
    users = np.arange(split_data.n_users)
    return int(hit_matrix(topk, split_data.exclude_for(phase), users).sum())


@dataclass
class Evaluation:
    """What `recgpt evaluate` reports: metrics per system (first = the evaluated one), notes, written plots."""

    systems: dict[str, dict[str, Any]]
    plots: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The first system's metrics as a flat object; a compared system under "compare"."""
        names = list(self.systems)
        out = dict(self.systems[names[0]])
        if len(names) > 1:
            out["compare"] = self.systems[names[1]]
        return out


def _system_topk(
    con: duckdb.DuckDBPyConnection, split_data: SplitData, k: int, phase: str, *, model_dir: str | Path | None = None,
    recs_path: str | Path | None = None, baseline: str | None = None, seed: int = 2020, model: Any = None,
) -> tuple[str, np.ndarray, dict[str, Any]]:
    if model_dir is not None:
        from recgpt_cli.towers import load_model, score_all  # lazily: the towers stage pulls in torch models

        model = model if model is not None else load_model(model_dir)
        return f"model:{Path(model_dir).name}", score_topk(split_data, score_all(model, split_data), k, phase), {}
    if recs_path is not None:
        topk, counts = read_recs(recs_path, split_data, k, phase)
        return f"recs:{Path(str(recs_path)).name}", topk, {"recs_" + key: v for key, v in counts.items()}
    if baseline is not None:
        from recgpt_cli.baselines import fit_baseline, recommend

        scorer = fit_baseline(baseline, split_data, seed=seed)
        return f"baseline:{baseline}", recommend(scorer, split_data, k, phase), {}
    raise BadInput("nothing to evaluate", "give --model DIR, --recs FILE or --baseline NAME")


def run_evaluation(
    con: duckdb.DuckDBPyConnection,
    *,
    model_dir: str | Path | None = None,
    recs_path: str | Path | None = None,
    baseline: str | None = None,
    compare_path: str | Path | None = None,
    protocol: str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    phase: str = "test",
    plot_dir: str | Path | None = None,
    seed: int = 2020,
    tags_path: str | Path | None = None,
    truth_path: str | Path | None = None,
) -> Evaluation:
    """Evaluate one system (a tower model dir, a recommendation JSONL, or a baseline fitted here) and optionally a
    second recommendation JSONL (`compare_path`) on the same stored split; write plots to `plot_dir`.

    `protocol` None = the model's training protocol (model dirs) or ``recbole``. The split is made with `seed` if
    the DB has none yet. `tags_path` (predict-tags or mine-interests JSONL, made for `phase` of this split) adds
    HR@30 of tag→category (§2.2.2), tag quality rates, the exploration share of the scored lists, and with a model
    Hit/Recall@50 of the items the tags alone retrieve (β = 0); `truth_path` adds interest P/R/F1 (issue 8)."""
    if sum(x is not None for x in (model_dir, recs_path, baseline)) != 1:
        raise BadInput("give exactly one of --model, --recs, --baseline")
    stdin_users = [name for name, path in (("--recs", recs_path), ("--compare", compare_path), ("--tags", tags_path),
                                           ("--truth", truth_path)) if path is not None and str(path) == "-"]
    if len(stdin_users) > 1:  # stdin reads once: the second would look empty
        raise BadInput(f"{' and '.join(stdin_users)} both read stdin (-); give files for all but one")
    if truth_path is not None and tags_path is None:
        raise BadInput("--truth scores the interests of --tags: give --tags too")
    if phase not in ("valid", "test"):
        raise BadInput(f"--phase {phase}: expected valid or test")
    if not ks or min(ks) < 1:
        raise BadInput(f"--k {list(ks)}: give positive cut-offs, e.g. 10,20")
    model = None
    if model_dir is not None:
        from recgpt_cli.saved_model import load_tower_model

        model = load_tower_model(model_dir, con)  # also: trained on this --db's users and items
        trained_on = model.config.get("protocol")
        if protocol is not None and protocol != trained_on:
            raise BadInput(f"{model_dir}: trained on the {trained_on} split, asked to score on the {protocol} split",
                           f"use --protocol {trained_on}, or train a model with --protocol {protocol}")
        from recgpt_cli.saved_model import check_model_on_db_split

        split_data = check_model_on_db_split(model_dir, model, con)  # type: ignore[arg-type]
    else:
        split_data = ensure_split(con, protocol or "recbole", seed=seed)
    k = max(ks)
    if k > max(split_data.n_items, 1000):  # a short catalogue still gets the usual cut-offs (lists padded)
        raise BadInput(f"--k {k}: more than the {split_data.n_items:,} items there are to rank")
    codes = item_category_codes(con, split_data)
    systems: dict[str, dict[str, Any]] = {}
    topks: dict[str, np.ndarray] = {}
    runs = [dict(model_dir=model_dir, recs_path=recs_path, baseline=baseline, model=model)]
    if compare_path is not None:
        runs.append(dict(recs_path=compare_path))
    for run in runs:
        name, topk, extra = _system_topk(con, split_data, k, phase, seed=seed, **run)  # type: ignore[arg-type]
        if topk.shape[1] < k:  # fewer items than the cut-off: the empty slots are misses
            topk = np.pad(topk, ((0, 0), (0, k - topk.shape[1])), constant_values=-1)
        if name in systems:
            name += " (compare)"
        metrics: dict[str, Any] = {"system": name, "protocol": split_data.protocol, "phase": phase}
        metrics.update(compute_metrics(topk, split_data, phase, ks, item_category=codes, with_deciles=True))
        metrics["history_items_in_recs"] = history_hits(topk, split_data, phase)
        metrics.update(extra)
        systems[name], topks[name] = metrics, topk
    first = systems[next(iter(systems))]
    users = np.flatnonzero(np.diff(split_data.user_items(phase)[0]) > 0)
    for kk in ks:
        first[f"exploration@{kk}"] = float(exploration_share(
            topks[first["system"]][users], codes, split_data.exclude_for(phase), users, kk).mean()
        ) if len(users) else 0.0
    if tags_path is not None:
        first.update(intent_metrics(con, tags_path, split_data, phase, model_dir=model_dir, truth_path=truth_path,
                                    seed=seed))
    result = Evaluation(systems)
    if plot_dir is not None:
        from recgpt_cli.metrics import category_diversity
        from recgpt_cli.plots import plot_diversity_hist, plot_exposure_deciles

        users = np.flatnonzero(np.diff(split_data.user_items(phase)[0]) > 0)
        for kk in ks:
            result.plots.append(plot_exposure_deciles(
                {n: m[f"exposure_decile@{kk}"] for n, m in systems.items()}, kk,
                Path(plot_dir) / f"exposure_deciles@{kk}.png"))
            result.plots.append(plot_diversity_hist(
                {n: category_diversity(t[users], codes, kk) for n, t in topks.items()}, kk,
                Path(plot_dir) / f"category_diversity@{kk}.png"))
    return result


def intent_metrics(
    con: duckdb.DuckDBPyConnection, tags_path: str | Path, split_data: SplitData, phase: str, *,
    model_dir: str | Path | None = None, truth_path: str | Path | None = None, seed: int = 2020, k: int = 50,
) -> dict[str, Any]:
    """Issue 8's intent metrics of a predict-tags (or mine-interests) file: HR@30, tag quality, tag→item Hit@k and
    Recall@k with a model (β = 0), interest P/R/F1 against `truth_path`. Leaked records are refused."""
    from recgpt_cli.catalogue import Catalogue
    from recgpt_cli.intent import (
        interest_prf,
        interest_texts,
        load_truth,
        read_intent_records,
        reason_grounding,
        subset_metrics,
        tag_item_topk,
        tag_quality,
    )
    from recgpt_cli.retrieve import Tag
    from recgpt_cli.tag_category import fit_tag_category

    records = read_intent_records(tags_path, protocol=split_data.protocol, phase=phase,
                                  split_id=split_data.split_id)
    phi, _ = fit_tag_category(con, seed=seed, holdout=0.0)
    out: dict[str, Any] = {}
    if any("tags" in r for r in records):
        out.update(tag_category_hit_rate(con, tags_path, split_data.protocol, phase, phi=phi, seed=seed))
        out.update({f"tag_{key}": v for key, v in tag_quality(records, Catalogue.from_db(con, with_phi=False)).items()})
    out.update(reason_grounding(records))
    if model_dir is not None:
        from recgpt_cli.towers import load_model

        by_user = {split_data.user_index[r["user_id"]]: [Tag(str(t["tag"]), t.get("interest")) for t in r["tags"]]
                   for r in records if r.get("tags") and r["user_id"] in split_data.user_index}
        users = np.array(sorted(by_user), dtype=np.int64)
        topk = tag_item_topk(load_model(model_dir), split_data, by_user, users, phase, k)
        m = subset_metrics(topk, users, split_data, phase, (k,))
        out.update({f"tagitem_hit@{k}": m[f"hit@{k}"], f"tagitem_recall@{k}": m[f"recall@{k}"],
                    "tagitem_users": m["n_users"]})
    if truth_path is not None:
        m = interest_prf({r["user_id"]: interest_texts(r) for r in records}, load_truth(truth_path, con), phi)
        out.update({f"interest_{key}": v for key, v in m.items()})
    return out


def next_item_categories(con: duckdb.DuckDBPyConnection, protocol: str = "loo", phase: str = "test") -> dict[str, str]:
    """Each user's ground-truth next category for HR@30: the leaf of the user's earliest `phase` item (under ``loo``
    exactly the next item in time)."""
    rows = con.execute(
        """SELECT s.user_id, arg_min(i.category_leaf, s.ts) FROM splits s JOIN items i USING (item_id)
           WHERE s.protocol = ? AND s.split = ? AND i.category_leaf IS NOT NULL GROUP BY s.user_id""",
        [protocol, phase],
    ).fetchall()
    return {u: c for u, c in rows}


def tag_category_hit_rate(
    con: duckdb.DuckDBPyConnection, tags_path: str | Path, protocol: str = "loo", phase: str = "test",
    n_tags: int = 30, phi: Any = None, seed: int = 0,
) -> dict[str, Any]:
    """HR@30 of §2.2.2 for predict-tags JSONL ({"user_id","tags":[{"tag"}...]}): φ maps each user's first `n_tags`
    tags to categories; a hit when the user's next item's category is among them. Users = those in the file
    with a ground-truth next item. φ (`TagCategoryModel`) is fitted on the DB's item titles when not given."""
    from recgpt_cli.metrics import hr_tag_category
    from recgpt_cli.tag_category import fit_tag_category

    name = source_name(tags_path)
    current_id = ensure_split(con, protocol).split_id
    truth = next_item_categories(con, protocol, phase)
    user_tags: dict[str, list[str]] = {}
    for lineno, rec in iter_jsonl(tags_path):
        tags = rec.get("tags")
        if not isinstance(rec.get("user_id"), str) or not isinstance(tags, list):
            raise BadInput.at(name, lineno, "need \"user_id\" and a \"tags\" list (output of recgpt predict-tags)")
        why = leak_reason(rec.get("split"), rec.get("phase"), protocol, phase, split_id=rec.get("split_id"),
                          current_id=current_id)
        if why:
            raise BadInput.at(name, lineno, f"tags of user {rec['user_id']!r} were {why}")
        texts = [t.get("tag") if isinstance(t, dict) else t for t in tags]
        user_tags[rec["user_id"]] = [t for t in texts if isinstance(t, str) and t.strip()][:n_tags]
    if phi is None:
        phi, _ = fit_tag_category(con, seed=seed, holdout=0.0)
    users = [u for u in user_tags if u in truth]
    pred = {u: set(phi.predict_leaf(user_tags[u])) if user_tags[u] else set() for u in users}
    key = f"hr_tagcategory@{n_tags}"
    return {key: hr_tag_category(pred, {u: truth[u] for u in users}), f"{key}_users": len(users),
            f"{key}_users_without_next_item": len(user_tags) - len(users)}
