"""Alignment training data (RecGPT §2.1.2, §2.2.2): chat samples rendered with the prompt files and variables the
stages serve with (train = serve), each an assistant reply in the JSON the stage's schema decodes.

Source `logs` (§2.2.2 "incremental learning", the paper's own recipe), from a store with a split:

- For each user not excluded (`exclude` = the users a benchmark scores) and `cuts` cut points in the user's
  *train* interactions (never valid or test), the history is compressed as it was at the cut
  (`compress.SplitView(cuts=...)`, the same split-aware compression `compress` uses).
- Interests from logs: the leaf categories the user engaged with at least MIN_LEAF_ITEMS times before the cut,
  ranked by count behind the category of the newest engagement (`rank="newest"`, the default: the next item
  shares it for 55% of sample_data's validation users, where the 3 most frequent categories hold it for 40%),
  by count alone (`rank="count"`) or by a recency-weighted count (`rank="recency"`: each engagement weighs
  RECENCY_DECAY ** the number of engagements after it); "long-term" when they span two or more months, else
  "short-term"; the reason counts the items and names the newest one. They must pass the interest stage's own
  rules (`interests.clean_interests`).
- Tags from logs: for each such interest, the items the user engaged with in the `window_days` after the cut in
  that interest's categories, each written as a tag from its title (brand, sizes and the part after a comma
  dropped: the paper's "modifier + core word" shape), with a reason that cites the newest history item of the
  same category. Purification (§2.2.2 step 1) = the tag stage's own rules with the catalogue: a tag whose φ
  category is not the interest's (`implausible`), that no item carries (`invalid`), that repeats the last 30
  days (`stale`), names an unsearched brand, or is vague, is dropped. Balancing (step 3): at most MAX_TAGS_PER_USER
  tags per user and at most MAX_PER_CATEGORY samples per user and category.
- A slice of the logs (`since` / `until`, §2.2.2's bi-weekly increments): only cuts on or after `since`, and
  nothing on or after `until` (cuts and targets alike), so a model trained on the slice before a date has not seen
  the logs after it and `align sft --from` can continue it on the next slice. The history before a cut is the
  user's whole train history up to it, as serving sees it.

Samples (`align.samples.Sample`) are content-addressed and stored in DuckDB or JSONL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from recgpt_cli.align.samples import Sample, reply_json
from recgpt_cli.catalogue import Catalogue, title_tag
from recgpt_cli.compress import DEFAULT_MAX_TOKENS, SplitView, compress_users
from recgpt_cli.errors import BadInput
from recgpt_cli.interests import MinedInterest, clean_interests, mining_variables, resolve_prompt
from recgpt_cli.llm.prompts import Prompt
from recgpt_cli.splits import load_split, split_info
from recgpt_cli.tags import MIN_TAG_CHARS, PredictedTag, clean_tags, tag_variables
from recgpt_cli.text import clip_words
from recgpt_cli.tokens import TokenCounter, count_tokens

MIN_HISTORY = 5  # train interactions before a cut
MIN_LEAF_ITEMS = 2  # a category engaged with fewer times is not an interest
MAX_TAGS_PER_USER = 80  # §2.2.2 step 3
MAX_PER_CATEGORY = 2  # samples per user and category, §2.2.2 step 3
RECENCY_DECAY = 0.9  # rank="recency": an engagement 7 engagements old weighs half of the newest
INTEREST_RANKS = ("newest", "count", "recency")
REASON_CHARS = 100  # PredictedTag.reason's bound
INTEREST_REASON_CHARS = 120  # MinedInterest.reason's bound

# ---- tags and interests from logs ----

@dataclass(frozen=True)
class Engagement:
    item_id: str
    ts: datetime
    title: str
    leaf: str | None
    brand: str | None


def log_interests(history: Sequence[Engagement], cut: datetime, max_interests: int,
                  rank: str = "newest") -> list[dict[str, Any]]:
    """Interests from logs at `cut`: categories engaged with >= MIN_LEAF_ITEMS times, ranked by count or by a
    recency-weighted count (module doc), ties newest first, then name; stage long-term when they span >= 2
    months. `newest` ranks by count behind the newest engagement's category (even one engagement): where the user
    is now (compress shows that engagement, a click too)."""
    if rank not in INTEREST_RANKS:
        raise ValueError(f"rank {rank!r}: one of {', '.join(INTEREST_RANKS)}")
    by_leaf: dict[str, list[Engagement]] = defaultdict(list)
    for e in history:
        if e.leaf:
            by_leaf[e.leaf].append(e)
    weight: dict[str, float] = defaultdict(float)
    ordered = sorted(history, key=lambda e: e.ts)  # stable: same-time engagements keep the history's order
    for age, e in enumerate(reversed(ordered)):
        if e.leaf:
            weight[e.leaf] += RECENCY_DECAY ** age if rank == "recency" else 1.0
    ranked = sorted((leaf for leaf, es in by_leaf.items() if len(es) >= MIN_LEAF_ITEMS),
                    key=lambda leaf: (-weight[leaf], -max(e.ts for e in by_leaf[leaf]).timestamp(), leaf))
    if rank == "newest" and ordered and ordered[-1].leaf:
        ranked = [ordered[-1].leaf, *(leaf for leaf in ranked if leaf != ordered[-1].leaf)]
    out = []
    for leaf in ranked[:max_interests]:
        es = sorted(by_leaf[leaf], key=lambda e: e.ts)
        months = {(e.ts.year, e.ts.month) for e in es}
        newest = es[-1]
        reason = f"{len(es)} {leaf.lower()} item{'s' * (len(es) > 1)} over {len(months)} " \
                 f"month{'s' * (len(months) > 1)}, lately {title_tag(newest.title, newest.brand) or newest.title}"
        out.append({"interest": leaf.lower(), "stage": "long-term" if len(months) >= 2 else "short-term",
                    "reason": clip_words(reason, INTEREST_REASON_CHARS), "leaf": leaf})
    return out


def tag_reason(interest: str, cited: Engagement) -> str:
    """A reason that cites the user's history: the newest engaged item of the interest's category."""
    return clip_words(f"after {title_tag(cited.title, cited.brand) or cited.title} in your {interest} history",
                 REASON_CHARS)


@dataclass
class LogsConfig:
    protocol: str = "loo"
    cuts: int = 2  # cut points per user, evenly spaced in the train interactions
    window_days: int = 30  # targets: engagements this many days after the cut
    max_interests: int = 4  # as the bench asks (mine-interests --max-interests): the newest engagement's + 3 by count
    interest_rank: str = "newest"  # log_interests' ranking
    tags_per_call: int = 3  # as the bench asks (predict-tags --max-tags-per-call)
    history_tokens: int = DEFAULT_MAX_TOKENS  # compress's budget: train = serve
    seed: int = 0
    max_users: int | None = None
    since: datetime | None = None  # the slice of logs: cuts on or after this time
    until: datetime | None = None  # ... and nothing (cut or target) on or after this one


def _cut_points(n: int, cuts: int, start: int = 0) -> list[int]:
    """Indices i (history = interactions[:i]) evenly spaced over interactions[start:n] (the slice), each with
    >= MIN_HISTORY before, the cut's own interaction in the slice, and >= 1 after it within the slice."""
    m = n - start
    if n < MIN_HISTORY + 1 or m < 2:
        return []
    points = {start + int(round(m * (j + 1) / (cuts + 1))) for j in range(cuts)}
    return sorted(i for i in points if max(MIN_HISTORY, start + 1) <= i <= n - 1)


def _in_slice(es: list[Engagement], cfg: LogsConfig) -> tuple[int, int]:
    """[start, end) of a user's time-ordered engagements that fall in the config's slice of the logs."""
    start = 0 if cfg.since is None else next((k for k, e in enumerate(es) if e.ts >= cfg.since), len(es))
    end = len(es) if cfg.until is None else next((k for k, e in enumerate(es) if e.ts >= cfg.until), len(es))
    return start, end


@dataclass
class CutContext:
    """One user at one cut: the compressed history as it was then, and what came before and after it."""

    user_id: str
    round: int
    cut: datetime
    record: dict[str, Any]  # the `compress` record (split-aware, cut at `cut`)
    history: list[Engagement]  # train engagements up to the cut
    future: list[Engagement]  # train engagements within `window_days` after it
    interests: list[dict[str, Any]]  # interests from logs that pass the interest rules, with interest_id
    leaf_of: dict[str, str]  # interest text -> its category


def log_contexts(
    con: duckdb.DuckDBPyConnection,
    config: LogsConfig | None = None,
    *,
    exclude: Iterable[str] = (),
    token_counter: TokenCounter = count_tokens,
) -> Iterator[CutContext]:
    """Every (user, cut) of the train interactions of users not in `exclude` that has an interest from logs."""
    cfg = config or LogsConfig()
    if cfg.since is not None and cfg.until is not None and cfg.since >= cfg.until:
        raise BadInput(f"--since {cfg.since:%Y-%m-%d} is not before --until {cfg.until:%Y-%m-%d}")
    if split_info(con, cfg.protocol) is None:
        raise BadInput(f"the store has no {cfg.protocol!r} split",
                       f"make it first: recgpt train-towers --protocol {cfg.protocol} (or import then split)")
    split = load_split(con, cfg.protocol)
    info = {r[0]: (r[1], r[2], r[3]) for r in con.execute("SELECT item_id, title, category_leaf, brand FROM items")
            .fetchall()}
    skip = set(exclude)
    train = split.train
    order = np.lexsort((train.item, train.ts, train.user))
    by_user: dict[str, list[Engagement]] = defaultdict(list)
    for j in order:
        uid = split.user_ids[int(train.user[j])]
        if uid in skip:
            continue
        iid = split.item_ids[int(train.item[j])]
        title, leaf, brand = info.get(iid, (iid, None, None))
        by_user[uid].append(Engagement(iid, train.ts[j].astype("datetime64[us]").item(), title, leaf, brand))
    users = sorted(by_user)
    if cfg.max_users is not None:
        rng = np.random.default_rng(cfg.seed)
        users = sorted(rng.choice(users, size=min(cfg.max_users, len(users)), replace=False).tolist())
    plans: list[dict[str, tuple[int, datetime]]] = [{} for _ in range(cfg.cuts)]
    ends: dict[str, int] = {}
    for uid in users:
        es = by_user[uid]
        start, ends[uid] = _in_slice(es, cfg)
        for r, i in enumerate(_cut_points(ends[uid], cfg.cuts, start)):
            plans[r][uid] = (i, es[i - 1].ts)
    for r, plan in enumerate(plans):
        if not plan:
            continue
        view = SplitView(cfg.protocol, "valid", cuts=tuple((u, t) for u, (_, t) in sorted(plan.items())))
        # the reference date is each user's cut (the view's); `date` only matters for users without one
        compressed = compress_users(con, date=max(t for _, t in plan.values()).date(), max_tokens=cfg.history_tokens,
                                    user_ids=sorted(plan), token_counter=token_counter, view=view)
        for user in compressed:
            record = user.to_record()
            i, cut = plan[user.user_id]
            history, future = by_user[user.user_id][:i], by_user[user.user_id][i:ends[user.user_id]]
            future = [e for e in future if e.ts <= cut + timedelta(days=cfg.window_days)]
            # "newest" ranks one more: should the interest rules drop the newest (a category the prompt does not
            # show), the next by count takes its place
            mined = log_interests(history, cut, cfg.max_interests + (cfg.interest_rank == "newest"),
                                  cfg.interest_rank)
            kept, _ = clean_interests([MinedInterest(**{k: m[k] for k in ("interest", "stage", "reason")})
                                       for m in mined], record, max_interests=cfg.max_interests)
            if kept:
                yield CutContext(user.user_id, r, cut, record, history, future, kept,
                                 {m["interest"]: m["leaf"] for m in mined})


def build_from_logs(
    con: duckdb.DuckDBPyConnection,
    tasks: Sequence[str],
    config: LogsConfig | None = None,
    *,
    exclude: Iterable[str] = (),
    catalogue: Catalogue | None = None,
    token_counter: TokenCounter = count_tokens,
    interest_prompt: str | Path | Prompt = "interest_mining",
    tag_prompt: str | Path | Prompt = "tag_prediction",
) -> Iterator[Sample]:
    """Samples for `tasks` ("interests", "tags") from the train interactions of every user not in `exclude`."""
    cfg = config or LogsConfig()
    unknown = [t for t in tasks if t not in ("interests", "tags")]
    if unknown:
        raise BadInput(f"--task {', '.join(unknown)}: logs build interests and tags",
                       "explanation samples come from a teacher or self-training (--source teacher)")
    catalogue = catalogue or Catalogue.from_db(con)
    ip = resolve_prompt(interest_prompt, "InterestList")
    tp = resolve_prompt(tag_prompt, "TagList")
    tags_by_user: Counter[str] = Counter()
    per_category: Counter[tuple[str, str]] = Counter()
    for ctx in log_contexts(con, cfg, exclude=exclude, token_counter=token_counter):
        uid, record, day = ctx.user_id, ctx.record, ctx.cut.date()
        meta = {"cut": ctx.cut.isoformat(), "round_cut": ctx.round, "split": cfg.protocol}
        if "interests" in tasks:
            variables = mining_variables(record, day=day, max_interests=cfg.max_interests)
            target = reply_json({"interests": [{"interest": k["interest"], "stage": k["stage"],
                                                "reason": k["reason"]} for k in ctx.interests]})
            yield Sample("interest_mining", "logs", ip.render(variables), target, user_id=uid, category=None,
                         meta=meta)
        if "tags" not in tasks:
            continue
        for interest in ctx.interests:
            leaf = ctx.leaf_of.get(interest["interest"])
            if leaf is None or per_category[(uid, leaf)] >= MAX_PER_CATEGORY:
                continue
            if tags_by_user[uid] >= MAX_TAGS_PER_USER:
                break
            cited = max((e for e in ctx.history if e.leaf == leaf), key=lambda e: e.ts)
            # a title with nothing left ("M (1931)" -> "m") is what the `vague` rule would drop anyway
            candidates = [PredictedTag(item_tag=phrase, reason=tag_reason(interest["interest"], cited),
                                       serves_interest=interest["interest_id"])
                          for e in ctx.future if e.leaf == leaf
                          for phrase in [title_tag(e.title, e.brand)] if len(phrase) >= MIN_TAG_CHARS]
            room = min(cfg.tags_per_call, MAX_TAGS_PER_USER - tags_by_user[uid])
            tags, _removed = clean_tags([(c, [interest]) for c in candidates], record, day=day, n_tags=room,
                                        catalogue=catalogue)
            if not tags:
                continue
            variables = tag_variables(record, [interest], day=day, n_tags=cfg.tags_per_call, focus=True)
            target = reply_json({"tags": [{"item_tag": t["tag"], "reason": t["reason"],
                                           "serves_interest": t["interest_id"]} for t in tags]})
            tags_by_user[uid] += len(tags)
            per_category[(uid, leaf)] += 1
            yield Sample("tag_prediction", "logs", tp.render(variables), target, user_id=uid, category=leaf,
                         meta={**meta, "interest": interest["interest"], "candidates": len(candidates),
                               "kept": len(tags)})
