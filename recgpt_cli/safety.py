"""Safety and quality filter for generated explanations (§2.4.1, Table 6: Safety and Clarity).

Rules are deterministic so they can run on every explanation before it reaches a user, and so the judge
(§3) can use them as cheap post-checks. Each failing rule is reported by name; callers regenerate with a
new seed (bounded) or drop the explanation and count it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from recgpt_cli.text import content_words, stem

MIN_CHARS = 8
MAX_CHARS = 80

# Table 6 "Unproven Safety": hard-sell wording ("time-limited offer ... quick buy"). Matched as whole phrases.
HARD_SELL_PHRASES: tuple[str, ...] = (
    "buy now", "buy it now", "order now", "shop now", "act now", "quick buy", "add to cart",
    "limited time", "limited-time", "time-limited", "limited offer", "while stocks last", "while supplies last",
    "hurry", "don't miss", "dont miss", "do not miss", "last chance", "only today", "today only",
    "flash sale", "best price", "lowest price", "cheapest", "% off", "free gift", "click here",
    "must-have", "must have",  # Appendix B's slogan example, "must-have gadget"
)
# Appendix B prohibition 4 / Table 6 "Unverified Factuality": exaggerated claims.
EXAGGERATION_PHRASES: tuple[str, ...] = (
    "100%", "guaranteed", "lasts forever", "never breaks", "indestructible", "miracle", "best in the world",
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
# 7+ digits, allowing spaces, dots, dashes and brackets between them: phone-number shaped.
_PHONE = re.compile(r"(?:\+?\d[\s().-]?){7,}")
_URL = re.compile(r"https?://|www\.", re.IGNORECASE)
# An unfilled template slot echoed by a small model: "a fantastic [item name]", "{category}".
_PLACEHOLDER = re.compile(r"\[[^\]]*\]|\{[^}]*\}|<[^>]*>")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# The prompt's own scaffolding written back (a small model's "1. Context Understanding: The item is ..."): not an
# explanation. Labels of prompts/explanation.md, matched as whole words.
_PROMPT_ECHO = re.compile(r"\b(?:context understanding|explanation generation|item information|user interest|"
                          r"core reasoning|mandatory requirements?|recommendation principles?|strict prohibitions?|"
                          r"output format|current date)\b", re.IGNORECASE)
_STUTTER = re.compile(r"\b([a-z]{3,})\s+\1\b", re.IGNORECASE)  # "a cat cat tree"
# Attribute keys whose values are personal identifiers, never to be echoed to the user.
PII_ATTRIBUTE_KEYS: tuple[str, ...] = (
    "name", "first_name", "last_name", "full_name", "nickname", "username", "email", "phone", "mobile",
    "address", "street", "id_number",
)


@dataclass(frozen=True)
class SafetyConfig:
    """Length bounds (characters, after trimming) and the hard-sell phrase list."""

    min_chars: int = MIN_CHARS
    max_chars: int = MAX_CHARS
    hard_sell: tuple[str, ...] = HARD_SELL_PHRASES
    exaggeration: tuple[str, ...] = EXAGGERATION_PHRASES


@dataclass
class SafetyResult:
    """`failures` names each rule that fired: empty, too_short, too_long, pii_email, pii_phone, pii_url,
    pii_term, hard_sell, exaggeration, placeholder, prompt_echo, title_echo, repetitive, emoji, unfinished,
    superlative, foreign_brand, foreign_attribute, foreign_number, foreign_maker, foreign_category, says_nothing."""

    text: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def tidy_truncated(text: str, limit: int) -> str:
    """A constrained decoder stops at the schema's maxLength mid-word; cut back to the last whole word."""
    t = text.strip()
    if len(t) < limit or " " not in t:
        return t
    return t[: t.rstrip().rfind(" ")].rstrip(" ,;:-")


def pii_terms_from_attributes(attributes: dict[str, Any] | None) -> list[str]:
    """Personal strings from a user's attributes (name, e-mail, phone, ...) that must never appear in output."""
    terms: list[str] = []
    for key, value in (attributes or {}).items():
        if key.lower() in PII_ATTRIBUTE_KEYS and isinstance(value, (str, int)) and str(value).strip():
            terms.append(str(value).strip())
            # A full name leaks through either part too ("Zhang Wei" -> "Zhang", "Wei").
            if key.lower() in ("name", "full_name") and " " in str(value).strip():
                terms.extend(p for p in str(value).split() if len(p) >= 3)
    return terms


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _is_title_echo(text: str, title: str) -> bool:
    """Near-duplication of the product title (Appendix B prohibition 5): the explanation adds nothing."""
    w_text, w_title = _words(text), set(_words(title))
    if not w_text or not w_title:
        return False
    return sum(w in w_title for w in w_text) / len(w_text) >= 0.8


def _is_repetitive(text: str) -> bool:
    """Table 6 "Limited Clarity": `Bag bag good bag buy bag good`. One word is > 1/3 of 4+ words, or a word of
    3+ letters written twice in a row."""
    if _STUTTER.search(text):
        return True
    words = _words(text)
    if len(words) < 4:
        return False
    _, top = Counter(words).most_common(1)[0]
    return top >= 3 and top / len(words) > 1 / 3


# Clarity (issue 8): emoji in place of words; a sentence cut off (a dangling function word or separator, or the
# decoder stopped at the length bound); factuality: superlatives, brands and attributes the item does not have.
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F\u200D]")
EMOJI_SHARE = 0.15  # share of non-space characters
_DANGLING = frozenset("""a an the and or but of to for with in on at by from as that which who your our my its their
is are was be very so than this these those into about""".split())
SUPERLATIVES = frozenset("""best greatest finest ultimate unbeatable unmatched unrivalled unrivaled perfectest
top-rated world-class""".split())
# -est words that are not superlatives
_NOT_SUPERLATIVE = frozenset("""interest forest honest rest test chest guest request quest west nest pest vest digest
suggest contest protest invest manifest arrest crest priest zest jest harvest modest latest everest""".split())
_MOST = re.compile(r"\b(?:most|in the world|of all time|number one|no\. ?1|#1)\b", re.IGNORECASE)
# Attributes a model likes to invent; one named in an explanation must be in the item's title or category.
ATTRIBUTE_WORDS = frozenset("""waterproof wireless bluetooth leather organic cotton wool silk cashmere stainless steel
wooden bamboo electric cordless rechargeable solar vegan gluten-free handmade vintage nonstick non-stick ceramic
glass plastic metal aluminium aluminum titanium gold silver diamond red blue black white green pink yellow purple
orange brown grey gray beige navy waterproofing insulated heated foldable portable smart""".split())


# Factuality (Appendix B prohibition 1, "do not invent functions, materials or brand facts"): a number the item's
# own text lacks ("a 12-speed motor", "16GB of RAM"), a maker it does not name ("designed by a team of experts").
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_MAKER = re.compile(r"\b(?:designed|made|crafted|handcrafted|developed|created|built|manufactured|engineered) by "
                    r"(?:a |an |the )?([a-z0-9][a-z0-9'&-]*)", re.IGNORECASE)


# "This item is a great dog toy" written for a radiator (its table pair came from a heater tag linked to a "dog toys"
# interest): what the sentence says the item is (the words after "is a"), matched against the catalogue's category
# names (plurals folded) of departments the item's own text does not name. Within one department the rule stays
# quiet: a film filed under its first genre may well be the "action movie" the sentence calls it.
_IS_A = re.compile(r"(?:\bis|\bwas|'s)\s+(?:a|an|the|one)\s+([^.,;:!?]+)", re.IGNORECASE)
PREDICATE_WORDS = 6


def _stemmed(text: str) -> str:
    return " " + " ".join(stem(w) for w in _words(text)) + " "


@lru_cache(maxsize=8192)
def _stemmed_name(name: str) -> str:
    """A catalogue category or department name, stemmed once: every check walks the same few hundred names."""
    return _stemmed(name)


def names_other_category(text: str, own_text: str, categories: Mapping[str, str]) -> bool:
    """`text` says the item is something (`is a ...`) named by a category of `categories` (name -> its department)
    whose name and department `own_text` both lack."""
    said = [" " + " ".join(stem(w) for w in _words(m)[:PREDICATE_WORDS]) + " " for m in _IS_A.findall(text)]
    if not said:
        return False
    own = _stemmed(own_text)
    for name, department in categories.items():
        n = _stemmed_name(name)
        if n.strip() and n not in own and _stemmed_name(department) not in own and any(n in p for p in said):
            return True
    return False


# A sentence that only names its item ("This item is a movie.", "This item is a great bed pillow." for a pillow):
# past function words and filler, every word is one of the item's own. Fillers are kept few on purpose: "Tea the
# way it should be" (a gold Good) must still say something ("way").
_NOT_CONTENT = frozenset(stem(w) for w in """it was were has have had will can could should would may might do does
so very just also all any some which who what there here you they them not such much more many every each both well
too really truly item product thing one movie film choice option pick addition piece kind sort type great good nice
perfect ideal unique quality high wonderful amazing fantastic excellent beautiful lovely fun popular classic special
awesome""".split())


def says_nothing(text: str, own_text: str) -> bool:
    """Every content word of `text` (`text.content_words`, less function words and filler) is a word of the
    item's own text (`own_text`: title, category path, example titles), plurals folded."""
    return bool(_words(text)) and not content_words(text, extra_stop=_NOT_CONTENT) - content_words(own_text)


def is_emoji_heavy(text: str) -> bool:
    chars = [c for c in text if not c.isspace()]
    n_emoji = len(_EMOJI.findall(text))
    return bool(chars) and (n_emoji / len(chars) > EMOJI_SHARE or not any(c.isalpha() for c in text))


def is_unfinished(text: str, cut_off: bool = False) -> bool:
    """Ends on a separator or a function word ("... who love the"), or the decoder stopped at its length bound
    (`cut_off`) and the text has no closing punctuation."""
    t = text.strip()
    if not t:
        return False
    if t[-1] in ",;:-–(&/":
        return True
    last = _words(t)[-1] if _words(t) else ""
    if last in _DANGLING:
        return True
    return cut_off and t[-1] not in ".!?\"')"


def _names(text: str, phrase: str) -> bool:
    """`phrase` occurs in lower-case `text` as whole words."""
    return bool(phrase) and re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", text) is not None


def has_superlative(text: str) -> bool:
    words = _words(text)
    return (any(w in SUPERLATIVES for w in words) or bool(_MOST.search(text))
            or any(len(w) > 5 and w.endswith("est") and w not in _NOT_SUPERLATIVE for w in words))


def check_explanation(
    text: str,
    *,
    title: str = "",
    pii_terms: Iterable[str] = (),
    config: SafetyConfig = SafetyConfig(),
    item_text: str = "",
    brands: Iterable[str] = (),
    categories: Mapping[str, str] | None = None,
    cut_off: bool = False,
) -> SafetyResult:
    """Run every rule on one explanation; see SafetyResult for the rule names. `item_text` (title, category path,
    brand), `brands` (every catalogue brand, lower-case) and `categories` (the catalogue's category names -> their
    departments) turn on the foreign_* rules; `cut_off` says the decoder stopped at its length bound (then text
    without closing punctuation is unfinished)."""
    t = (text or "").strip()
    res = SafetyResult(text=t)
    if not t:
        res.failures.append("empty")
        return res
    if len(t) < config.min_chars:
        res.failures.append("too_short")
    if len(t) > config.max_chars:
        res.failures.append("too_long")
    low = t.lower()
    if _EMAIL.search(t):
        res.failures.append("pii_email")
    if _PHONE.search(t):
        res.failures.append("pii_phone")
    if _URL.search(t):
        res.failures.append("pii_url")
    joined = re.sub(r"\W+", "", low)
    for term in pii_terms:
        term_l = term.strip().lower()
        # Whole words, or a multi-word name written run together ("MsZhang" for "Ms Zhang").
        word_hit = term_l and re.search(rf"(?<![a-z0-9]){re.escape(term_l)}(?![a-z0-9])", low)
        run_together = " " in term_l and re.sub(r"\W+", "", term_l) in joined
        if word_hit or run_together:
            res.failures.append("pii_term")
            break
    squashed = re.sub(r"\s+", " ", low.replace("\u2019", "'"))
    if any(p in squashed for p in config.hard_sell):
        res.failures.append("hard_sell")
    if any(p in squashed for p in config.exaggeration):
        res.failures.append("exaggeration")
    if _PLACEHOLDER.search(t):
        res.failures.append("placeholder")
    if _PROMPT_ECHO.search(t):
        res.failures.append("prompt_echo")
    # a category-level table entry has no title: its Item Information (path, example titles) is what it must not
    # just repeat ("📐 Bed Pillows" for Bed Pillows)
    if (title or item_text) and _is_title_echo(t, title or item_text):
        res.failures.append("title_echo")
    if _is_repetitive(t):
        res.failures.append("repetitive")
    if is_emoji_heavy(t):
        res.failures.append("emoji")
    if is_unfinished(_EMOJI.sub("", t), cut_off):
        res.failures.append("unfinished")
    if has_superlative(t):
        res.failures.append("superlative")
    own_text = f"{title} {item_text}".lower()
    if any(_names(low, b) and not _names(own_text, b) for b in brands):
        res.failures.append("foreign_brand")
    if title or item_text:  # attributes, numbers and makers need the item's own words to check against
        own_words = set(_words(own_text))
        if (set(_words(t)) & ATTRIBUTE_WORDS) - own_words:
            res.failures.append("foreign_attribute")
        if set(_NUMBER.findall(t)) - set(_NUMBER.findall(own_text)):
            res.failures.append("foreign_number")
        if any(m.lower() not in own_words for m in _MAKER.findall(t)):
            res.failures.append("foreign_maker")
        if categories and names_other_category(t, own_text, categories):
            res.failures.append("foreign_category")
        if "title_echo" not in res.failures and says_nothing(t, own_text):  # the echo is the stronger form
            res.failures.append("says_nothing")
    return res


SAFETY_RULES = ("pii_email", "pii_phone", "pii_url", "pii_term", "hard_sell")
"""Rules that are about Safety (privacy + hard sell); the others are about Clarity/length."""


# What a small model copies from its prompt instead of naming a product: compress time keys ("2025-04(",
# "2025-06-23"), behaviour type names, `search:"..."`, schema placeholders ("product_name", "I2").
_LOG_DATE = re.compile(r"\b\d{4}-\d{2}\b")
_LOG_TOKENS = re.compile(
    r"detail_view|review_read|search:|\((?:purchase|cart|favorite|click|rating|search)|_|^\s*I\d+\s*$", re.IGNORECASE)


def is_copied_markup(text: str) -> bool:
    """True when `text` is a fragment of the prompt's behaviour log or schema rather than free text."""
    return bool(_LOG_DATE.search(text) or _LOG_TOKENS.search(text) or _PLACEHOLDER.search(text))
