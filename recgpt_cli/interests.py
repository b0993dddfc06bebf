"""LLM_UI: mine each user's interests from compressed behaviour (RecGPT §2.1.2, Eq. 1), then check them in code.

The prompt asks for the paper's constraints, but a small model does not reliably follow them, so the paper's
data-quality rules (§2.1.2 "Data Quality Control", Table 1) are also applied after generation. Rules, in order;
each removed interest is counted under the first rule it breaks (`interest_rules_removed`):

- ``vague``: the interest has no content word (only generic words such as "shopping", "products").
- ``unsupported`` (hallucination check): no content word of the *interest text* matches a word of the user's
  evidence = compressed history + categories + recent item titles/categories + searches (behaviour-type words
  and generic words excluded). Two words match when their stems are equal or, both being >= 4 letters, one is a
  prefix of the other ("golf" ~ "golfing"). The model's `reason` is not evidence: it can be invented.
- ``bad_reason``: the reason is not a sentence about the interest: a placeholder ("...", "N/A"), an interest id, a
  single word, a decoding loop (a run of 4 words written twice), or only the interest's own words
  (`text.reason_problem`).
- ``duplicate``: after mapping onto the preset pool, same content words as an earlier kept interest, or token
  Jaccard >= 0.6 with one.
- ``over_cap``: beyond `max_interests`.

A reply the rules remove an interest from as ``vague``, ``unsupported`` or ``bad_reason`` is a sampling accident
more than a judgement of the user (the 135M model can loop on a reason: "lately mystery mystery mystery ...", or
name a category the history does not have), so the user is asked again, up to `resamples` times (`--resamples`,
new seed, warm: `llm.structured.resample_params`), and the reply whose rules keep the most interests is served (the
first on ties); `interest_resamples` counts the extra asks. ``duplicate`` and ``over_cap`` are not faults.

With an interest pool (`--interest-pool FILE`, one interest a line), an interest whose content words have
Jaccard >= 0.5 with a preset interest is renamed to it (`"preset": true`), and the prompt lists only the
preset interests with a word in the user's evidence (the paper's "Matched Interest Pool", at most 12).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date as Date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.base import SamplingParams
from recgpt_cli.llm.prompts import Prompt, load_prompt
from recgpt_cli.llm.structured import Generation, StructuredLLM, resample_params
from recgpt_cli.text import content_words, jaccard, reason_problem, words_match

INTEREST_RULES = ("vague", "unsupported", "bad_reason", "duplicate", "over_cap")
DUPLICATE_JACCARD = 0.6
POOL_JACCARD = 0.5
POOL_IN_PROMPT = 12
RESAMPLES = 4  # extra asks after a faulty reply (valid ml-100k HR@30 0.64 -> 0.76: bench/README, 25th session)
RESAMPLE_RULES = ("vague", "unsupported", "bad_reason")  # the faults a new seed can fix
CATEGORIES_IN_PROMPT = 8  # compress lists leaf categories by behaviour count; the top ones anchor a small model

def season_of(day: Date) -> str:
    """Meteorological season, northern hemisphere (Dec-Feb winter ... Sep-Nov autumn); §2.2.1 seasonal relevance."""
    return ("winter", "spring", "summer", "autumn")[(day.month % 12) // 3]


def parse_date(value: Date | str) -> Date:
    if isinstance(value, Date):
        return value
    try:
        return Date.fromisoformat(str(value))
    except ValueError:
        raise BadInput(f"--date {value!r}: expected YYYY-MM-DD") from None


def format_attributes(attributes: Any) -> str:
    if not isinstance(attributes, dict) or not attributes:
        return "unknown"
    return ", ".join(f"{k}: {v}" for k, v in attributes.items() if v not in (None, "", [], {}))


def _phrases(value: Any) -> list[str]:
    """Flatten categories / recent items / queries (strings, lists, dicts with title/category) into phrases."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [p for k in ("title", "category", "category_leaf", "query") for p in _phrases(value.get(k))]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _phrases(v)]
    return [str(value)]


def evidence_words(record: dict[str, Any]) -> set[str]:
    """Every content word of the user's behaviour as given by `compress`: the history text, categories,
    recent items and searches. Attributes are not behaviour and do not count."""
    words = content_words(str(record.get("compressed", "")))
    for key in ("categories", "recent_items", "recent_queries", "items"):
        for phrase in _phrases(record.get(key)):
            words |= content_words(phrase)
    return words


def is_supported(interest: str, evidence: set[str]) -> bool:
    """The hallucination check: some content word of the interest matches some evidence word."""
    return any(words_match(w, e) for w in content_words(interest) for e in evidence)


# ---- output model (mirrors the prompt's Output Format; every string and array bounded: tiny models loop) ----


class MinedInterest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interest: str = Field(min_length=2, max_length=40)
    stage: Literal["long-term", "short-term"]
    reason: str = Field(min_length=2, max_length=120)


class InterestList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interests: list[MinedInterest] = Field(min_length=1, max_length=8)  # bounds set per call: interest_list_model


DEFAULT_MAX_INTERESTS = 8  # mine-interests' default (the bench and `align data` ask for 3)
MAX_INTERESTS_CAP = 50  # the reply schema's array bound: every array the model writes is bounded
MAX_RESAMPLES = 10
MIN_INTERESTS = 3  # asked of the model: a small model stops after one item unless the schema says otherwise


def ask_min_items(key: str, n: int) -> Any:
    """Schema hook: the decoder is asked for >= n items while validation accepts fewer (backends without
    constrained decoding may stop early; a short valid answer beats a failure)."""

    def hook(schema: dict[str, Any]) -> None:
        schema["properties"][key]["minItems"] = n

    return hook


@lru_cache(maxsize=16)
def interest_list_model(max_items: int) -> type[InterestList]:
    """InterestList asking for min(3, max_items)..max_items interests (the schema is part of the cache key).
    Extra, weak items are what the rules below are for."""

    class BoundedInterestList(InterestList):
        model_config = ConfigDict(extra="forbid", title="InterestList",
                                  json_schema_extra=ask_min_items("interests", min(MIN_INTERESTS, max_items)))
        interests: list[MinedInterest] = Field(min_length=1, max_length=max_items)

    return BoundedInterestList


def default_params(max_items: int, chars_per_item: int, seed: int = 0) -> SamplingParams:
    """A max_tokens budget that fits the schema's bounds (~2.5 chars a token), so valid output is never cut."""
    return SamplingParams(max_tokens=int(max_items * chars_per_item / 2.5) + 32, seed=seed)


# ---- stage ----


def load_interest_pool(path: str | Path) -> list[str]:
    """One preset interest a line; blank lines and `#` comments ignored; duplicates dropped, order kept."""
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{p}: is a directory, expected an interest pool file (one interest a line)")
    if not p.is_file():
        raise BadInput(f"{p}: no such interest pool file", "one interest per line, e.g. sample_data/interest_pool.txt")
    seen: dict[str, None] = {}
    for n, raw in enumerate(p.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8").split("#", 1)[0].strip()
        except UnicodeDecodeError as exc:
            raise BadInput.at(str(p), n, f"not valid UTF-8 (byte {exc.start})", "re-encode the file as UTF-8") from None
        if line:
            seen.setdefault(line, None)
    if not seen:
        raise BadInput(f"{p}: interest pool is empty")
    return list(seen)


def matched_pool(pool: list[str], evidence: set[str], limit: int = POOL_IN_PROMPT) -> list[str]:
    """Preset interests with a word in the user's evidence: the paper's per-user "Matched Interest Pool"."""
    return [p for p in pool if is_supported(p, evidence)][:limit]


def _closest_preset(interest: str, pool: list[str]) -> str | None:
    words = content_words(interest)
    best, best_score = None, 0.0
    for preset in pool:
        score = jaccard(words, content_words(preset))
        if score > best_score:
            best, best_score = preset, score
    return best if best_score >= POOL_JACCARD else None


def clean_interests(
    mined: list[MinedInterest], record: dict[str, Any], *, max_interests: int, pool: list[str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Apply the module's rules to model output; return (interests with `interest_id` I1.., removed count per
    rule)."""
    removed = dict.fromkeys(INTEREST_RULES, 0)
    evidence = evidence_words(record)
    kept: list[dict[str, Any]] = []
    kept_words: list[set[str]] = []
    for m in mined:
        text = " ".join(m.interest.split())
        words = content_words(text)
        if not words:
            removed["vague"] += 1
            continue
        if not is_supported(text, evidence):
            removed["unsupported"] += 1
            continue
        if reason_problem(m.reason, text):
            removed["bad_reason"] += 1
            continue
        out: dict[str, Any] = {"interest": text, "stage": m.stage, "reason": " ".join(m.reason.split())}
        if pool is not None:
            preset = _closest_preset(text, pool)
            out["preset"] = preset is not None
            if preset is not None:
                out["interest"], words = preset, content_words(preset)
        if any(words == k or jaccard(words, k) >= DUPLICATE_JACCARD for k in kept_words):
            removed["duplicate"] += 1
            continue
        if len(kept) >= max_interests:
            removed["over_cap"] += 1
            continue
        kept.append(out)
        kept_words.append(words)
    return [{"interest_id": f"I{i}", **k} for i, k in enumerate(kept, start=1)], removed


def mining_variables(
    record: dict[str, Any], *, day: Date, max_interests: int, pool: list[str] | None = None
) -> dict[str, Any]:
    """Prompt variables for one user (public so benchmarks can render the same prompts)."""
    pool_lines = matched_pool(pool, evidence_words(record)) if pool else []
    return {
        "date": day.isoformat(),
        "season": season_of(day),
        "attributes": format_attributes(record.get("attributes")),
        "categories": ", ".join(_phrases(record.get("categories"))[:CATEGORIES_IN_PROMPT]) or "(none)",
        "compressed": str(record.get("compressed", "")).strip() or "(no behaviour)",
        "interest_pool": "\n".join(f"- {p}" for p in pool_lines) or "(none)",
        "max_interests": max_interests,
    }


def record_date(record: dict[str, Any], default: Date | None) -> Date:
    """The reference date for one user: `--date` when given, else the record's own `date` (set by compress)."""
    if default is not None:
        return default
    if not record.get("date"):
        raise BadInput("no date: pass --date YYYY-MM-DD (input records carry no `date` field)")
    return parse_date(record["date"])


def check_date(record: dict[str, Any], has_default: bool) -> str | None:
    """Why a record has no usable reference date (only matters without --date)."""
    if has_default:
        return None
    if not record.get("date"):
        return "no `date` in the record and no --date given"
    try:
        parse_date(record["date"])
    except BadInput:
        return f"`date` {record['date']!r} is not YYYY-MM-DD"
    return None


def check_record(record: dict[str, Any], *, has_date: bool = True) -> str | None:
    """Why a `compress` record cannot be mined, or None when it can."""
    if not isinstance(record.get("user_id"), (str, int)) or record.get("user_id") in ("", None):
        return "missing user_id"
    if not isinstance(record.get("compressed"), str):
        return "missing `compressed` text (input must be `recgpt compress` output)"
    return check_date(record, has_date)


def resolve_prompt(prompt: str | Path | Prompt, expected_output: str) -> Prompt:
    p = prompt if isinstance(prompt, Prompt) else load_prompt(prompt)
    if p.output != expected_output:
        raise BadInput(f"{p.path}: prompt declares output `{p.output}`, this stage needs `{expected_output}`")
    return p


@dataclass
class InterestMiner:
    """LLM_UI for one user at a time: `miner(record) -> (row, [Generation])` (the shape `run_batch` takes).
    Build it once per run; `mine_interests` maps it over records."""

    llm: StructuredLLM
    date: Date | str | None  # None: each record's own `date` (compress writes it)
    interest_pool: list[str] | None = None
    max_interests: int = DEFAULT_MAX_INTERESTS
    prompt: str | Path | Prompt = "interest_mining"
    params: SamplingParams | None = None  # None: max_tokens sized to the schema, seed 0
    resamples: int = RESAMPLES

    def __post_init__(self) -> None:
        if not 1 <= self.max_interests <= MAX_INTERESTS_CAP:
            raise BadInput(f"--max-interests {self.max_interests}: must be between 1 and {MAX_INTERESTS_CAP}")
        if not 0 <= self.resamples <= MAX_RESAMPLES:
            raise BadInput(f"--resamples {self.resamples}: must be between 0 and {MAX_RESAMPLES}")
        self.day = parse_date(self.date) if self.date is not None else None
        self.template = resolve_prompt(self.prompt, "InterestList")
        self.model = interest_list_model(self.max_interests)
        self.sampling = self.params or default_params(self.max_interests, chars_per_item=230)

    def __call__(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[Generation[Any]]]:
        out = {k: v for k, v in record.items() if k != "error"}
        day = record_date(record, self.day)
        variables = mining_variables(record, day=day, max_interests=self.max_interests, pool=self.interest_pool)
        gens: list[Generation[Any]] = []
        best: tuple[list[dict[str, Any]], dict[str, int]] | None = None
        for attempt in range(self.resamples + 1):
            params = self.sampling if attempt == 0 else resample_params(self.sampling, attempt)
            gen = self.llm.generate(self.template, variables, self.model, params)
            gens.append(gen)
            if gen.value is None:  # no valid JSON even after the LLM layer's own retries
                if best is None:
                    out.update(interests=[], interest_rules_removed=dict.fromkeys(INTEREST_RULES, 0),
                               interest_resamples=0, error=gen.error)
                    return out, gens
                break
            cleaned = clean_interests(gen.value.interests, record, max_interests=self.max_interests,
                                      pool=self.interest_pool)
            if best is None or len(cleaned[0]) > len(best[0]):
                best = cleaned
            if not any(cleaned[1][rule] for rule in RESAMPLE_RULES):
                break
        assert best is not None
        out.update(interests=best[0], interest_rules_removed=best[1], interest_resamples=len(gens) - 1)
        return out, gens


def mine_interests(
    records: Iterable[dict[str, Any]],
    llm: StructuredLLM,
    *,
    date: Date | str | None,
    interest_pool: list[str] | None = None,
    max_interests: int = DEFAULT_MAX_INTERESTS,
    prompt: str | Path | Prompt = "interest_mining",
    params: SamplingParams | None = None,
    resamples: int = RESAMPLES,
) -> Iterator[dict[str, Any]]:
    """LLM_UI (§2.1.2, Eq. 1): one call per `compress` record, then the module's rules. Yields the input record
    plus `interests` [{interest_id, interest, stage, reason}] (+ `preset` with a pool) and `interest_rules_removed`;
    a failed call yields the record with `interests: []` and `error`. `date=None` uses each record's `date`.
    A reply the first three rules fault is asked again up to `resamples` times (`interest_resamples`)."""
    miner = InterestMiner(llm, date, interest_pool, max_interests, prompt, params, resamples)
    for record in records:
        yield miner(record)[0]
