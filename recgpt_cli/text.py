"""Word-level text helpers shared by the LLM stages' rules, the catalogue and the metrics: content words (lower-case,
plural-folded, generic words dropped), Jaccard overlap, and loose word matching."""

from __future__ import annotations

import re

# Words that say nothing about *what* a user likes; never evidence, never the content of an interest.
_GENERIC = """
a an and the of for with in on to or at by from as is are be its their her his my your our this that these those
interest interested lover enthusiast fan hobby shopping shopper buying buy bought purchasing product item
thing stuff related style lifestyle general various other daily user good best nice great new love like enjoy
click detail view favorite favourite cart purchase review read search rating searched viewed clicked
day week month year time long term short recent recently
""".split()


def stem(word: str) -> str:
    """Crude plural folding so "shoes" == "shoe" and "hobbies" == "hobby"; enough for overlap rules."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_STOP = frozenset(stem(w) for w in _GENERIC)
_WORD = re.compile(r"[^\W_]+")


def content_words(text: str, *, extra_stop: frozenset[str] = frozenset()) -> set[str]:
    """Lower-cased, plural-folded words of >= 3 letters that are not generic, function or numeric words."""
    out = set()
    for tok in _WORD.findall(text.lower()):
        s = stem(tok)
        if len(s) >= 3 and not s.isdigit() and s not in _STOP and s not in extra_stop:
            out.add(s)
    return out


def clip_words(text: str, limit: int) -> str:
    """`text` with whitespace collapsed, cut at a word boundary to at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0]


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def words_match(a: str, b: str) -> bool:
    """Equal stems, or a >= 4-letter prefix relation ("golf" ~ "golfing", "photo" ~ "photography")."""
    return a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b) or b.startswith(a)))




# What a small model writes instead of a reason: ellipses, "N/A", a schema word, an interest id.
_PLACEHOLDER_REASON = re.compile(
    r"^(?:\W*|\.{2,}|…|n/?a|none|null|nil|reason|string|text|todo|tbd|example|same|see above|interest\s*\d*)$",
    re.IGNORECASE)
_INTEREST_ID = re.compile(r"^\s*(?:interest\s*)?[Ii]\d+\s*$")
_BRACKETED = re.compile(r"\[[^\]]*\]|\{[^}]*\}|<[^>]*>")
MIN_REASON_WORDS = 2  # "cat food" cites evidence; "brace" or "..." does not
LOOP_WORDS = 4  # a run of this many words written twice is a decoding loop ("the cat in the story of the cat in ...")


def repeats_itself(text: str, n: int = LOOP_WORDS) -> bool:
    """True when some run of `n` words occurs twice: greedy decoding that looped until the length bound. Words are
    what spaces separate, so "glow-in-the-dark" in two titles is one word said twice, not a loop of four."""
    words = [w for w in (t.strip(".,;:!?'\"()") for t in text.lower().split()) if w]
    runs = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(runs)) < len(runs)


# A reason's connective words ("lately X, before that Y, and 4 more earlier"): not claims about the history.
_CONNECTIVE = frozenset(stem(w) for w in "lately earlier before after more over since then also again history".split())
_DATE = re.compile(r"\d{4}(?:-\d{2}){0,2}")


def unsupported_claims(reason: str, evidence: str, subject: str = "") -> list[str]:
    """What `reason` says that `evidence` (the history the model was shown) does not: its content words found
    neither there nor in `subject` (the interest or tag it explains), and its numbers that the evidence holds only
    inside a date or not at all (a count the model made up: "10 items" where the history shows four)."""
    known = content_words(evidence) | content_words(subject)
    numbers = set(re.findall(r"\d+", _DATE.sub(" ", evidence)))
    return sorted(content_words(reason, extra_stop=_CONNECTIVE) - known) + \
        [n for n in re.findall(r"\d+", reason) if n not in numbers]


def reason_problem(reason: str, subject: str) -> str | None:
    """Why `reason` is not a reason for `subject` (a tag or interest), or None: a placeholder ("...", "N/A", a
    template slot), an interest id ("I2"), fewer than MIN_REASON_WORDS words, a decoding loop (`repeats_itself`), or
    nothing beyond the subject's own words (a copy of the tag)."""
    text = " ".join(str(reason).split()).strip()
    bare = text.strip(" .!?,;:'\"")
    if _PLACEHOLDER_REASON.match(bare) or _BRACKETED.search(text) or not re.search(r"[^\W\d_]", text):
        return "placeholder"
    if _INTEREST_ID.match(bare):
        return "interest id"
    if len(bare.split()) < MIN_REASON_WORDS:
        return "not a sentence"
    if repeats_itself(bare):
        return "repeats itself"
    words = content_words(bare)
    if bare.lower() == " ".join(subject.split()).lower() or words <= content_words(subject):
        return "copy of the subject"
    return None
