"""φ, the Tag-to-Cate model (paper §2.2.2, §2.4.2): free text (a predicted tag) → the catalogue's finest category.

Trained on item titles → `category_leaf` from the DuckDB store, since a tag is item-title-like text (the paper uses
item titles as tags for incremental learning). A multinomial naive Bayes over word unigrams and character
2–3-grams (so typos, plurals and text without spaces still match): deterministic, trains in a second, no
dependencies beyond numpy. Used by HR@30 (`metrics.hr_tag_category`), data balancing and explanation pairing.

A text that *is* a category's name ("women's coats", "drama"; case, spacing and plural aside) maps to that category
with probability 1: titles rarely contain their category's name ("Fargo" is Crime, a coat is "Wool Wrap Parka"), so
the naive Bayes alone sent "drama" to Horror and "women's coats" to Sandals — and interests are mostly such names.

Example::

    from recgpt_cli.tag_category import fit_tag_category, TagCategoryModel
    with connect("shop.duckdb") as con:
        phi, report = fit_tag_category(con, seed=0, holdout=0.1)
    report["accuracy"]                         # on held-out items
    phi.predict(["waterproof hiking boots"], k=3)   # [[("Hiking Shoes", 0.81), ("Boots", 0.12), ...]]
    phi.save("models/phi"); phi = TagCategoryModel.load("models/phi")
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from recgpt_cli.errors import BadInput
from recgpt_cli.text import stem

_WORD = re.compile(r"\w+", re.UNICODE)


_POSSESSIVE = re.compile(r"['’]s\b")


def _singular(word: str) -> str:
    """`text.stem`'s plural folding, plus the sibilant plurals a name needs: dresses -> dress, watches -> watch."""
    return word[:-2] if word.endswith(("sses", "ches", "shes", "xes")) else stem(word)


def name_key(text: str) -> str:
    """A category name's matching key: lower-case words, each without a plural or possessive ending."""
    return " ".join(_singular(w) for w in _WORD.findall(_POSSESSIVE.sub("s", text.lower())))


def text_features(text: str) -> list[str]:
    """Distinct features of a text: lower-cased words ("w:") and character 2/3-grams of each padded word ("c:")."""
    feats: set[str] = set()
    for word in _WORD.findall(text.lower()):
        feats.add("w:" + word)
        padded = f"<{word}>"
        for n in (2, 3):
            feats.update("c:" + padded[i: i + n] for i in range(len(padded) - n + 1))
    return sorted(feats)


@dataclass
class TagCategoryModel:
    """Multinomial NB stored sparsely: score_c(x) = log_prior_c + Σ_{f∈x} (default_c + delta[f, c])."""

    classes: list[str]
    vocab: dict[str, int]
    log_prior: np.ndarray  # (C,)
    default: np.ndarray  # (C,) log p(f | c) of a feature never seen with class c
    indptr: np.ndarray  # (V+1,) CSR over features: classes seen with feature f ...
    cls: np.ndarray  # ... their class index
    delta: np.ndarray  # ... and log p(f|c) - default_c
    _named: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        keys: dict[str, list[int]] = {}
        for j, c in enumerate(self.classes):
            keys.setdefault(name_key(c), []).append(j)
        # a name two categories share ("Accessories" under two parents) stays with the naive Bayes
        self._named = {k: js[0] for k, js in keys.items() if k and len(js) == 1}

    def named_class(self, text: str) -> int | None:
        """The index of the category whose name `text` is, or None."""
        return self._named.get(name_key(text))

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Unnormalised log-posteriors (len(texts), n_classes)."""
        out = np.tile(self.log_prior, (len(texts), 1))
        for i, text in enumerate(texts):
            ids = np.array([self.vocab[f] for f in text_features(text) if f in self.vocab], dtype=np.int64)
            if len(ids) == 0:
                continue
            out[i] += len(ids) * self.default
            starts, ends = self.indptr[ids], self.indptr[ids + 1]
            pos = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
            np.add.at(out[i], self.cls[pos], self.delta[pos])
        return out

    def predict(self, texts: Sequence[str], k: int = 1) -> list[list[tuple[str, float]]]:
        """Top-k (category, probability) per text, best first; ties broken by category name order."""
        s = self.scores(texts)
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        for i, text in enumerate(texts):
            j = self.named_class(text)
            if j is not None:
                p[i] = 0.0
                p[i, j] = 1.0
        k = min(k, len(self.classes))
        order = np.lexsort((np.broadcast_to(np.arange(len(self.classes)), p.shape), -p), axis=1)[:, :k]
        return [[(self.classes[j], float(p[i, j])) for j in order[i]] for i in range(len(texts))]

    def predict_leaf(self, texts: Sequence[str]) -> list[str]:
        """The single most likely category of each text."""
        return [row[0][0] for row in self.predict(texts, k=1)]

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        vocab = sorted(self.vocab, key=self.vocab.__getitem__)
        (d / "tag_category.json").write_text(json.dumps({"classes": self.classes, "vocab": vocab}, ensure_ascii=False))
        np.savez(d / "tag_category.npz", log_prior=self.log_prior, default=self.default, indptr=self.indptr,
                 cls=self.cls, delta=self.delta)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> TagCategoryModel:
        d = Path(directory)
        if not (d / "tag_category.json").exists():
            raise BadInput(f"{d}: no tag→category model (tag_category.json)", "fit one with fit_tag_category")
        meta = json.loads((d / "tag_category.json").read_text())
        arr = np.load(d / "tag_category.npz")
        return cls(meta["classes"], {f: i for i, f in enumerate(meta["vocab"])}, arr["log_prior"], arr["default"],
                   arr["indptr"], arr["cls"], arr["delta"])


def train_tag_category(texts: Sequence[str], labels: Sequence[str], alpha: float = 0.5) -> TagCategoryModel:
    """Fit φ on (text, category) pairs: multinomial NB over binary features with Lidstone smoothing `alpha`."""
    if len(texts) != len(labels) or not texts:
        raise BadInput("need as many category labels as texts, and at least one")
    classes = sorted(set(labels))
    c_index = {c: i for i, c in enumerate(classes)}
    vocab: dict[str, int] = {}
    rows_f, rows_c = [], []
    for text, label in zip(texts, labels, strict=True):
        for f in text_features(text):
            rows_f.append(vocab.setdefault(f, len(vocab)))
            rows_c.append(c_index[label])
    n_c, n_v = len(classes), len(vocab)
    y = np.array([c_index[c] for c in labels], dtype=np.int64)
    log_prior = np.log(np.bincount(y, minlength=n_c) / len(y))
    f_arr, c_arr = np.array(rows_f, dtype=np.int64), np.array(rows_c, dtype=np.int64)
    keys, counts = np.unique(f_arr * n_c + c_arr, return_counts=True)  # sorted by feature, then class
    feat, cl = keys // n_c, keys % n_c
    total = np.bincount(c_arr, minlength=n_c).astype(np.float64)  # feature occurrences per class
    denom = np.log(total + alpha * n_v)
    default = np.log(alpha) - denom
    delta = np.log(counts + alpha) - np.log(alpha)  # log p(f|c) - default_c
    indptr = np.zeros(n_v + 1, dtype=np.int64)
    np.cumsum(np.bincount(feat, minlength=n_v), out=indptr[1:])
    return TagCategoryModel(classes, vocab, log_prior, default, indptr, cl.astype(np.int64), delta)


def item_titles(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str]]:
    """(titles, leaf categories) of catalogue items that have both, ordered by item id."""
    rows = con.execute(
        "SELECT title, category_leaf FROM items WHERE category_leaf IS NOT NULL AND title IS NOT NULL "
        "AND trim(title) <> '' ORDER BY item_id"
    ).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def fit_tag_category(
    con: duckdb.DuckDBPyConnection, seed: int = 0, holdout: float = 0.1, alpha: float = 0.5
) -> tuple[TagCategoryModel, dict[str, Any]]:
    """Fit φ on item titles → leaf category (§2.2.2). The report gives accuracy/top-3 accuracy on a seeded held-out
    `holdout` share of items (and the majority-class rate for scale); the returned model is then refit on ALL
    items. `holdout=0` skips the estimate."""
    texts, labels = item_titles(con)
    if not texts:
        raise BadInput("no items with a title and a category in the DB", "import items with \"category\" first")
    report: dict[str, Any] = {"n_items": len(texts), "n_classes": len(set(labels)), "alpha": alpha, "seed": seed}
    n_hold = int(round(len(texts) * holdout))
    if 0 < n_hold < len(texts):
        order = np.random.default_rng(seed).permutation(len(texts))
        hold, train = order[:n_hold], order[n_hold:]
        model = train_tag_category([texts[i] for i in train], [labels[i] for i in train], alpha)
        pred = model.predict([texts[i] for i in hold], k=3)
        truth = [labels[i] for i in hold]
        top1 = np.mean([p[0][0] == t for p, t in zip(pred, truth, strict=True)])
        top3 = np.mean([t in {c for c, _ in p} for p, t in zip(pred, truth, strict=True)])
        majority = max(set(labels), key=[labels[i] for i in train].count)
        report.update(n_heldout=n_hold, accuracy=float(top1), top3_accuracy=float(top3),
                      majority_accuracy=float(np.mean([t == majority for t in truth])))
    return train_tag_category(texts, labels, alpha), report
