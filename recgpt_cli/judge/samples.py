"""Turn stage outputs into judge samples (§3): one per (user, interest), (user, tag) or (user, item, explanation).

A hand-labelled flat sample (gold files: `sample_id`, no `kind`) passes through; a stage record is validated
against the stage the task judges (schema.py: mine-interests or predict-tags for interests, predict-tags for tags,
explain for explanations) and a per-user record is expanded. Anything else raises ValueError naming what was
expected and found, which the CLI turns into `file:line:` BadInput.
"""

from __future__ import annotations

from typing import Any

from recgpt_cli.schema import Explanation, InterestsRecord, StageRecord, TagsRecord, parse_stage_record

MAX_BEHAVIOR_CHARS = 1200  # keep the judge prompt inside a small model's context window


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _interest_texts(record: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The user's interest texts, and interest_id -> text (ids like "I1" as mine-interests writes them)."""
    texts: list[str] = []
    by_id: dict[str, str] = {}
    for it in record.get("interests") or []:
        texts.append(_text(it["interest"]))
        by_id[str(it["interest_id"])] = _text(it["interest"])
    return texts, by_id


def _behaviors(record: dict[str, Any]) -> str:
    b = record.get("behaviors", record.get("compressed", ""))
    return b if isinstance(b, str) else ""


def _need(record: dict[str, Any], *keys: str) -> None:
    for k in keys:
        if k in record and record[k] is not None and not isinstance(record[k], str):
            raise ValueError(f"field {k!r} must be a string, got {type(record[k]).__name__}")
    missing = [k for k in keys if not _text(record.get(k))]
    if missing:
        raise ValueError(f"missing or empty field(s): {', '.join(missing)}")


# The field that makes a hand-labelled sample one task's and not another's (a tags sample names its interest too).
_OWN_FIELD = {"interests": "interest", "tags": "tag", "explanations": "explanation"}


# The stage records each task judges (schema.py); hand-labelled samples (`sample_id`, no `kind`) pass as they are.
_EXPECTED: dict[str, tuple[type[StageRecord], ...]] = {
    "interests": (InterestsRecord, TagsRecord), "tags": (TagsRecord,), "explanations": (Explanation,)}


def expand_record(record: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """Flat judge samples for `task` from one input record (see module doc)."""
    if task not in _EXPECTED:
        raise ValueError(f"unknown task {task!r}")
    uid = str(record.get("user_id", "")).strip()
    if "sample_id" in record and "kind" not in record:
        field = _OWN_FIELD[task]
        other = next((t for t, f in _OWN_FIELD.items() if t != task and f != "interest" and f in record), None)
        if other is not None:
            raise ValueError(f"a sample for --task {other} (it has {_OWN_FIELD[other]!r}), not for --task {task}")
        _need(record, field)
        return [_flat(record, f"{uid}:{field}")]
    rec = parse_stage_record(record, *_EXPECTED[task]).model_dump(exclude_none=True)
    uid = rec["user_id"]
    if task == "interests":
        return [{
            "sample_id": f"{uid}:{it['interest_id']}", "user_id": uid, "attributes": rec.get("attributes") or {},
            "behaviors": _behaviors(rec), "interest": _text(it["interest"]), "reason": _text(it.get("reason")),
        } for it in rec["interests"]]
    if task == "tags":
        texts, by_id = _interest_texts(rec)
        return [{
            "sample_id": f"{uid}:T{i}", "user_id": uid, "attributes": rec.get("attributes") or {},
            "interests": texts, "behaviors": _behaviors(rec), "tag": _text(t["tag"]),
            "interest": _text(t.get("interest")) or by_id.get(str(t.get("interest_id")), ""),
            "reason": _text(t.get("reason")),
        } for i, t in enumerate(rec["tags"], start=1)]
    return [_flat(rec, f"{uid}:{rec['item_id']}")]


def _flat(record: dict[str, Any], default_id: str) -> dict[str, Any]:
    # A judge sample, no longer a stage record: without `kind` it passes expand_record again unchanged.
    sample = {k: v for k, v in record.items() if k not in ("labels", "verdicts", "pass", "kind", "kind_version")}
    sample["sample_id"] = str(record.get("sample_id") or default_id)
    return sample


def _attributes_text(attrs: Any) -> str:
    if not isinstance(attrs, dict) or not attrs:
        return "(none)"
    # Personal identifiers are never shown to the judge: they are not evidence of anything.
    hidden = {"name", "email", "phone", "address"}
    return ", ".join(f"{k}: {v}" for k, v in attrs.items() if k not in hidden) or "(none)"


def item_text(sample: dict[str, Any]) -> str:
    """`title | category path` from an explain record's `item` / `title` / `category` fields."""
    item = sample.get("item")
    if isinstance(item, str) and item.strip():
        return item.strip()
    src = item if isinstance(item, dict) else sample
    title = _text(src.get("title")) or str(sample.get("item_id", ""))
    cat = src.get("category")
    cat_s = " > ".join(cat) if isinstance(cat, list) else _text(cat)
    return f"{title} | category: {cat_s}" if cat_s else title


def prompt_variables(sample: dict[str, Any], task: str) -> dict[str, str]:
    """Variables for prompts/judge_<task>.md."""
    behaviors = _behaviors(sample).strip()
    if len(behaviors) > MAX_BEHAVIOR_CHARS:
        behaviors = behaviors[:MAX_BEHAVIOR_CHARS] + " ..."
    if task == "interests":
        return {"attributes": _attributes_text(sample.get("attributes")), "behaviors": behaviors or "(none)",
                "interest": _text(sample.get("interest")), "reason": _text(sample.get("reason")) or "(none)"}
    if task == "tags":
        interests = sample.get("interests") or []
        return {"attributes": _attributes_text(sample.get("attributes")), "behaviors": behaviors or "(none)",
                "interests": "; ".join(str(i) for i in interests) or "(none)", "tag": _text(sample.get("tag")),
                "interest": _text(sample.get("interest")) or "(none)",
                "reason": _text(sample.get("reason")) or "(none)"}
    return {"interest": _text(sample.get("interest")) or "(none)", "item": item_text(sample),
            "explanation": _text(sample.get("explanation"))}


def compact_input(sample: dict[str, Any], task: str) -> dict[str, Any]:
    """What the verdict was about, short enough to read in the output file."""
    v: dict[str, Any] = dict(prompt_variables(sample, task))
    v.pop("behaviors", None)
    v.pop("attributes", None)
    v.pop("interests", None)
    v["user_id"] = sample.get("user_id")
    if task == "explanations":
        v["item_id"] = sample.get("item_id")
    return v
