"""Reliable behavioural sequence compression (paper §2.1.1): the first stage of user interest mining.

1. Reliable behaviour extraction: keep intentional feedback (purchase, cart, favorite, high ratings, review_read,
   detail_view) and searches; drop ordinary clicks, which are noisy — all but the newest `session_clicks` of the
   user's newest active day (default 1), which say where the user is now (the paper's tag prompt reads clicks).
2. Item-level compression: each item becomes a short phrase, `Brand title-core (Leaf)`. Rule-based by default;
   `item_phrase` is the hook for an LLM compressor.
3. Sequence-level compression relative to a reference date D (an input, never the wall clock). Behaviours fall
   into periods: a day `2025-06-28` within the last 30 days (D-29..D), a month `2025-03` within the last 365
   days, a year `2023` beyond that. A month or year label holds only the days not already covered by a finer
   period, so labels sort lexicographically from newest to oldest.
   Step 1 (temporal-behavioural aggregation) groups items by (period, behaviour type); it runs in SQL.
   Step 2 (item-based reverse aggregation) inverts that: each item's set of (period, type) keys is its signature,
   and items with the same signature share one line, `Time1(B1,B2), Time2(B1) | Item1, Item2`. Every kept item
   appears in exactly one line, so nothing is lost unless the token budget forces truncation.

Order (deterministic, most recent first): in a signature, periods newest first, and types within a period in the
order of TYPE_ORDER (strongest intent first). Lines sort by their signature under the same order (so the line whose
newest key is newest comes first), then by first item phrase. In a line, items sort by last engagement, newest
first, then phrase. Searches appear as items `search:"query"`. Repeats of the same (period, type, item) count once.
Ratings are kept when value >= `min_rating` and shown as the behaviour `rating` without the value.

Token budget: when a user's lines exceed `max_tokens` (counted with the target model's tokenizer, see tokens.py),
the oldest periods are dropped first until the text fits, and the record says `truncated` and how many periods went.
(Should the newest period alone be over budget, its last lines are dropped too, and of the first line that does not
fit, the newest items that do are kept.) What truncation hides is not lost without a trace: a last line names the
leaf categories of the items no longer shown, most items first, `2023..2025-03(categories) | Dog Food x4, Tea x2`
(at most `summary_categories` of them, in at most a quarter of the budget). Without it a long history showed the
model only its newest weeks: at 384 tokens the next item's category was named for 41% of sample_data's validation
users, 53% with it, about as many as the whole untruncated history names (54%) (bench/README.md, prompt ceiling).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import duckdb
import orjson

from recgpt_cli.errors import BadInput, RecgptError
from recgpt_cli.schema import BEHAVIOR_TYPES, stage_row
from recgpt_cli.splits import stored_split_id
from recgpt_cli.tokens import TokenCounter, count_tokens

# Strongest intent first: the order of behaviour types inside a period.
TYPE_ORDER: tuple[str, ...] = (
    "purchase", "cart", "favorite", "rating", "review_read", "detail_view", "search", "click"
)
DEFAULT_KEEP: tuple[str, ...] = ("purchase", "cart", "favorite", "rating", "review_read", "detail_view", "search")
DAILY_DAYS = 30  # a day label for behaviours at most 29 days before the reference date
# Token budget per user. 384, not 2,048: the packaged aligned model mines better interests and tags from the shorter
# history (bench/README.md, twenty-seventh session; 50 validation users, sample_data / ml-100k): HR@30 0.64 / 0.76
# against 0.52 / 0.68 at 2,048, TAR NDCG@10 at beta 0.7 (the bench's 64-d tower then) 0.1045 / 0.0901 against
# 0.0947 / 0.0786, 12 / 16 s of LLM per user against 15 / 18. The summary line names what the budget hides.
DEFAULT_MAX_TOKENS = 384
SUMMARY_CATEGORIES = 12  # categories named by the summary line of a truncated history (0: no summary line)
SESSION_CLICKS = 1  # plain clicks of the newest active day that stay (0: none), see _WITH_SESSION
MONTHLY_DAYS = 365  # a month label up to a year back; a year label beyond
_TYPE_RANK = {t: i for i, t in enumerate(TYPE_ORDER)}


@dataclass(frozen=True)
class ItemInfo:
    """What item-level compression sees of an item."""

    item_id: str
    title: str
    category_path: tuple[str, ...] = ()
    brand: str | None = None

    @property
    def category_leaf(self) -> str | None:
        return self.category_path[-1] if self.category_path else None


ItemPhrase = Callable[[ItemInfo], str]

_CUT = re.compile(r"\s*(?:,|\||\s-\s|\s–\s|\[|\(|;)")


def rule_based_phrase(item: ItemInfo, max_words: int = 6) -> str:
    """`Brand title-core (Leaf)`: the title before its first separator (`,` `|` ` - ` `(` ...), brand not repeated,
    at most `max_words` words. E.g. "Lumina Stainless Steel Cookware Set, 5-Piece" -> "Lumina Stainless Steel
    Cookware Set (Cookware)". §2.1.1 item-level compression, without an LLM."""
    core = _CUT.split(item.title, maxsplit=1)[0].strip() or item.title.strip()
    brand = (item.brand or "").strip()
    if brand and core.lower().startswith(brand.lower()):
        core = core[len(brand) :].strip()
    words = core.split()[:max_words]
    phrase = " ".join(([brand] if brand else []) + words) or item.item_id
    leaf = item.category_leaf
    return f"{phrase} ({leaf})" if leaf else phrase


def period_label(day: date, reference: date) -> str:
    """The period a day falls in, relative to the reference date (mirrors the SQL in `_STEP1`)."""
    age = (reference - day).days
    if age < DAILY_DAYS:
        return day.isoformat()
    if age < MONTHLY_DAYS:
        return day.strftime("%Y-%m")
    return day.strftime("%Y")


@dataclass
class CompressedUser:
    """One user's compressed history: the `compress` output record (plus counts the stats table needs)."""

    user_id: str
    attributes: dict[str, Any]
    date: str
    compressed: str
    n_behaviors: int  # reliable behaviours kept, before truncation
    n_tokens_raw: int  # naive one-line-per-behaviour serialisation of the same behaviours
    n_tokens_compressed: int
    truncated: bool
    periods_dropped: int = 0
    n_items: int = 0  # distinct items and queries kept
    n_items_shown: int = 0  # of those, how many the compressed text still shows
    recent_items: list[dict[str, Any]] = field(default_factory=list)  # engaged in the last 30 days, newest first
    categories: list[str] = field(default_factory=list)  # leaf categories named, most behaviours first
    # Provenance (issue 8): the stored split and phase this history was cut for (None: every behaviour up to
    # `date`, fine for serving, refused by evaluation), and the user's cut timestamp.
    split: str | None = None
    phase: str | None = None
    cut: str | None = None
    split_id: str | None = None  # the version of the stored split (`SplitData.split_id`)

    def to_record(self) -> dict[str, Any]:
        return stage_row("compressed", asdict(self))  # schema.CompressedUser


_KEPT = """
SELECT user_id, type, ts, item_id, query, date_diff('day', CAST(ts AS DATE), $ref) AS age
FROM behaviors
WHERE ts < $end AND {reliable} {user_filter}
"""

# Split-aware (issue 8): each user sees only the interactions the phase allows (train for valid; train + valid for
# test). The user's cut is the first timestamp of their newest visible interaction; behaviours after it (searches
# too) and every behaviour on a held-out item are invisible, and ages count back from the cut's day.
_SPLIT_CTES = """WITH vis AS (SELECT user_id, max(ts) AS cut FROM splits
             WHERE protocol = $protocol AND list_contains($visible, split) GROUP BY user_id),
hidden AS (SELECT user_id, item_id FROM splits WHERE protocol = $protocol AND NOT list_contains($visible, split))
"""
# With given cuts (alignment data, a history as it was at an earlier time): the cut is the given timestamp, never
# later than the phase's own, and only users with a given cut have a history.
_GIVEN_CUT_CTES = """WITH vis AS (SELECT s.user_id, least(max(s.ts), any_value(c.cut)) AS cut FROM splits s
             JOIN (SELECT unnest($cut_users) AS user_id, unnest($cut_ts) AS cut) c USING (user_id)
             WHERE s.protocol = $protocol AND list_contains($visible, s.split) GROUP BY s.user_id),
hidden AS (SELECT user_id, item_id FROM splits WHERE protocol = $protocol AND NOT list_contains($visible, split))
"""
_VISIBLE_ROWS = """SELECT b.*, vis.cut FROM behaviors b JOIN vis USING (user_id)
WHERE b.ts <= vis.cut AND NOT EXISTS (SELECT 1 FROM hidden h WHERE h.user_id = b.user_id AND h.item_id = b.item_id)
"""
_KEPT_SPLIT = """
SELECT user_id, type, ts, item_id, query, date_diff('day', CAST(ts AS DATE), CAST(cut AS DATE)) AS age
FROM ({visible})
WHERE {reliable} {user_filter}
"""

_RELIABLE = "(list_contains($types, type) AND (type <> 'rating' OR value >= $min_rating))"
# Session clicks: the reliable rows plus the user's newest plain clicks made on their newest active day (at most
# $session_clicks). A click is noise as evidence of a lasting interest (§2.1.1) but it is where the user is now:
# the next item shares the newest engagement's category for 55% of sample_data's validation users, the newest
# reliable one's for 30% (bench/README.md, twenty-fourth session).
_WITH_SESSION = """
SELECT user_id, type, ts, item_id, query, age FROM (
    SELECT *, min(age) OVER (PARTITION BY user_id) AS newest_age,
           row_number() OVER (PARTITION BY user_id, type = 'click' ORDER BY ts DESC, item_id) AS nth
    FROM ({rows}))
WHERE type <> 'click' OR list_contains($types, 'click') OR (age = newest_age AND nth <= $session_clicks)
"""

# Step 1: (user, period, type) -> items, with each item's last timestamp.
_STEP1 = """
WITH kept AS ({kept})
SELECT user_id,
       CASE WHEN age < {daily} THEN strftime(ts, '%Y-%m-%d')
            WHEN age < {monthly} THEN strftime(ts, '%Y-%m')
            ELSE strftime(ts, '%Y') END AS period,
       type, item_id, query, max(ts) AS last_ts, count(*) AS n
FROM kept GROUP BY ALL ORDER BY user_id
"""

# The naive serialisation the compression is measured against: one line per kept behaviour.
_RAW = """
WITH kept AS ({kept})
SELECT k.user_id, count(*) AS n, string_agg(
    strftime(k.ts, '%Y-%m-%d') || ' ' || k.type || ' ' ||
    CASE WHEN k.item_id IS NULL THEN k.query
         ELSE coalesce(i.title, k.item_id)
              || coalesce(' (' || array_to_string(i.category_path, ' > ') || ')', '')
              || coalesce(' ' || i.brand, '') END,
    chr(10) ORDER BY k.ts, k.type, k.item_id, k.query) AS raw
FROM kept k LEFT JOIN items i USING (item_id) GROUP BY k.user_id
"""


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard K/N` -> (K, N) with 0 <= K < N: worker K of N (Slurm array task ids and Spark partition ids
    count from 0)."""
    k, sep, n = text.partition("/")
    try:
        shard = (int(k), int(n)) if sep else None
    except ValueError:
        shard = None
    if shard is None or not 0 <= shard[0] < shard[1]:
        raise BadInput(f"--shard {text!r}: expected K/N with 0 <= K < N", "e.g. --shard 0/8 ... --shard 7/8")
    return shard


def in_shard(user_id: str, k: int, n: int) -> bool:
    """Whether `user_id` belongs to shard k of n: md5 of the id, so every machine and Python process agrees
    (Python's own hash() is salted per process)."""
    return int.from_bytes(hashlib.md5(user_id.encode("utf-8")).digest()[:8], "big") % n == k


def default_reference_date(con: duckdb.DuckDBPyConnection) -> date:
    """The date of the newest behaviour in the store: the default `--date`, so runs never read the wall clock."""
    row = con.execute("SELECT CAST(max(ts) AS DATE) FROM behaviors").fetchone()
    if row is None or row[0] is None:
        raise BadInput("the database holds no behaviours", "import some with `recgpt import ...` first")
    return row[0]


def check_keep_types(keep_types: Sequence[str]) -> tuple[str, ...]:
    unknown = [t for t in keep_types if t not in BEHAVIOR_TYPES]
    if unknown or not keep_types:
        raise BadInput(f"--keep: unknown behaviour type(s) {', '.join(unknown) or '(none given)'}",
                       f"choose from {', '.join(BEHAVIOR_TYPES)}")
    return tuple(dict.fromkeys(keep_types))


@dataclass(frozen=True)
class SplitView:
    """Build histories for one phase of a stored split (issue 8): `valid` sees train interactions, `test` sees
    train + valid. Records made this way carry `split`/`phase`, so evaluation can refuse leaked inputs."""

    protocol: str
    phase: str
    # (user_id, cut) pairs: each user's history ends at the given time instead (alignment data from logs); users
    # without one get no history. Empty: the phase's own cut for every user.
    cuts: tuple[tuple[str, datetime], ...] = ()

    def __post_init__(self) -> None:
        if self.phase not in SPLIT_PHASES:
            raise BadInput(f"--phase {self.phase!r}: expected one of {', '.join(SPLIT_PHASES)}")

    @property
    def visible(self) -> list[str]:
        return ["train"] if self.phase == "valid" else ["train", "valid"]

    @property
    def ctes(self) -> str:
        return _GIVEN_CUT_CTES if self.cuts else _SPLIT_CTES

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol": self.protocol, "visible": self.visible}
        if self.cuts:
            out.update(cut_users=[u for u, _ in self.cuts], cut_ts=[t for _, t in self.cuts])
        return out


SPLIT_PHASES = ("valid", "test")


def _params(reference: date, keep_types: Sequence[str], min_rating: float, user_ids: Sequence[str] | None,
            view: SplitView | None = None, session_clicks: int = 0) -> tuple[str, dict[str, Any]]:
    """The SQL of the kept behaviours (user_id, type, ts, item_id, query, age) and its parameters."""
    params: dict[str, Any] = {"types": list(keep_types), "min_rating": float(min_rating)}
    user_filter = ""
    if user_ids is not None:
        user_filter = "AND list_contains($users, user_id)"
        params["users"] = list(user_ids)
    reliable = _RELIABLE if session_clicks <= 0 else f"({_RELIABLE} OR type = 'click')"
    if view is not None:
        params.update(view.params())
        kept = _KEPT_SPLIT.format(visible=view.ctes + _VISIBLE_ROWS, user_filter=user_filter, reliable=reliable)
    else:
        # the whole reference day counts; the calendar's last day has no next one
        end = datetime.max if reference >= date.max else datetime.combine(reference + timedelta(days=1),
                                                                           datetime.min.time())
        params.update(ref=reference, end=end)
        kept = _KEPT.format(user_filter=user_filter, reliable=reliable)
    if session_clicks <= 0:
        return kept, params
    params["session_clicks"] = int(session_clicks)
    return _WITH_SESSION.format(rows=kept), params


def user_cuts(con: duckdb.DuckDBPyConnection, view: SplitView) -> dict[str, datetime]:
    """Each user's cut under `view`: the first timestamp of their newest visible interaction (or the given cut)."""
    return dict(con.execute(view.ctes + "SELECT user_id, cut FROM vis", view.params()).fetchall())


@dataclass
class _History:
    user_id: str
    attributes: dict[str, Any]
    reference: date
    cut: datetime | None = None
    step1: list[tuple[str, str, str | None, str | None, datetime, int]] = field(default_factory=list)
    raw: str = ""
    n_behaviors: int = 0


class _Stream:
    """An iterator over compressed users that knows its length (for progress bars)."""

    def __init__(self, histories: list[_History], run: Callable[[_History], CompressedUser]) -> None:
        self._it = map(run, histories)
        self._n = len(histories)

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> CompressedUser:
        return next(self._it)

    def __len__(self) -> int:
        return self._n


def compress_users(
    con: duckdb.DuckDBPyConnection,
    *,
    date: date,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    keep_types: Sequence[str] = DEFAULT_KEEP,
    min_rating: float = 4.0,
    user_ids: Sequence[str] | None = None,
    item_phrase: ItemPhrase = rule_based_phrase,
    token_counter: TokenCounter = count_tokens,
    view: SplitView | None = None,
    summary_categories: int = SUMMARY_CATEGORIES,
    session_clicks: int = SESSION_CLICKS,
) -> Iterator[CompressedUser]:
    """Compress every user's reliable behaviours up to `date` into the §2.1.1 hierarchical form, users in id order.

    Reads everything it needs from `con` before returning, so the caller may close the database and then stream
    the results. `max_tokens=None` means no budget. `token_counter` maps texts to token counts (default: the
    embedded model's tokenizer). With `view`, each user's history holds only what that phase of the stored split
    lets a model see, and each user's reference date is their cut (users with nothing visible get `date`)."""
    if max_tokens is not None and max_tokens < 1:
        raise BadInput(f"--max-tokens must be at least 1, got {max_tokens}")
    if summary_categories < 0:
        raise BadInput(f"--summary-categories must be at least 0, got {summary_categories}")
    if session_clicks < 0:
        raise BadInput(f"--session-clicks must be at least 0, got {session_clicks}")
    keep_types = check_keep_types(keep_types)
    kept, params = _params(date, keep_types, min_rating, user_ids, view, session_clicks)
    cuts = user_cuts(con, view) if view is not None else {}
    split_id = stored_split_id(con, view.protocol) if view is not None else None
    users_sql = "SELECT user_id, attributes FROM users UNION ALL SELECT DISTINCT user_id, NULL FROM behaviors"
    histories: dict[str, _History] = {}
    for uid, attrs in con.execute(f"SELECT user_id, any_value(attributes) FROM ({users_sql}) GROUP BY 1 ORDER BY 1"
                                  ).fetchall():
        cut = cuts.get(uid)
        histories[uid] = _History(uid, orjson.loads(attrs) if attrs else {}, cut.date() if cut else date, cut)
    if user_ids is not None:
        missing = [u for u in user_ids if u not in histories]
        if missing:
            raise BadInput(f"--users: unknown user id(s) {', '.join(missing[:5])}", "check the ids in the users table")
        histories = {u: histories[u] for u in sorted(dict.fromkeys(user_ids))}
    for uid, period, btype, item_id, query, last_ts, n in con.execute(
        _STEP1.format(kept=kept, daily=DAILY_DAYS, monthly=MONTHLY_DAYS), params
    ).fetchall():
        histories[uid].step1.append((period, btype, item_id, query, last_ts, n))
    for uid, n, raw in con.execute(_RAW.format(kept=kept), params).fetchall():
        histories[uid].raw, histories[uid].n_behaviors = raw, n
    items: dict[str, ItemInfo] = {}
    for item_id, title, path, brand in con.execute(
        f"SELECT item_id, title, category_path, brand FROM items WHERE item_id IN (SELECT item_id FROM ({kept}))",
        params,
    ).fetchall():
        items[item_id] = ItemInfo(item_id, title, tuple(path or ()), brand)
    phrases: dict[str, str] = {}  # one phrase per distinct item, whoever uses it

    def phrase(item_id: str) -> str:
        if item_id not in phrases:
            phrases[item_id] = item_phrase(items.get(item_id) or ItemInfo(item_id, item_id))
        return phrases[item_id]

    def run(h: _History) -> CompressedUser:
        user = _compress_one(h, h.reference, max_tokens, phrase, items, token_counter, summary_categories)
        if view is not None:
            user.split, user.phase, user.split_id = view.protocol, view.phase, split_id
            user.cut = h.cut.isoformat() if h.cut else None
        return user

    return _Stream(list(histories.values()), run)


Lines = list[tuple[str, list[str]]]  # rendered lines, each with the item keys it shows


def _render(h: _History, periods: Sequence[str], phrase: Callable[[str], str]) -> Lines:
    """Step 2 over the given periods (newest first): the lines, each with the item keys it shows, in order."""
    rank = {p: i for i, p in enumerate(periods)}
    signature: dict[str, set[tuple[int, int]]] = defaultdict(set)
    last: dict[str, datetime] = {}
    text: dict[str, str] = {}
    for period, btype, item_id, query, last_ts, _n in h.step1:
        if period not in rank:
            continue
        key = _key(item_id, query)
        if key not in text:
            text[key] = _key_text(key, phrase)
        signature[key].add((rank[period], _TYPE_RANK[btype]))
        last[key] = max(last.get(key, last_ts), last_ts)
    groups: dict[tuple[tuple[int, int], ...], list[str]] = defaultdict(list)
    for key, pairs in signature.items():
        groups[tuple(sorted(pairs))].append(key)
    lines: list[tuple[tuple[Any, ...], str, list[str]]] = []
    for sig, keys in groups.items():
        keys.sort(key=lambda k: (text[k], k))
        keys.sort(key=last.__getitem__, reverse=True)  # stable: newest engagement first, ties by phrase
        by_period: dict[int, list[str]] = defaultdict(list)  # sig is sorted, so periods come newest first
        for p, t in sig:
            by_period[p].append(TYPE_ORDER[t])
        when = ", ".join(f"{periods[p]}({','.join(types)})" for p, types in by_period.items())
        lines.append(((sig, text[keys[0]]), f"{when} | {', '.join(text[k] for k in keys)}", keys))
    lines.sort(key=lambda x: x[0])
    return [(line, keys) for _, line, keys in lines]


def _key(item_id: str | None, query: str | None) -> str:
    return item_id if item_id is not None else f"\x00{query}"  # NUL keeps queries apart from item ids


def _fit(h: _History, periods: list[str], max_tokens: int | None, phrase: Callable[[str], str],
         token_counter: TokenCounter) -> tuple[Lines, int, int]:
    """Drop the oldest periods until the text fits: (lines, periods kept, exact tokens).

    The search runs on an estimate, the sum of per-line counts plus one token per newline (exact for the
    embedded tokenizer, and lines repeat across candidates, so each is tokenized once); the final text is then
    counted exactly, stepping a period back (or forward) should the estimate have been low (or high)."""
    def exact(lines: Lines) -> int:
        return token_counter(["\n".join(line for line, _ in lines)])[0]

    full = _render(h, periods, phrase)
    n_full = exact(full)
    if max_tokens is None or n_full <= max_tokens:
        return full, len(periods), n_full
    per_line: dict[str, int] = {}

    def estimate(lines: Lines) -> int:
        new = list(dict.fromkeys(line for line, _ in lines if line not in per_line))
        per_line.update(zip(new, token_counter(new) if new else [], strict=True))
        return sum(per_line[line] for line, _ in lines) + max(len(lines) - 1, 0)

    renders = {len(periods): full}
    best, lo, hi = 0, 1, len(periods) - 1  # binary search: the most periods (newest first) that fit
    while lo <= hi:
        mid = (lo + hi) // 2
        renders[mid] = _render(h, periods[:mid], phrase)
        if estimate(renders[mid]) <= max_tokens:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    k, lines, n = best, [], 0
    while k > 0:  # step back while the exact count is over (the estimate was low)
        lines = renders.get(k) or _render(h, periods[:k], phrase)
        n = exact(lines)
        if n <= max_tokens:
            break
        k -= 1
    if k > 0:
        while k < len(periods):  # and forward while the next period still fits (the estimate was high)
            cand = renders.get(k + 1) or _render(h, periods[: k + 1], phrase)
            m = exact(cand)
            if m > max_tokens:
                break
            k, lines, n = k + 1, cand, m
        return lines, k, n
    # The newest period alone is too long: keep its first lines that fit, then the newest items of the next line
    # that fit (ml-100k users rate 100+ films in one day, one line: dropping whole lines would show nothing).
    kept: Lines = []
    for line, keys in _render(h, periods[:1], phrase):
        if exact([*kept, (line, keys)]) <= max_tokens:
            kept.append((line, keys))
            continue
        when = line.partition(" | ")[0]
        lo, hi, part = 1, len(keys) - 1, None
        while lo <= hi:  # binary search: the most leading (newest) items of this line that fit
            mid = (lo + hi) // 2
            piece = (f"{when} | {', '.join(_key_text(k, phrase) for k in keys[:mid])}", keys[:mid])
            if exact([*kept, piece]) <= max_tokens:
                part, lo = piece, mid + 1
            else:
                hi = mid - 1
        if part is not None:
            kept.append(part)
        break
    return kept, 1, exact(kept)


def _key_text(key: str, phrase: Callable[[str], str]) -> str:
    """One key's text in a line: the item's phrase, or a search (schema.Behavior: a search always has a query)."""
    if key.startswith("\x00"):
        return 'search:"' + key[1:].replace('"', "'") + '"'
    return phrase(key)


def _hidden_categories(h: _History, shown: set[str], items: dict[str, ItemInfo]) -> tuple[str, list[tuple[str, int]]]:
    """What `shown` hides, for the summary line: the span of the hidden periods and each hidden leaf category with
    its count of distinct items, most first (ties: newest engagement, then name)."""
    hidden: dict[str, set[str]] = defaultdict(set)
    newest: dict[str, datetime] = {}
    periods: set[str] = set()
    for period, _t, item_id, query, last_ts, _n in h.step1:
        if _key(item_id, query) in shown:
            continue
        periods.add(period)
        leaf = items[item_id].category_leaf if item_id in items else None
        if leaf:
            hidden[leaf].add(item_id)  # type: ignore[arg-type]
            newest[leaf] = max(newest.get(leaf, last_ts), last_ts)
    cats = sorted(hidden)
    cats.sort(key=newest.__getitem__, reverse=True)
    cats.sort(key=lambda c: len(hidden[c]), reverse=True)  # stable: most items, then newest, then name
    return period_span(periods), [(c, len(hidden[c])) for c in cats]


def period_span(periods: Iterable[str]) -> str:
    """`oldest..newest` of period labels (years, months and days compared by their start; a year before its
    January, a month before its first day: without the tie-break a set's hash order picked one, so the same
    history compressed differently from one process to the next)."""
    span = sorted(periods, key=lambda p: (_period_start(p), len(p)))
    return "" if not span else span[0] if len(span) == 1 else f"{span[0]}..{span[-1]}"


def _period_start(label: str) -> str:
    """A period label's first day, so that `2023`, `2024-11` and `2025-06-02` order by time."""
    return label + "-01-01"[len(label) - 4:] if len(label) < 10 else label


def _fit_with_summary(h: _History, periods: list[str], max_tokens: int | None, phrase: Callable[[str], str],
                      items: dict[str, ItemInfo], token_counter: TokenCounter, limit: int
                      ) -> tuple[Lines, int, int, list[str]]:
    """`_fit`, then, when something was hidden, the summary line of what was, inside the same budget: (lines, periods
    kept, exact tokens, the categories the summary names). The line takes at most a quarter of the budget (fewer
    names when needed), so the newest behaviours always keep most of the room."""
    lines, kept, n = _fit(h, periods, max_tokens, phrase, token_counter)
    all_keys = {_key(row[2], row[3]) for row in h.step1}
    if max_tokens is None or limit < 1 or (kept == len(periods) and {k for _, ks in lines for k in ks} == all_keys):
        return lines, kept, n, []

    def exact(lines: Lines) -> int:
        return token_counter(["\n".join(line for line, _ in lines)])[0]

    def summary_within(lines: Lines, room: int) -> tuple[Lines, list[str]] | None:
        """`lines` plus the longest summary of what they hide (at most `limit` names) whose line fits `room` tokens
        with its newline; with the categories it names."""
        when, cats = _hidden_categories(h, {k for _, ks in lines for k in ks}, items)
        for k in range(min(limit, len(cats)), 0, -1):
            line = f"{when}(categories) | " + ", ".join(f"{c} x{n}" for c, n in cats[:k])
            if token_counter([line])[0] + 1 <= room:
                return [*lines, (line, [])], [c for c, _ in cats[:k]]
        return None

    first = summary_within(lines, max_tokens // 4)
    if first is None:
        return lines, kept, n, []
    summary_line = first[0][-1][0]
    reserve = token_counter([summary_line])[0] + 1
    lines2, kept2, _ = _fit(h, periods, max_tokens - reserve, phrase, token_counter)
    if not lines2:
        return lines, kept, n, []
    room = reserve
    for _ in range(3):  # hiding more can change the names, and joined texts can count differently: fit exactly
        made = summary_within(lines2, room)
        if made is None:
            break
        total = exact(made[0])
        if total <= max_tokens:
            return made[0], kept2, total, made[1]
        room -= total - max_tokens
    return lines, kept, n, []


def _compress_one(h: _History, reference: date, max_tokens: int | None, phrase: Callable[[str], str],
                  items: dict[str, ItemInfo], token_counter: TokenCounter,
                  summary_categories: int = SUMMARY_CATEGORIES) -> CompressedUser:
    periods = sorted({row[0] for row in h.step1}, reverse=True)
    n_raw = token_counter([h.raw])[0]
    lines, kept_periods, n_comp, summarised = _fit_with_summary(h, periods, max_tokens, phrase, items, token_counter,
                                                                summary_categories)
    shown_set = {k for _, keys in lines for k in keys}
    all_keys = {_key(row[2], row[3]) for row in h.step1}
    recent: dict[str, datetime] = {}
    for period, _t, item_id, _q, last_ts, _n in h.step1:
        if item_id is not None and len(period) == 10:  # a day label: within the last 30 days
            recent[item_id] = max(recent.get(item_id, last_ts), last_ts)
    leaf_count: dict[str, int] = defaultdict(int)
    for _p, _t, item_id, _q, _ts, n in h.step1:
        leaf = items[item_id].category_leaf if item_id in items and item_id in shown_set else None
        if leaf:
            leaf_count[leaf] += n
    return CompressedUser(
        user_id=h.user_id,
        attributes=h.attributes,
        date=reference.isoformat(),
        compressed="\n".join(line for line, _ in lines),
        n_behaviors=h.n_behaviors,
        n_tokens_raw=n_raw,
        n_tokens_compressed=n_comp,
        truncated=kept_periods < len(periods) or len(shown_set) < len(all_keys),
        periods_dropped=len(periods) - kept_periods,
        n_items=len(all_keys),
        n_items_shown=len(shown_set),
        recent_items=[
            {"item_id": i, "title": items[i].title if i in items else i,
             "category_leaf": items[i].category_leaf if i in items else None}
            for i in sorted(sorted(recent), key=recent.__getitem__, reverse=True)
        ],
        # shown items' categories first, then those only the summary line names
        categories=[*sorted(leaf_count, key=lambda c: (-leaf_count[c], c)),
                    *(c for c in summarised if c not in leaf_count)],
    )


@dataclass
class CompressStats:
    """What `compress --stats` reports: behaviours kept/dropped by type, tokens, budget, items lost."""

    date: str
    max_tokens: int | None
    by_type: dict[str, dict[str, int]]  # type -> {"kept", "dropped", "after_date"} (after_date: invisible)
    split: str | None = None
    phase: str | None = None
    users: int = 0
    users_empty: int = 0
    users_truncated: int = 0
    users_raw_within_budget: int = 0
    periods_dropped: int = 0
    tokens_raw: int = 0
    tokens_compressed: int = 0
    items: int = 0
    items_lost: int = 0
    items_lost_untruncated: int = 0  # must be 0: compression alone never loses an item

    def add(self, u: CompressedUser) -> None:
        self.users += 1
        self.users_empty += u.n_behaviors == 0
        self.users_truncated += u.truncated
        self.users_raw_within_budget += self.max_tokens is None or u.n_tokens_raw <= self.max_tokens
        self.periods_dropped += u.periods_dropped
        self.tokens_raw += u.n_tokens_raw
        self.tokens_compressed += u.n_tokens_compressed
        self.items += u.n_items
        lost = u.n_items - u.n_items_shown
        self.items_lost += lost
        self.items_lost_untruncated += 0 if u.truncated else lost

    @property
    def reduction(self) -> float:
        """Share of naive tokens saved, 0..1."""
        return 1.0 - self.tokens_compressed / self.tokens_raw if self.tokens_raw else 0.0

    @property
    def within_budget(self) -> float:
        """Share of users whose full compressed history fits the budget without truncation."""
        return 1.0 - self.users_truncated / self.users if self.users else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reduction": round(self.reduction, 4), "within_budget": round(self.within_budget, 4)}


def compress_stats(
    con: duckdb.DuckDBPyConnection,
    *,
    date: date,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    keep_types: Sequence[str] = DEFAULT_KEEP,
    min_rating: float = 4.0,
    user_ids: Sequence[str] | None = None,
    view: SplitView | None = None,
    session_clicks: int = SESSION_CLICKS,
) -> CompressStats:
    """Behaviour counts by type (kept by the reliability filter and the session clicks, dropped, or invisible:
    after `date`, or with `view` after the user's cut or on a held-out item); feed it each CompressedUser with
    `.add` for the token and item figures."""
    keep_types = check_keep_types(keep_types)
    kept_sql, kept_params = _params(date, keep_types, min_rating, user_ids, view, session_clicks)
    kept = dict(con.execute(f"SELECT type, count(*) FROM ({kept_sql}) GROUP BY type", kept_params).fetchall())
    # the visibility query below names only these of the kept query's parameters (DuckDB refuses unused ones)
    params = {k: v for k, v in kept_params.items()
              if k in ("protocol", "visible", "cut_users", "cut_ts", "users", "end")}
    where = "WHERE list_contains($users, user_id)" if user_ids is not None else ""
    if view is None:
        marked = f"SELECT *, ts < $end AS visible FROM behaviors {where}"
    else:
        marked = view.ctes + f"""SELECT b.*, coalesce(b.ts <= vis.cut, false) AND NOT EXISTS (
                SELECT 1 FROM hidden h WHERE h.user_id = b.user_id AND h.item_id = b.item_id) AS visible
            FROM behaviors b LEFT JOIN vis USING (user_id) {where.replace('user_id', 'b.user_id')}"""
    rows = con.execute(
        f"""SELECT type, count(*) FILTER (visible) AS seen, count(*) FILTER (NOT visible) AS after_date
            FROM ({marked}) GROUP BY type""",
        params,
    ).fetchall()
    by_type = {t: {"kept": kept.get(t, 0), "dropped": seen - kept.get(t, 0), "after_date": a} for t, seen, a in rows}
    ordered = {t: by_type[t] for t in TYPE_ORDER if t in by_type}
    if set(by_type) - set(ordered):
        raise RecgptError(f"behaviours of unknown type in the database: {sorted(set(by_type) - set(ordered))}")
    return CompressStats(date=date.isoformat(), max_tokens=max_tokens, by_type=ordered,
                         split=view.protocol if view else None, phase=view.phase if view else None)
