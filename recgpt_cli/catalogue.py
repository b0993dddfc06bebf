"""The item catalogue as text, for the rules and metrics that ask "is this a real product here?" (§2.2.1 validity).

A tag is *valid* when one catalogue item carries at least `VALID_SHARE` of the tag's content words in its title,
category path or brand (so "waterproof hiking boots" matches a hiking boot; "puzzle food" and "electric eau de
parfum" match no single item). Brands are the catalogue's `brand` values, matched as whole words; a rule uses them
to reject brand names a model copied from the behaviour log. φ (`tag_category.TagCategoryModel`) maps free text to
leaf categories for the interest-link plausibility rule.

    with connect("shop.duckdb", read_only=True) as con:
        cat = Catalogue.from_db(con)
    cat.match_share("waterproof hiking boots")   # 1.0
    cat.brands_in("Trailpeak boots for winter")  # {"trailpeak"}
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recgpt_cli.text import clip_words, content_words

if TYPE_CHECKING:
    import duckdb

    from recgpt_cli.tag_category import TagCategoryModel

TAG_MAX_WORDS = 5
TAG_MAX_CHARS = 40  # PredictedTag.tag's bound
LEAF_MIN_P = 0.1  # φ's runner-up categories below this are noise, not a second meaning
VALID_SHARE = 0.75  # share of a tag's content words one item must carry (2 of 2, 3 of 3 or 4, 4 of 5)


_SIZE = re.compile(r"\b[\w.-]*\d[\w.-]*\b")


def title_tag(title: str, brand: str | None) -> str:
    """A tag from an item title: lower-case, brand and anything with a digit (sizes, years) dropped, cut at the
    first comma or parenthesis, at most TAG_MAX_WORDS words ("Brightnest Nonstick Cookware Set, 28cm" -> "nonstick
    cookware set"; "Toy Story (1995)" -> "toy story"). The shape alignment trains tags in and constrained
    decoding offers (`Catalogue.phrases`)."""
    text = re.split(r"[,(\[]", title, maxsplit=1)[0]
    if brand:
        text = re.sub(rf"(?i)(?<![\w]){re.escape(brand)}(?![\w])", " ", text)
    text = _SIZE.sub(" ", text).lower()
    return clip_words(" ".join([w for w in (w.strip("-:;'\".&/") for w in text.split()) if w][:TAG_MAX_WORDS]),
                      TAG_MAX_CHARS)


@dataclass
class Catalogue:
    """Item texts indexed by content word, known brands, and optionally φ."""

    item_words: list[frozenset[str]]
    leaves: list[str | None]
    brands: frozenset[str]  # lower-case brand names
    phi: TagCategoryModel | None = None
    phrases: tuple[str, ...] = ()  # every item's `title_tag`, distinct, sorted (the constrained-decoding vocabulary)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)  # leaf -> the category path above it
    _index: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        index: dict[str, list[int]] = defaultdict(list)
        for i, words in enumerate(self.item_words):
            for w in words:
                index[w].append(i)
        self._index = dict(index)
        self._brand_re = (re.compile(r"(?<![\w])(" + "|".join(
            re.escape(b) for b in sorted(self.brands, key=len, reverse=True)) + r")(?![\w])", re.IGNORECASE)
            if self.brands else None)

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, Sequence[str] | None, str | None]],
                   phi: TagCategoryModel | None = None) -> Catalogue:
        """From (title, category path, brand) triples."""
        words, leaves, brands, phrases = [], [], set(), set()
        parents: dict[str, tuple[str, ...]] = {}
        for title, path, brand in items:
            text = " ".join([title or "", *(path or []), brand or ""])
            words.append(frozenset(content_words(text)))
            leaves.append(path[-1] if path else None)
            if path:
                parents.setdefault(path[-1], tuple(path[:-1]))
            if brand and brand.strip():
                brands.add(brand.strip().lower())
            phrases.add(title_tag(title or "", brand))
        return cls(words, leaves, frozenset(brands), phi, tuple(sorted(phrases - {""})), parents)

    @classmethod
    def from_db(cls, con: duckdb.DuckDBPyConnection, *, with_phi: bool = True) -> Catalogue:
        """Every item of the store; φ fitted on its titles (about a second for thousands of items)."""
        rows = con.execute("SELECT title, category_path, brand FROM items ORDER BY item_id").fetchall()
        phi = None
        if with_phi and any(r[1] for r in rows):
            from recgpt_cli.tag_category import fit_tag_category

            phi, _ = fit_tag_category(con, holdout=0.0)
        return cls.from_items(rows, phi)

    def match_share(self, text: str, words: set[str] | None = None) -> float:
        """The largest share of `text`'s content words that one item carries (0 when it has none)."""
        words = content_words(text) if words is None else words
        if not words:
            return 0.0
        hits: Counter[int] = Counter()
        for w in words:
            hits.update(self._index.get(w, ()))
        return max(hits.values(), default=0) / len(words)

    def is_valid(self, text: str, words: set[str] | None = None) -> bool:
        return self.match_share(text, words) >= VALID_SHARE - 1e-9

    def brands_in(self, text: str) -> set[str]:
        """Known brands named in `text` (whole words, case-insensitive), lower-case."""
        if self._brand_re is None:
            return set()
        return {m.group(1).lower() for m in self._brand_re.finditer(text)}

    def related_leaves(self, leaves: set[str]) -> set[str]:
        """The leaves that share a parent category with one of `leaves` (Hiking Boots -> Camping Tents, Sleeping
        Bags under Sports > Outdoor), `leaves` themselves left out. A flat catalogue (every leaf under one root,
        as ml-100k's genres under Movies) relates every leaf; a leaf with no parent relates none."""
        wanted = {self.parents[leaf] for leaf in leaves if self.parents.get(leaf)}
        return {leaf for leaf, parent in self.parents.items() if parent in wanted} - leaves

    def leaves_of(self, texts: Sequence[str], k: int = 3, min_p: float = LEAF_MIN_P) -> list[set[str]]:
        """φ's top-k leaf categories of each text with probability >= min_p (the best one always); empty sets
        without φ."""
        if self.phi is None or not texts:
            return [set() for _ in texts]
        return [{c for j, (c, p) in enumerate(row) if j == 0 or p >= min_p}
                for row in self.phi.predict(list(texts), k=k)]

