"""Curriculum samples (RecGPT Appendix C, Table 10): small domain tasks built from the catalogue and the logs,
trained stage by stage before the target tasks (`recgpt align sft --curriculum appendix-c`).

Foundation (the paper's first three subtasks):
- `query_category`: a search query -> the category of what the user engaged with right after it (the leaf most
  sessions of that query ended in; ties by name).
- `query_item_relevance`: a query and an item -> Yes (an item engaged with right after the query) or No (an item of
  another category; one of the same top-level category when there is one: a hard negative), one of each per query.
- `title_key_info`: an item title -> its brand, its core product phrase (`data.title_tag`) and its category, from
  the catalogue.
Intermediate:
- `what_to_buy`: a user's attributes and a query -> the broader shopping domain (the first two levels of the
  engaged item's category path).
- `query_rewriting`: a query -> the precise product phrase of the item the session engaged with most, when the two
  share a word (purification: a session that wandered off is not a rewrite).
Advanced:
- `inductive_reasoning`: titles a user engaged with in one category -> the interest (the category) and its domain.

Split-honest like `data.build_from_logs`: a session counts only when the search and the engagement are in the
user's train period (at or before the user's last train interaction) and the item is not one of the user's
valid/test items; users in `exclude` (the ones a benchmark scores) contribute nothing. A session is a search and the
item engagements after it, before the next search and within `session_minutes`; its main item is the one engaged
with most often (ties: the first). Balancing: at most `max_per_category` samples per task and category, chosen by
sample hash (stable, spread over queries and users). The stage order is a file: `presets/curriculum/*.toml`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import orjson
from pydantic import BaseModel, ConfigDict, Field

from recgpt_cli.align.data import title_tag
from recgpt_cli.align.samples import Sample, reply_json
from recgpt_cli.errors import BadInput
from recgpt_cli.explain import ItemInfo, read_items
from recgpt_cli.interests import format_attributes
from recgpt_cli.llm.prompts import Prompt, load_prompt
from recgpt_cli.splits import split_info
from recgpt_cli.tags import MIN_TAG_CHARS

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

LEVELS = {
    "foundation": ("query_category", "query_item_relevance", "title_key_info"),
    "intermediate": ("what_to_buy", "query_rewriting"),
    "advanced": ("inductive_reasoning",),
}
CURRICULUM_TASKS = tuple(t for tasks in LEVELS.values() for t in tasks)
MIN_INDUCTIVE_ITEMS = 3  # titles shown for an inductive sample: at least this many, at most MAX_INDUCTIVE_ITEMS
MAX_INDUCTIVE_ITEMS = 5
_TEXT = Field(min_length=1, max_length=80)  # every string the curriculum asks for is short


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueryCategory(_Out):
    category: str = _TEXT


class QueryItemRelevance(_Out):
    relevant: Literal["Yes", "No"]


class TitleKeyInfo(_Out):
    brand: str = _TEXT
    product: str = _TEXT
    category: str = _TEXT


class WhatToBuy(_Out):
    domain: str = _TEXT


class QueryRewrite(_Out):
    rewrite: str = _TEXT


class InductiveInterest(_Out):
    interest: str = _TEXT
    domain: str = _TEXT


OUTPUTS: dict[str, type[_Out]] = {
    "query_category": QueryCategory, "query_item_relevance": QueryItemRelevance, "title_key_info": TitleKeyInfo,
    "what_to_buy": WhatToBuy, "query_rewriting": QueryRewrite, "inductive_reasoning": InductiveInterest,
}


def curriculum_prompt(task: str) -> Prompt:
    """`prompts/curriculum/<task>.md`, checked to declare the task's output model."""
    p = load_prompt(f"curriculum/{task}")
    if p.task != task or p.output != OUTPUTS[task].__name__:
        raise BadInput(f"{p.path}: declares task {p.task!r} / output {p.output!r}, expected {task!r} / "
                       f"{OUTPUTS[task].__name__!r}")
    return p


def resolve_tasks(names: Iterable[str]) -> list[str]:
    """`--task` values for `--source curriculum`: subtask names, level names, or `curriculum` (all), in
    curriculum order."""
    wanted: set[str] = set()
    for name in names:
        if name == "curriculum":
            wanted |= set(CURRICULUM_TASKS)
        elif name in LEVELS:
            wanted |= set(LEVELS[name])
        elif name in CURRICULUM_TASKS:
            wanted.add(name)
        else:
            raise BadInput(f"--task {name}: the curriculum builds {', '.join(CURRICULUM_TASKS)} (or a level: "
                           f"{', '.join(LEVELS)}, or `curriculum` for all)")
    return [t for t in CURRICULUM_TASKS if t in wanted]


# ---- the stage order file ----

@dataclass(frozen=True)
class Stage:
    name: str
    tasks: tuple[str, ...]


def curriculum_dir() -> Path:
    from recgpt_cli.towers.config import presets_dir

    return presets_dir() / "curriculum"


def load_order(name_or_path: str | Path) -> list[Stage]:
    """Stages from `presets/curriculum/<name>.toml` or a TOML file: `[[stage]]` tables with `name` and `tasks`
    (prompt task names), trained in file order."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = curriculum_dir() / f"{name_or_path}.toml"
        if not path.exists():
            known = sorted(p.stem for p in curriculum_dir().glob("*.toml"))
            raise BadInput(f"--curriculum {name_or_path}: no such curriculum", f"use one of: {', '.join(known)}, "
                           "or a .toml file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{path}: {exc}") from None
    raw = doc.get("stage")
    if not isinstance(raw, list) or not raw:
        raise BadInput(f"{path}: no [[stage]] tables", "each stage: name = \"...\", tasks = [\"...\", ...]")
    stages = []
    for i, st in enumerate(raw, start=1):
        tasks = st.get("tasks") if isinstance(st, dict) else None
        if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) and t for t in tasks)):
            raise BadInput(f"{path}: stage {i} needs a non-empty `tasks` list of task names")
        unknown = set(st) - {"name", "tasks"}
        if unknown:
            raise BadInput(f"{path}: stage {i} has unknown keys: {', '.join(sorted(unknown))}")
        stages.append(Stage(str(st.get("name", f"stage {i}")), tuple(tasks)))
    seen = [t for s in stages for t in s.tasks]
    twice = sorted({t for t in seen if seen.count(t) > 1})
    if twice:
        raise BadInput(f"{path}: a task in two stages: {', '.join(twice)}")
    return stages


# ---- sessions from the logs ----

@dataclass
class CurriculumConfig:
    protocol: str = "loo"
    session_minutes: int = 60  # engagements this long after a search (and before the next) belong to it
    max_per_category: int = 10  # per task and category (leaf)


@dataclass
class Session:
    user_id: str
    ts: datetime
    query: str
    engaged: list[str] = field(default_factory=list)  # item ids, one per engagement event, in time order

    @property
    def main_item(self) -> str:
        counts = Counter(self.engaged)
        return max(dict.fromkeys(self.engaged), key=lambda i: counts[i])  # most events; ties: the first


_SESSIONS = """
WITH cut AS (SELECT user_id, max(ts) AS cut FROM splits WHERE protocol = $protocol AND split = 'train'
             GROUP BY user_id),
hidden AS (SELECT user_id, item_id FROM splits WHERE protocol = $protocol AND split <> 'train'),
s AS (SELECT user_id, ts, query, lead(ts) OVER (PARTITION BY user_id ORDER BY ts) AS next_ts
      FROM behaviors WHERE type = 'search' AND query IS NOT NULL AND trim(query) <> '')
SELECT s.user_id, s.ts, s.query, b.item_id
FROM s JOIN cut USING (user_id)
JOIN behaviors b ON b.user_id = s.user_id AND b.item_id IS NOT NULL AND b.ts > s.ts
     AND b.ts <= s.ts + to_minutes(CAST($minutes AS BIGINT)) AND (s.next_ts IS NULL OR b.ts < s.next_ts)
WHERE b.ts <= cut.cut
  AND NOT EXISTS (SELECT 1 FROM hidden h WHERE h.user_id = b.user_id AND h.item_id = b.item_id)
ORDER BY s.user_id, s.ts, b.ts, b.item_id
"""


def _norm(query: str) -> str:
    return " ".join(query.lower().split())


def sessions(con: duckdb.DuckDBPyConnection, cfg: CurriculumConfig, exclude: Iterable[str] = ()) -> list[Session]:
    """Search sessions in the users' train periods that engaged with at least one visible item."""
    skip = set(exclude)
    out: dict[tuple[str, datetime, str], Session] = {}
    for user, ts, query, item in con.execute(_SESSIONS, {"protocol": cfg.protocol,
                                                         "minutes": cfg.session_minutes}).fetchall():
        if user in skip:
            continue
        out.setdefault((user, ts, query), Session(user, ts, _norm(query))).engaged.append(item)
    return list(out.values())


# ---- the builders ----

def _sample(prompt: Prompt, variables: dict[str, Any], reply: dict[str, Any], *, user_id: str | None,
            category: str, meta: dict[str, Any]) -> Sample:
    return Sample(prompt.task, "curriculum", prompt.render(variables), reply_json(reply), user_id=user_id,
                  category=category, meta=meta)


def _query_category(ss: list[Session], items: dict[str, ItemInfo], p: Prompt) -> Iterator[Sample]:
    leaves: dict[str, Counter[str]] = defaultdict(Counter)
    for s in ss:
        leaf = items[s.main_item].leaf
        if leaf:
            leaves[s.query][leaf] += 1
    for query, counts in sorted(leaves.items()):
        leaf, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        yield _sample(p, {"query": query}, {"category": leaf}, user_id=None, category=leaf,
                      meta={"sessions": sum(counts.values()), "agreement": round(n / sum(counts.values()), 3)})


def _stable_pick(key: str, options: Sequence[str]) -> str:
    """A seeded-by-content choice: the same query always gets the same negative."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)
    return options[h % len(options)]


def _query_item_relevance(ss: list[Session], items: dict[str, ItemInfo], p: Prompt) -> Iterator[Sample]:
    by_query: dict[str, list[Session]] = defaultdict(list)
    for s in ss:
        by_query[s.query].append(s)
    by_leaf: dict[str, list[str]] = defaultdict(list)
    for it in sorted(items.values(), key=lambda it: it.item_id):
        if it.leaf:
            by_leaf[it.leaf].append(it.item_id)
    for query, group in sorted(by_query.items()):
        first = min(group, key=lambda s: (s.ts, s.user_id))
        pos = items[first.main_item]
        if not pos.leaf:
            continue
        engaged_leaves = {items[i].leaf for s in group for i in s.engaged}
        others = [leaf for leaf in sorted(by_leaf) if leaf not in engaged_leaves]
        hard = [leaf for leaf in others if items[by_leaf[leaf][0]].category_path[:1] == pos.category_path[:1]]
        if not others:
            continue
        neg = items[_stable_pick(query, by_leaf[_stable_pick(query + "/leaf", hard or others)])]
        for item, label in ((pos, "Yes"), (neg, "No")):
            yield _sample(p, {"query": query, "title": item.title, "category_path": " > ".join(item.category_path)},
                          {"relevant": label}, user_id=None, category=pos.leaf,
                          meta={"query": query, "item_id": item.item_id,
                                "hard_negative": bool(hard) and label == "No"})


def _title_key_info(items: dict[str, ItemInfo], p: Prompt) -> Iterator[Sample]:
    for it in sorted(items.values(), key=lambda it: it.item_id):
        product = title_tag(it.title, it.brand)
        if not it.leaf or len(product) < MIN_TAG_CHARS:
            continue
        yield _sample(p, {"title": it.title}, {"brand": it.brand or "none", "product": product, "category": it.leaf},
                      user_id=None, category=it.leaf, meta={"item_id": it.item_id})


def _what_to_buy(ss: list[Session], items: dict[str, ItemInfo], attrs: dict[str, str], p: Prompt
                 ) -> Iterator[Sample]:
    for s in ss:
        it = items[s.main_item]
        if it.leaf and len(it.category_path) >= 2:
            yield _sample(p, {"attributes": attrs.get(s.user_id, "unknown"), "query": s.query},
                          {"domain": it.domain}, user_id=s.user_id, category=it.leaf,
                          meta={"item_id": it.item_id, "ts": s.ts.isoformat()})


def _words(text: str) -> set[str]:
    return {w for w in text.lower().split() if len(w) >= 3}


def _query_rewriting(ss: list[Session], items: dict[str, ItemInfo], p: Prompt) -> Iterator[Sample]:
    for s in ss:
        it = items[s.main_item]
        rewrite = title_tag(it.title, it.brand)
        # purification: a rewrite must keep a word of the query (a session that wandered off is not a rewrite)
        if it.leaf and len(rewrite) >= MIN_TAG_CHARS and rewrite != s.query and _words(rewrite) & _words(s.query):
            yield _sample(p, {"query": s.query}, {"rewrite": rewrite}, user_id=s.user_id, category=it.leaf,
                          meta={"item_id": it.item_id, "ts": s.ts.isoformat()})


_TRAIN_ITEMS = """
SELECT s.user_id, s.item_id, max(s.ts) AS ts FROM splits s
WHERE s.protocol = $protocol AND s.split = 'train' GROUP BY ALL ORDER BY s.user_id, ts DESC, s.item_id
"""


def _inductive(con: duckdb.DuckDBPyConnection, cfg: CurriculumConfig, items: dict[str, ItemInfo],
               skip: set[str], p: Prompt) -> Iterator[Sample]:
    by_user_leaf: dict[tuple[str, str], list[str]] = defaultdict(list)
    for user, item, _ts in con.execute(_TRAIN_ITEMS, {"protocol": cfg.protocol}).fetchall():
        it = items.get(item)
        if user not in skip and it is not None and it.leaf:
            by_user_leaf[(user, it.leaf)].append(item)  # newest first
    for (user, leaf), ids in sorted(by_user_leaf.items()):
        if len(ids) < MIN_INDUCTIVE_ITEMS:
            continue
        shown = ids[:MAX_INDUCTIVE_ITEMS]
        titles = "\n".join(f"- {items[i].title}" for i in shown)
        yield _sample(p, {"titles": titles}, {"interest": leaf.lower(), "domain": items[shown[0]].domain},
                      user_id=user, category=leaf, meta={"items": shown})


def _unit(s: Sample) -> str:
    """What balancing counts: a sample, or a query's Yes/No pair as one."""
    return str(s.meta.get("query")) if s.task == "query_item_relevance" else s.hash


def _balanced(samples: Iterable[Sample], cap: int) -> list[Sample]:
    """At most `cap` units (`_unit`) per (task, category), those whose key hashes lowest (stable and spread out
    over queries and users); duplicates (same hash) once."""
    unique = {s.hash: s for s in samples}
    units: dict[tuple[str, str], dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for h in sorted(unique):
        s = unique[h]
        units[(s.task, s.category or "")][_unit(s)].append(s)
    out = []
    for key in sorted(units):
        chosen = sorted(units[key], key=lambda u: hashlib.sha256(u.encode()).hexdigest())[:cap]
        out += [s for u in chosen for s in units[key][u]]
    return out


def build_curriculum(
    con: duckdb.DuckDBPyConnection,
    tasks: Sequence[str],
    config: CurriculumConfig | None = None,
    *,
    exclude: Iterable[str] = (),
) -> tuple[list[Sample], dict[str, dict[str, int]]]:
    """Curriculum samples for `tasks` (names as `resolve_tasks` returns), balanced, and per task the counts
    (`built` before balancing, `kept` after)."""
    cfg = config or CurriculumConfig()
    tasks = resolve_tasks(tasks)
    if split_info(con, cfg.protocol) is None:
        raise BadInput(f"the store has no {cfg.protocol!r} split",
                       f"make it first: recgpt train-towers --protocol {cfg.protocol} (or import then split)")
    skip = set(exclude)
    items = read_items(con)
    ss = sessions(con, cfg, skip) if set(tasks) - {"title_key_info", "inductive_reasoning"} else []
    attrs = {u: format_attributes(orjson.loads(a) if a else {}) or "unknown"
             for u, a in con.execute("SELECT user_id, attributes FROM users").fetchall()}
    counts: dict[str, dict[str, int]] = {}
    out: list[Sample] = []
    for task in tasks:
        p = curriculum_prompt(task)
        built: Iterable[Sample]
        if task == "query_category":
            built = _query_category(ss, items, p)
        elif task == "query_item_relevance":
            built = _query_item_relevance(ss, items, p)
        elif task == "title_key_info":
            built = _title_key_info(items, p)
        elif task == "what_to_buy":
            built = _what_to_buy(ss, items, attrs, p)
        elif task == "query_rewriting":
            built = _query_rewriting(ss, items, p)
        else:
            built = _inductive(con, cfg, items, skip, p)
        every = list(built)
        for s in every:
            if s.user_id:  # cut from this user's train history of the split (align.provenance)
                s.meta["split"] = cfg.protocol
        kept = _balanced(every, cfg.max_per_category)
        counts[task] = {"built": len({s.hash for s in every}), "kept": len(kept)}
        out += kept
    return out, counts

