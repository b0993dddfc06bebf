"""LLM_IT: predict item tags from a user's interests and behaviour (RecGPT §2.2.1, Eq. 2), then enforce the
paper's constraints in code.

Calls: by default one call per interest (`per_interest=True`), each shown only that interest and asked for
k = min(max_tags_per_call, ceil(n_tags / #interests)) tags, so a small model that stops after a few tags still
reaches close to N over the user's interests, and linking each tag to its interest is easy for it. The number of
calls is bounded by the number of interests (itself capped by mine-interests). `per_interest=False` makes one
call with all interests and up to `n_tags` tags, as the paper does with a large model.

Rules, in order; a removed tag is counted under the first rule it breaks (`tag_rules_removed`). "Words" are
`interests.content_words` (lower-case, plural-folded, generic words dropped) minus the vague words below.

- ``vague`` (semantic precision): shorter than 4 characters, fewer than 2 words (the paper's "modifier +
  core word"), no word left once vague words ("products", "things", "best", "smart", "set", ...) are removed,
  or text copied from the prompt instead of a product (a compress time key, a behaviour type, a schema
  placeholder: `safety.is_copied_markup`).
- ``bad_reason``: the reason is a placeholder ("...", "N/A"), an interest id, one word, a decoding loop (a run of
  4 words written twice), or only the tag's own words (`text.reason_problem`).
- ``brand``: the tag names a catalogue brand the user never searched for (brands copied from the behaviour log).
- ``unlinked`` (interest consistency): the tag's `interest` is not the id of an interest shown in its call
  (`I2`, `i2`, `2`, `I2: ...`) and its text does not match one such interest's text (Jaccard >= 0.5, or all
  the interest's words present). Unlinked tags are dropped, linked ones get the id.
- ``implausible`` (interest consistency, with φ): none of φ's top-3 categories of the tag is among the interest's
  categories = φ's top-3 of the interest text plus the leaf categories of the history items behind the interest
  (`interest_leaves`: those sharing the most words with it).
- ``invalid`` (§2.2.1 validity): no catalogue item carries >= 3/4 of the tag's words (`catalogue.Catalogue`).
- ``stale`` (temporal freshness, "avoid repetitive recommendations of recently engaged items"): >= 2/3 of the
  tag's words appear in the title of one item the user engaged with in the 30 days before `date`
  (`recent_items`; items with a timestamp older than 30 days are ignored). Category leaves and searches do not
  count: they are what the user is after, and counting them emptied the vocabulary of the category browsed now.
- ``duplicate``: token Jaccard >= 0.75 with an earlier kept tag of the same user.
- ``over_cap``: beyond `n_tags`.

``brand``, ``implausible`` and ``invalid`` need the catalogue (`predict-tags --db`); without it they are off, and
the output says so (`catalogue_rules: false`).

Constrained decoding (`--constrain`, with the catalogue): the call's schema turns `item_tag` into an enum of the
catalogue's product phrases that can pass the rules for this user (`TagVocabulary`), so llama.cpp's grammar lets
a small model write only real, fresh products — generative retrieval over the catalogue, the way GENRE/TIGER
decode only valid ids. Each constrained call asks for one tag with the phrases already written taken out.
An interest with no phrase left gets no call (`tags_unavailable`). The rules still run on every tag.

Exploration (`--explore N`, with `--constrain interest`; the paper's "Temporal Freshness: prioritize novel product
categories" and its "wider interests" claim): after an interest's own tags, N more constrained calls offer only the
phrases of the interest's neighbours in the catalogue tree (leaves under the same parent: hiking boots -> trekking
poles) that the user's history never shows (`explore_leaves`). The model picks; the tags carry `"explore": true`,
the `implausible` rule holds them to those neighbours, and they sit outside `--n-tags` (round-robin after the
interest tags). An interest whose neighbours the user already has gets no such call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date as Date
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from recgpt_cli.errors import BadInput
from recgpt_cli.interests import (
    ask_min_items,
    check_date,
    default_params,
    format_attributes,
    parse_date,
    record_date,
    resolve_prompt,
    season_of,
)
from recgpt_cli.llm.base import SamplingParams, enforces_schema
from recgpt_cli.llm.prompts import Prompt
from recgpt_cli.llm.structured import Generation, StructuredLLM
from recgpt_cli.safety import is_copied_markup
from recgpt_cli.text import content_words, jaccard, reason_problem, stem

if TYPE_CHECKING:
    from recgpt_cli.catalogue import Catalogue

TAG_RULES = ("vague", "bad_reason", "brand", "unlinked", "implausible", "invalid", "stale", "duplicate", "over_cap")
FRESH_DAYS = 30
N_TAGS_CAP = 200  # --n-tags bound (the paper asks 50); the reply schema's arrays are bounded by it
STALE_SHARE = 2 / 3
DUPLICATE_JACCARD = 0.75
LINK_JACCARD = 0.5
MIN_TAG_CHARS = 4
MAX_TAGS_PER_CALL = 10
RELEVANT_LINES = 8  # history lines shown per interest in per-interest calls
CONSTRAIN_MODES = ("none", "catalogue", "interest")
DEFAULT_CONSTRAIN = "interest"  # chosen on the validation phase: bench/README.md, "Constrained decoding"
# The user tower's weight when `retrieve` fuses it with the tags, h_fuse = beta*h_u + (1-beta)*h_t, and the
# exploration tags per interest (`--explore`, module doc) and beta: chosen on the validation phase with the packaged
# aligned model's tags (100 users a dataset, sample_data / ml-100k, NDCG@10). Twenty-sixth session, with the intent
# bench's own 64-d tower: one exploration tag, beta 1 0.0628 / 0.0576, 0.9 0.0815 / 0.0526, 0.7 0.0911 / 0.0561, 0.5
# 0.0973 / 0.0479; none, 0.0628 / 0.0576, 0.0855 / 0.0571, 0.0918 / 0.0524, 0.1025 / 0.0387; two an interest peak at
# a mean of 0.0698 against one's 0.0736. Twenty-seventh session, with the tower `train-towers` serves (the default
# preset, which now trains its tag tower at weight 0.05) and one exploration tag: beta 1 0.0877 / 0.0980, 0.9 0.0943
# / 0.0972, 0.7 0.0953 / 0.0583, 0.5 0.1019 / 0.0400 — 0.9 best of those wider than beta 1 on both (category
# diversity 0.368 / 0.445 against 0.346 / 0.429, exploration share 0.052 / 0.033 against 0.051 / 0.028). Here, not
# in retrieve.py, which imports torch. (bench/README.md, twenty-sixth and twenty-seventh sessions.)
DEFAULT_BETA = 0.9
EXPLORE = 1
MAX_EXPLORE = 5

# Words too broad to describe a product on their own (paper: "smart", "modular", "set"; Table 3 specificity).
VAGUE_WORDS = frozenset(stem(w) for w in """
products product items item things thing stuff goods best nice good great cool popular quality various misc
miscellaneous other new gift gifts accessories accessory equipment gear supplies essentials smart modular set
collection kit bundle fashion trendy premium stylish movie movies film films
""".split())


class PredictedTag(BaseModel):
    """One tag as the model writes it. The JSON keys sort alphabetically in generation order (llama.cpp's
    grammar converter emits properties sorted by name): the product first, then the reason, then the interest
    id — with `interest` first, a small model copied "I1" into every field. Records use tag/interest/reason."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    tag: str = Field(min_length=2, max_length=40, alias="item_tag")
    reason: str = Field(min_length=2, max_length=100)
    interest: str = Field(min_length=1, max_length=40, alias="serves_interest")


class TagList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[PredictedTag] = Field(min_length=1, max_length=50)


@lru_cache(maxsize=64)
def tag_list_model(max_items: int, vocabulary: tuple[str, ...] | None = None) -> type[TagList]:
    """TagList asking for exactly `max_items` tags (the paper enforces a minimum tag count, §2.2.1 diversity,
    and a small model otherwise stops after one); validation accepts 1..max_items. Rules drop the weak ones.

    `vocabulary`: the schema's `item_tag` becomes an enum of these phrases, so a grammar-constrained backend
    (llama.cpp, an OpenAI-compatible server with guided decoding) can only write one of them. Validation does
    not enforce it (the hf backend decodes freely): the rules stay the judge of what is kept."""
    tag_type: type[PredictedTag] = PredictedTag
    if vocabulary:
        enum: list[Any] = list(vocabulary)

        class VocabularyTag(PredictedTag):
            tag: str = Field(min_length=2, max_length=40, alias="item_tag", json_schema_extra={"enum": enum})

        tag_type = VocabularyTag

    class BoundedTagList(TagList):
        model_config = ConfigDict(extra="forbid", title="TagList", json_schema_extra=ask_min_items("tags", max_items))
        tags: list[tag_type] = Field(min_length=1, max_length=max_items)  # type: ignore[valid-type]

    return BoundedTagList


def tag_words(tag: str) -> set[str]:
    return content_words(tag, extra_stop=VAGUE_WORDS)


def is_vague(tag: str) -> bool:
    text = " ".join(tag.split())
    return (len(text) < MIN_TAG_CHARS or len(text.split()) < 2 or not tag_words(text)
            or is_copied_markup(text))


_ID = re.compile(r"^\s*(?:[Ii]\s*(\d+)\b|(\d+)\s*$)")


def link_interest(value: str, interests: list[dict[str, Any]]) -> str | None:
    """The id of the user's interest a tag's `interest` field names (by id, else by text), or None."""
    ids = {i["interest_id"] for i in interests}
    m = _ID.match(value)
    if m and f"I{m.group(1) or m.group(2)}" in ids:
        return f"I{m.group(1) or m.group(2)}"
    words = content_words(value)
    best, best_score = None, 0.0
    for i in interests:
        iw = content_words(i["interest"])
        score = jaccard(words, iw)
        if iw and iw <= words:
            score = max(score, 1.0)
        if score > best_score:
            best, best_score = i["interest_id"], score
    return best if best_score >= LINK_JACCARD else None


def _as_date(value: Any) -> Date | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.utcfromtimestamp(value).date()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
        except ValueError:
            return None
    return None


def recent_phrases(record: dict[str, Any], day: Date) -> list[set[str]]:
    """Word sets of the titles of the items the user engaged with in the FRESH_DAYS before `day`. Only items: a
    category leaf or a search says what the user wants, not what they already have (with them, the newest
    category's whole vocabulary was stale: bench/README.md, twenty-fifth session)."""
    since = day - timedelta(days=FRESH_DAYS)
    phrases: list[str] = []
    for item in record.get("recent_items") or []:
        if isinstance(item, str):
            phrases.append(item)
            continue
        if not isinstance(item, dict):
            continue
        ts = _as_date(item.get("timestamp", item.get("ts", item.get("date"))))
        if ts is not None and ts < since:
            continue
        if isinstance(item.get("title"), str):
            phrases.append(item["title"])
    return [w for w in (tag_words(p) for p in phrases) if w]


_SEARCH = re.compile(r'search:"([^"]*)"')


def is_duplicate(words: set[str], kept: list[set[str]]) -> bool:
    return any(jaccard(words, k) >= DUPLICATE_JACCARD for k in kept)


def is_stale(words: set[str], recent: list[set[str]]) -> bool:
    return bool(words) and any(len(words & p) / len(words) >= STALE_SHARE - 1e-9 for p in recent)


_LEAF = re.compile(r"\(([^()]+)\)(?=,|$)")
_COUNTED = re.compile(r"([^,]+?) x\d+(?=,|$)")  # the summary line's "Dog Food x4" (compress's `(categories)` line)


def history_items(compressed: str) -> Iterator[tuple[str, str]]:
    """(text, leaf) for every item a `compress` history names — "Title (Leaf)" entries and the summary line's
    "Leaf xN" — the text holding the leaf's name too. A line can hold items of several categories."""
    for line in compressed.splitlines():
        when, _, body = line.partition(" | ")
        if when.endswith("(categories)"):
            for m in _COUNTED.finditer(body):
                yield m.group(1), m.group(1).strip()
            continue
        start = 0
        for m in _LEAF.finditer(body):
            yield body[start:m.end()], m.group(1)
            start = m.end() + 1


def interest_leaves(interest: dict[str, Any], compressed: str, catalogue: Catalogue) -> set[str]:
    """The interest's categories: φ's top-3 of its text plus the leaf of every history item behind it — the items
    sharing the most content words with the interest's text (a "dog beds" interest: the dog beds, not the dog food),
    or, when none shares any, with its reason. Per item, not per line: a line of the history mixes categories, and a
    heater seen the month a dog toy was must not make heaters a dog-toy category (whole lines let predict-tags link
    a radiator to "dog toys", and offered heaters to that interest's call)."""
    leaves = catalogue.leaves_of([interest["interest"]])[0]
    items = [(content_words(text), leaf) for text, leaf in history_items(compressed)]
    for words in (content_words(interest["interest"]), content_words(str(interest.get("reason", "")))):
        shared = [(len(item_words & words), leaf) for item_words, leaf in items]
        most = max((n for n, _ in shared), default=0)
        if most:
            return leaves | {leaf for n, leaf in shared if n == most}
    return leaves


def history_leaves(record: dict[str, Any]) -> set[str]:
    """Every leaf category the user's `compress` record shows: its `categories` and the leaf of each history
    item."""
    leaves = {c for c in record.get("categories") or [] if isinstance(c, str)}
    return leaves | {leaf for _, leaf in history_items(str(record.get("compressed", "")))}


def explore_leaves(interest: dict[str, Any], record: dict[str, Any], catalogue: Catalogue) -> set[str]:
    """Where an exploration tag of `interest` may go: the catalogue's neighbours of the interest's categories
    (`Catalogue.related_leaves`) that the user's history never shows."""
    own = interest_leaves(interest, str(record.get("compressed", "")), catalogue)
    return catalogue.related_leaves(own) - history_leaves(record)


def searched_text(compressed: str) -> str:
    """Every search query in a `compress` history, joined (what a user asked for by name)."""
    return " ".join(_SEARCH.findall(compressed))


def clean_tags(
    predicted: list[tuple[PredictedTag, list[dict[str, Any]]]], record: dict[str, Any], *, day: Date, n_tags: int,
    catalogue: Catalogue | None = None,
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Apply the module's rules to model output, given as (tag, interests shown in the call that made it) —
    a tag can only link to an interest its call saw. Returns (kept tags, removed count per rule)."""
    removed = dict.fromkeys(TAG_RULES, 0)
    recent = recent_phrases(record, day)
    compressed = str(record.get("compressed", ""))
    searched = catalogue.brands_in(searched_text(compressed)) if catalogue else set()
    leaves_by_interest: dict[tuple[str, bool], set[str]] = {}
    kept: list[dict[str, Any]] = []
    kept_words: list[set[str]] = []
    n_interest_tags = 0
    for t, shown in predicted:
        explore = any(i.get("explore") for i in shown)
        text = " ".join(t.tag.split())
        words = tag_words(text)
        if is_vague(text):
            removed["vague"] += 1
            continue
        if reason_problem(t.reason, text):
            removed["bad_reason"] += 1
            continue
        if catalogue is not None and catalogue.brands_in(text) - searched:
            removed["brand"] += 1
            continue
        linked = link_interest(t.interest, shown)
        if linked is None:
            removed["unlinked"] += 1
            continue
        if catalogue is not None and catalogue.phi is not None:
            if (linked, explore) not in leaves_by_interest:
                shown_interest = next(i for i in shown if i["interest_id"] == linked)
                leaves_by_interest[linked, explore] = (
                    explore_leaves(shown_interest, record, catalogue) if explore
                    else interest_leaves(shown_interest, compressed, catalogue))
            if not catalogue.leaves_of([text])[0] & leaves_by_interest[linked, explore]:
                removed["implausible"] += 1
                continue
        if catalogue is not None and not catalogue.is_valid(text, words):
            removed["invalid"] += 1
            continue
        if is_stale(words, recent):
            removed["stale"] += 1
            continue
        if is_duplicate(words, kept_words):
            removed["duplicate"] += 1
            continue
        if not explore and n_interest_tags >= n_tags:
            removed["over_cap"] += 1
            continue
        interest = next(i["interest"] for i in shown if i["interest_id"] == linked)
        kept.append({"tag": text, "interest_id": linked, "interest": interest, "reason": " ".join(t.reason.split()),
                     **({"explore": True} if explore else {})})
        kept_words.append(words)
        n_interest_tags += not explore
    return kept, removed


@dataclass
class TagVocabulary:
    """Constrained decoding (`--constrain`): the catalogue's tag phrases (`Catalogue.phrases`, item titles in the
    shape alignment trains tags in) that pass the rules which do not depend on the user (not vague, valid), with
    what the per-user rules need. `allowed` narrows them for one call; the rules still run on the output.

    Modes: ``none`` = free text; ``catalogue`` = a phrase that is valid, not stale for this user and names no
    unsearched brand (the rules `invalid`, `stale`, `brand` applied before decoding instead of after);
    ``interest`` = also in the interest's categories (the `implausible` rule)."""

    phrases: list[str]
    words: dict[str, set[str]]
    leaves: list[set[str]]
    brands: list[set[str]]

    @classmethod
    def of(cls, catalogue: Catalogue) -> TagVocabulary:
        kept = [p for p in catalogue.phrases if not is_vague(p) and catalogue.is_valid(p, tag_words(p))]
        return cls(kept, {p: tag_words(p) for p in kept}, catalogue.leaves_of(kept),
                   [catalogue.brands_in(p) for p in kept])

    @classmethod
    def serving(cls, constrain: str, catalogue: Catalogue | None, llm: StructuredLLM) -> TagVocabulary | None:
        """The vocabulary `constrain` asks for, or None for free text: mode none, no catalogue, or a free-running
        backend (hf) that an enum cannot hold. Raises BadInput on an unknown mode."""
        if constrain not in CONSTRAIN_MODES:
            raise BadInput(f"--constrain {constrain}: must be one of {', '.join(CONSTRAIN_MODES)}")
        if catalogue is None or constrain == "none" or not enforces_schema(llm.backend):
            return None
        return cls.of(catalogue)

    def allowed(self, mode: str, record: dict[str, Any], interests: list[dict[str, Any]], *, day: Date,
                catalogue: Catalogue, explore: bool = False) -> tuple[str, ...] | None:
        """The phrases one call shown `interests` may write (empty: none passes), or None (mode none: free text).
        `explore` (mode interest): phrases of the interests' `explore_leaves` instead of their own categories."""
        if mode == "none":
            return None
        recent = recent_phrases(record, day)
        compressed = str(record.get("compressed", ""))
        searched = catalogue.brands_in(searched_text(compressed))
        leaves_of = (lambda i: explore_leaves(i, record, catalogue)) if explore else (
            lambda i: interest_leaves(i, compressed, catalogue))
        wanted = set().union(*(leaves_of(i) for i in interests)) if mode == "interest" else None
        return tuple(p for p, leaves, brands in zip(self.phrases, self.leaves, self.brands, strict=True)
                     if not brands - searched and not is_stale(self.words[p], recent)
                     and (wanted is None or leaves & wanted))


def _recent_text(record: dict[str, Any], day: Date, limit: int = 10) -> str:
    since = day - timedelta(days=FRESH_DAYS)
    titles: list[str] = []
    for item in record.get("recent_items") or []:
        if isinstance(item, dict):
            ts = _as_date(item.get("timestamp", item.get("ts", item.get("date"))))
            title = item.get("title") if ts is None or ts >= since else None
        else:
            title = item
        if isinstance(title, str) and title not in titles:
            titles.append(title)
    return "; ".join(titles[:limit]) or "(none)"


def relevant_history(compressed: str, interests: list[dict[str, Any]], limit: int = RELEVANT_LINES,
                     fallback: bool = True) -> str:
    """The `compress` lines that share a content word with the interests (text or reason), newest first, at most
    `limit`; the whole history when none does. A small model shown a long history copies lines of it instead of
    naming products; shown the few lines behind one interest, it names products of that interest."""
    lines = [ln for ln in compressed.splitlines() if ln.strip()]
    words = set().union(*(content_words(f"{i['interest']} {i.get('reason', '')}") for i in interests))
    picked = [ln for ln in lines if content_words(ln.partition(" | ")[2]) & words]
    return "\n".join(picked[:limit] if picked or not fallback else lines)


def tag_variables(
    record: dict[str, Any], interests: list[dict[str, Any]], *, day: Date, n_tags: int, focus: bool = False
) -> dict[str, Any]:
    """Prompt variables for one call (public so benchmarks can render the same prompts). `focus` shows only the
    history lines behind `interests` (per-interest calls)."""
    compressed = str(record.get("compressed", "")).strip()
    if focus and compressed:
        compressed = relevant_history(compressed, interests)
    return {
        "date": day.isoformat(),
        "season": season_of(day),
        "attributes": format_attributes(record.get("attributes")),
        "interests": "; ".join(f"{i['interest_id']}: {i['interest']} ({i.get('stage', '')})" for i in interests),
        "interest_ids": ", ".join(i["interest_id"] for i in interests),
        "first_id": interests[0]["interest_id"],
        "compressed": compressed or "(no behaviour)",
        "recent_items": _recent_text(record, day),
        "n_tags": n_tags,
    }


def check_record(record: dict[str, Any], *, has_date: bool = True, known_users: set[str] | None = None
                 ) -> str | None:
    """Why a `mine-interests` record cannot get tags, or None when it can (`known_users`: the --db's users)."""
    if record.get("user_id") in ("", None):
        return "missing user_id"
    if known_users is not None and str(record["user_id"]) not in known_users:
        return f"unknown user_id {record['user_id']!r} (not in the --db users or behaviours)"
    interests = record.get("interests")
    if not isinstance(interests, list) or not all(isinstance(i, dict) and "interest_id" in i and "interest" in i
                                                  for i in interests):
        return "missing `interests` list of {interest_id, interest} (input must be `recgpt mine-interests` output)"
    return check_date(record, has_date)


@dataclass
class TagPredictor:
    """LLM_IT for one user at a time: `predictor(record) -> (row, [Generation])` (the shape `run_batch` takes).
    Build it once per run; `predict_tags` maps it over records."""

    llm: StructuredLLM
    date: Date | str | None  # None: each record's own `date` (compress writes it)
    n_tags: int = 50
    per_interest: bool = True
    max_tags_per_call: int = MAX_TAGS_PER_CALL
    prompt: str | Path | Prompt = "tag_prediction"
    params: SamplingParams | None = None  # None: max_tokens sized to each call's schema, seed 0
    catalogue: Catalogue | None = None  # turns on the brand / implausible / invalid rules
    constrain: str = DEFAULT_CONSTRAIN  # TagVocabulary's modes; needs the catalogue (without it: none)
    explore: int = EXPLORE  # exploration tags per interest (--constrain interest only)

    def __post_init__(self) -> None:
        if not 1 <= self.n_tags <= N_TAGS_CAP:
            raise BadInput(f"--n-tags {self.n_tags}: must be between 1 and {N_TAGS_CAP}")
        if not 0 <= self.explore <= MAX_EXPLORE:
            raise BadInput(f"--explore {self.explore}: must be between 0 and {MAX_EXPLORE}")
        self.vocabulary = TagVocabulary.serving(self.constrain, self.catalogue, self.llm)
        self.day = parse_date(self.date) if self.date is not None else None
        self.template = resolve_prompt(self.prompt, "TagList")

    def __call__(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[Generation[Any]]]:
        interests = record.get("interests") or []
        out = dict(record)
        out["catalogue_rules"] = self.catalogue is not None
        if not interests or record.get("error"):
            out.update(tags=[], tag_rules_removed=dict.fromkeys(TAG_RULES, 0))
            return out, []
        if self.per_interest:
            k = max(1, min(self.max_tags_per_call, math.ceil(self.n_tags / len(interests)), self.n_tags))
            groups = [[i] for i in interests]
        else:
            k, groups = min(self.n_tags, 50), [interests]
        day = record_date(record, self.day)
        params = self.params or default_params(k, chars_per_item=190)
        per_group: list[list[tuple[PredictedTag, list[dict[str, Any]]]]] = []
        errors: list[dict[str, Any]] = []
        gens: list[Generation[Any]] = []
        unavailable: list[str] = []
        taken: list[set[str]] = []  # words of the phrases this user already got: a constrained call never repeats one
        explored: list[list[tuple[PredictedTag, list[dict[str, Any]]]]] = []
        for group in groups:
            predicted: list[tuple[PredictedTag, list[dict[str, Any]]]] = []
            per_group.append(predicted)
            variables = tag_variables(record, group, day=day, n_tags=k, focus=self.per_interest)
            gid = ",".join(i["interest_id"] for i in group)
            vocab, offered = self.vocabulary, None
            if vocab is not None and self.catalogue is not None:
                offered = vocab.allowed(self.constrain, record, group, day=day, catalogue=self.catalogue)
            if vocab is None or offered is None:
                gen = self.llm.generate(self.template, variables, tag_list_model(k), params)
                gens.append(gen)
                if gen.value is None:
                    errors.append({"interest_id": gid, "error": gen.error})
                else:
                    predicted += [(t, group) for t in gen.value.tags]
                continue
            if offered:
                predicted += self._constrained(variables, offered, k, group, params, gens, errors, taken)
            else:  # every product of the interest is stale or invalid: no call can pass the rules
                unavailable.append(gid)
            if self.explore and self.constrain == "interest" and self.catalogue is not None:
                wider = vocab.allowed(self.constrain, record, group, day=day, catalogue=self.catalogue, explore=True)
                shown = [{**i, "explore": True} for i in group]
                explored.append(self._constrained(variables, wider or (), self.explore, shown, params, gens, errors,
                                                  taken))
        # round-robin over the interests before the n_tags cap: every interest's first tag before any second one
        predicted = [t for turn in zip_longest(*per_group) for t in turn if t is not None]
        predicted += [t for turn in zip_longest(*explored) for t in turn if t is not None]  # outside the n_tags cap
        tags, removed = clean_tags(predicted, record, day=day, n_tags=self.n_tags, catalogue=self.catalogue)
        out.update(tags=tags, tag_rules_removed=removed)
        if unavailable:
            out["tags_unavailable"] = unavailable
        if errors:
            out["tag_errors"] = errors
        failed = [e for e in errors if not e.get("explore")]
        if failed and len(failed) + len(unavailable) == len(groups):
            out["error"] = failed[0]["error"]
        return out, gens

    def _constrained(self, variables: dict[str, Any], offered: tuple[str, ...], n: int, shown: list[dict[str, Any]],
                     params: SamplingParams, gens: list[Generation[Any]], errors: list[dict[str, Any]],
                     taken: list[set[str]]) -> list[tuple[PredictedTag, list[dict[str, Any]]]]:
        """Up to `n` constrained calls, one tag each, the phrases already written (`taken`, updated) taken out of
        the next call's vocabulary. Asked for k at once, a greedy small model writes one phrase k times (the
        duplicate rule keeps one); the prompt (which still asks for k) is the same each time, so llama.cpp reuses
        its evaluated prefix."""
        assert self.vocabulary is not None
        out: list[tuple[PredictedTag, list[dict[str, Any]]]] = []
        for _ in range(n):
            vocabulary = tuple(p for p in offered if not is_duplicate(self.vocabulary.words[p], taken))
            if not vocabulary:
                break
            gen = self.llm.generate(self.template, variables, tag_list_model(1, vocabulary), params)
            gens.append(gen)
            if gen.value is None:
                errors.append({"interest_id": ",".join(i["interest_id"] for i in shown), "error": gen.error,
                               **({"explore": True} if any(i.get("explore") for i in shown) else {})})
                break
            out += [(t, shown) for t in gen.value.tags]
            taken += [tag_words(t.tag) for t in gen.value.tags]
        return out


def predict_tags(
    records: Iterable[dict[str, Any]],
    llm: StructuredLLM,
    *,
    date: Date | str | None,
    n_tags: int = 50,
    per_interest: bool = True,
    max_tags_per_call: int = MAX_TAGS_PER_CALL,
    prompt: str | Path | Prompt = "tag_prediction",
    params: SamplingParams | None = None,
    catalogue: Catalogue | None = None,
    constrain: str = DEFAULT_CONSTRAIN,
    explore: int = EXPLORE,
) -> Iterator[dict[str, Any]]:
    """LLM_IT (§2.2.1, Eq. 2): tags for each `mine-interests` record, then the module's rules. Yields the input
    record plus `tags` [{tag, interest_id, interest, reason}] and `tag_rules_removed`; `tag_errors` lists failed
    calls and `error` is set when every call failed. Users without interests (or with an upstream `error`) get
    `tags: []` and no call."""
    predictor = TagPredictor(llm, date, n_tags, per_interest, max_tags_per_call, prompt, params, catalogue, constrain,
                             explore)
    for record in records:
        yield predictor(record)[0]
