"""Judge labels derived from data instead of people (§3.2 needs labels at scale; the hand gold set stays the test).

Every label says where it comes from (`source`):

- ``derived:truth`` (sample_data): a candidate's category counts as relevant iff it is among the user's
  ground-truth interests (`truth_interests.jsonl`, read for labels only, never shown in a prompt) or among the
  categories the user engaged with in the window after the cut.
- ``derived:behaviour`` (any store, e.g. ml-100k): relevant iff the user engaged with that category after the cut.

Candidates come from the same (user, cut) contexts the alignment data uses (`align.data.log_contexts`: the
split-aware compressed history at the cut, train interactions only, benchmark users excluded), so a judge
trained on them never sees a scored user:

- interests: the interests from logs (strong correlation when relevant, else weak — the history supports them
  once or twice but the user moved on), an unrelated category with a reason citing a history item of another
  category (no correlation), and one whose reason names an item the history does not hold (hallucination).
  Willingness is "spontaneity" throughout: neither source says whether a category is a chore.
- tags: titles of items engaged with after the cut in the interest's category (all Yes); an item title from a
  category the user never touched (relevance, consistency No); an engaged category's title linked to another
  interest (relevance No); the interest with a broad core word ("... accessories": specificity No).
- explanations: a template naming the item's own category (factuality Excellent), another item's category
  (factuality Bad), the interest of another category (relevance Bad), a stuttered sentence (clarity Bad), or a
  hard-sell tail (safety No).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from recgpt_cli.align.data import LogsConfig, log_contexts, tag_reason, title_tag
from recgpt_cli.judge.criteria import get_task

SOURCES = ("derived:truth", "derived:behaviour")


@dataclass(frozen=True)
class DerivedLabel:
    task: str
    sample: dict[str, Any]  # a flat judge sample (recgpt_cli.judge.samples)
    labels: dict[str, str]  # one label per criterion of the task
    source: str
    kind: str  # which candidate rule made it (positive, unrelated, hallucinated, ...)


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded by the sample's identity, so a label never depends on iteration order."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def derive_labels(
    con: duckdb.DuckDBPyConnection,
    tasks: Iterable[str],
    config: LogsConfig | None = None,
    *,
    truth: dict[str, set[str]] | None = None,
    exclude: Iterable[str] = (),
) -> Iterator[DerivedLabel]:
    """Labelled judge samples for `tasks` (interests, tags, explanations) from the train interactions of every user
    not in `exclude` (see module doc for the rules)."""
    cfg = config or LogsConfig()
    tasks = list(tasks)
    for t in tasks:
        get_task(t)
    items = con.execute("SELECT item_id, title, category_leaf, category_path, brand FROM items ORDER BY item_id"
                        ).fetchall()
    by_leaf: dict[str, list[tuple[str, str, list[str], str | None]]] = {}
    for iid, title, leaf, path, brand in items:
        if leaf:
            by_leaf.setdefault(leaf, []).append((iid, title or iid, list(path or [leaf]), brand))
    leaves = sorted(by_leaf)
    source = SOURCES[0] if truth is not None else SOURCES[1]
    for ctx in log_contexts(con, cfg, exclude=exclude):
        uid, record = ctx.user_id, ctx.record
        future_leaves = {e.leaf for e in ctx.future if e.leaf}
        relevant = future_leaves | (truth.get(uid, set()) if truth is not None else set())
        seen = {e.leaf for e in ctx.history if e.leaf} | relevant
        unrelated = [leaf for leaf in leaves if leaf not in seen]
        rng = _rng(uid, ctx.round, cfg.seed)
        base = {"user_id": uid, "attributes": record.get("attributes") or {},
                "behaviors": record.get("compressed", "")}
        interests = [it["interest"] for it in ctx.interests]
        sid = f"{uid}@{ctx.cut.date().isoformat()}"

        def other_item(rng: np.random.Generator = rng, unrelated: list[str] = unrelated
                       ) -> tuple[str, str, list[str], str | None] | None:
            if not unrelated:
                return None
            pool = by_leaf[unrelated[int(rng.integers(len(unrelated)))]]
            return pool[int(rng.integers(len(pool)))]

        if "interests" in tasks:
            for it in ctx.interests:
                leaf = ctx.leaf_of[it["interest"]]
                reason = "strong correlation" if leaf in relevant else "weak correlation"
                yield DerivedLabel("interests", {**base, "sample_id": f"{sid}:{it['interest']}",
                                                 "interest": it["interest"], "reason": it["reason"]},
                                   {"willingness": "spontaneity", "reasonableness": reason}, source,
                                   "from_logs")
            neg = other_item()
            if neg is not None and ctx.history:
                cited = ctx.history[int(rng.integers(len(ctx.history)))]
                leaf = neg[2][-1]
                hallucinated = bool(rng.integers(2))
                named = title_tag(neg[1], neg[3]) if hallucinated else title_tag(cited.title, cited.brand)
                yield DerivedLabel("interests", {
                    **base, "sample_id": f"{sid}:{leaf.lower()}", "interest": leaf.lower(),
                    "reason": f"engaged with {named or neg[1]}"},
                    {"willingness": "spontaneity",
                     "reasonableness": "hallucination" if hallucinated else "no correlation"},
                    source, "hallucinated" if hallucinated else "unrelated")
        if "tags" in tasks or "explanations" in tasks:
            yield from _tags_and_explanations(tasks, ctx, base, sid, interests, relevant, other_item, rng, source)


def _tags_and_explanations(tasks: list[str], ctx: Any, base: dict[str, Any], sid: str, interests: list[str],
                           relevant: set[str], other_item: Any, rng: np.random.Generator, source: str
                           ) -> Iterator[DerivedLabel]:
    yes = dict.fromkeys(("relevance", "consistency", "specificity", "validity"), "Yes")
    for it in ctx.interests:
        interest, leaf = it["interest"], ctx.leaf_of[it["interest"]]
        cited = max((e for e in ctx.history if e.leaf == leaf), key=lambda e: e.ts)
        reason = tag_reason(interest, cited)
        tag_base = {**base, "interests": interests, "interest": interest, "reason": reason}
        engaged = [e for e in ctx.future if e.leaf == leaf]
        if "tags" in tasks:
            for e in engaged[:2]:
                tag = title_tag(e.title, e.brand)
                if tag:
                    yield DerivedLabel("tags", {**tag_base, "sample_id": f"{sid}:{tag}", "tag": tag}, dict(yes),
                                       source, "engaged")
            neg = other_item()
            if neg is not None:
                tag = title_tag(neg[1], neg[3])
                if tag:
                    yield DerivedLabel("tags", {**tag_base, "sample_id": f"{sid}:{tag}", "tag": tag},
                                       {**yes, "relevance": "No", "consistency": "No"}, source, "unrelated")
            others = [e for e in ctx.future if e.leaf and e.leaf != leaf and e.leaf in relevant]
            if others:
                e = others[int(rng.integers(len(others)))]
                tag = title_tag(e.title, e.brand)
                if tag:
                    yield DerivedLabel("tags", {**tag_base, "sample_id": f"{sid}:{tag}>{interest}", "tag": tag},
                                       {**yes, "relevance": "No"}, source, "wrong_interest")
            broad = f"{interest} {('accessories', 'products', 'gear')[int(rng.integers(3))]}"
            yield DerivedLabel("tags", {**tag_base, "sample_id": f"{sid}:{broad}", "tag": broad},
                               {**yes, "specificity": "No"}, source, "broad")
        if "explanations" in tasks and engaged:
            yield from _explanations(ctx, base, sid, interest, leaf, engaged[0], other_item, rng, source)


_GOOD = "Because you enjoy {interest}, this {tag} is a {category} that suits it."
_HARD_SELL = " Buy now, limited time offer!"


def _explanations(ctx: Any, base: dict[str, Any], sid: str, interest: str, leaf: str, e: Any, other_item: Any,
                  rng: np.random.Generator, source: str) -> Iterator[DerivedLabel]:
    tag = title_tag(e.title, e.brand) or e.title
    item = {"title": e.title, "category": leaf}
    ex_base = {"user_id": base["user_id"], "attributes": base["attributes"], "item_id": e.item_id,
               "interest": interest, "item": item}
    good = {"relevance": "Excellent", "factuality": "Excellent", "clarity": "Good", "safety": "Yes"}
    text = _GOOD.format(interest=interest, tag=tag, category=leaf.lower())
    yield DerivedLabel("explanations", {**ex_base, "sample_id": f"{sid}:{e.item_id}:good", "explanation": text},
                       good, source, "grounded")
    neg = other_item()
    variant = int(rng.integers(4))
    if variant == 0 and neg is not None:  # names another item's category: not true of this item
        wrong = _GOOD.format(interest=interest, tag=tag, category=neg[2][-1].lower())
        yield DerivedLabel("explanations", {**ex_base, "sample_id": f"{sid}:{e.item_id}:wrongcat",
                                            "explanation": wrong}, {**good, "factuality": "Bad"}, source,
                           "wrong_category")
    elif variant == 1 and neg is not None:  # the interest of an unrelated category: no link
        other = neg[2][-1].lower()
        text = _GOOD.format(interest=other, tag=tag, category=leaf.lower())
        yield DerivedLabel("explanations", {**ex_base, "interest": other, "sample_id": f"{sid}:{e.item_id}:other",
                                            "explanation": text}, {**good, "relevance": "Bad"}, source,
                           "wrong_interest")
    elif variant == 2:
        words = tag.split() or [tag]
        text = " ".join([words[-1]] * 3 + ["good", words[-1], "good", "buy", words[-1]])
        yield DerivedLabel("explanations", {**ex_base, "sample_id": f"{sid}:{e.item_id}:stutter",
                                            "explanation": text},
                           {**good, "relevance": "Bad", "factuality": "Good", "clarity": "Bad"}, source, "stutter")
    else:
        yield DerivedLabel("explanations", {**ex_base, "sample_id": f"{sid}:{e.item_id}:hardsell",
                                            "explanation": text + _HARD_SELL}, {**good, "safety": "No"}, source,
                           "hard_sell")


def store_derived(buffer: duckdb.DuckDBPyConnection, labels: Iterable[DerivedLabel]) -> dict[str, dict[str, int]]:
    """Put derived labels in the judge buffer (annotator "rules", source as derived); counts per task."""
    from recgpt_cli.judge.buffer import add_labelled

    by_task: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, str]]]] = {}
    for d in labels:
        by_task.setdefault((d.task, d.source), []).append((d.sample, d.labels))
    return {task: add_labelled(buffer, task, pairs, annotator="rules", source=source)
            for (task, source), pairs in sorted(by_task.items())}
