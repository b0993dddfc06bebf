"""Cheap deterministic post-checks on judge verdicts, where the paper's criteria allow a rule (§3).

Rules only ever downgrade a verdict (a rule can prove a failure, never a pass), and every rule that fired is
named in the output row's `rules` list so a reader can tell the model's verdict from the code's.
"""

from __future__ import annotations

import re
from typing import Any

from recgpt_cli.safety import SAFETY_RULES, check_explanation, is_copied_markup, pii_terms_from_attributes

# Core words that make a tag a category, not a product (Table 3 "Mountaineering outdoor sports equipment").
BROAD_CORE_WORDS = frozenset({
    "equipment", "product", "products", "item", "items", "goods", "stuff", "things", "supplies", "accessories",
    "gear", "essentials", "set", "collection", "series",
})
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def interest_rules(sample: dict[str, Any], verdicts: dict[str, str]) -> list[str]:
    """Table 1 Hallucination: no behaviour at all can support any interest."""
    behaviors = sample.get("behaviors", sample.get("compressed", ""))
    if not (isinstance(behaviors, str) and behaviors.strip()):
        verdicts["reasonableness"] = "hallucination"
        return ["no_behaviours"]
    return []


def tag_rules(sample: dict[str, Any], verdicts: dict[str, str]) -> list[str]:
    """Table 3: relevance needs a link to one of the user's interests; specificity rejects one-word or
    broad-core-word tags; validity rejects text copied from the behaviour log or schema (no such product)."""
    fired = []
    interests = [str(i).strip().lower() for i in sample.get("interests") or []]
    link = str(sample.get("interest") or "").strip().lower()
    if interests and link not in interests:
        verdicts["relevance"] = "No"
        fired.append("interest_not_in_profile")
    words = _words(str(sample.get("tag") or ""))
    if len(words) <= 1 or words[-1] in BROAD_CORE_WORDS:
        verdicts["specificity"] = "No"
        fired.append("broad_tag")
    if is_copied_markup(str(sample.get("tag") or "")):
        verdicts["validity"] = "No"
        fired.append("copied_markup")
    return fired


def explanation_rules(sample: dict[str, Any], verdicts: dict[str, str]) -> list[str]:
    """Table 6 via the safety filter: PII / hard sell -> safety No; repetition or emptiness -> clarity Bad;
    exaggerated claims -> factuality Bad; the title written back or nothing past the item's own words (Appendix B
    prohibition 5) -> relevance Bad."""
    item = sample["item"] if isinstance(sample.get("item"), dict) else sample
    title = str(item.get("title") or "")
    pii = pii_terms_from_attributes(sample.get("attributes"))
    res = check_explanation(str(sample.get("explanation") or ""), title=title, pii_terms=pii)
    fired = []
    if any(f in SAFETY_RULES for f in res.failures):
        verdicts["safety"] = "No"
        fired.append("unsafe")
    if "repetitive" in res.failures or "empty" in res.failures:
        verdicts["clarity"] = "Bad"
        fired.append("unclear")
    if "exaggeration" in res.failures:
        verdicts["factuality"] = "Bad"
        fired.append("exaggerated")
    if "title_echo" in res.failures or "says_nothing" in res.failures:  # names the item, links nothing to the user
        verdicts["relevance"] = "Bad"
        fired.append("says_nothing")
    return fired


RULES = {"interests": interest_rules, "tags": tag_rules, "explanations": explanation_rules}


def apply_rules(task: str, sample: dict[str, Any], verdicts: dict[str, str]) -> list[str]:
    """Downgrade `verdicts` in place; return the names of the rules that fired."""
    return RULES[task](sample, verdicts)


def rules_only(task: str, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judge rows of the rules alone: every criterion passes unless a rule proves it fails (the baseline a trained
    judge must beat, §3.2)."""
    from recgpt_cli.judge.criteria import get_task

    spec = get_task(task)
    out = []
    for sample in samples:
        v = {c: spec.criteria[c][1][0] for c in spec.criteria}
        apply_rules(task, sample, v)
        out.append({"task": task, "sample_id": sample["sample_id"], "verdicts": v, "pass": spec.sample_passes(v)})
    return out
