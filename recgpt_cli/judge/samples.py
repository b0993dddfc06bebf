"""Turn stage outputs into judge samples (§3): one per (user, interest), (user, tag) or (user, item, explanation).

A record that already is a flat sample (gold files, or `explain` output) passes through; a `mine-interests`
or `predict-tags` record (one per user, with lists) is expanded. Missing fields raise ValueError, which the
CLI turns into `file:line:` BadInput.
"""

from __future__ import annotations

from typing import Any

MAX_BEHAVIOR_CHARS = 1200  # keep the judge prompt inside a small model's context window


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _interest_texts(record: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The user's interest texts, and id -> text (ids like "I1" as mine-interests writes them)."""
    texts: list[str] = []
    by_id: dict[str, str] = {}
    for it in record.get("interests") or []:
        if isinstance(it, dict) and _text(it.get("interest")):
            texts.append(_text(it["interest"]))
            if it.get("id") is not None:
                by_id[str(it["id"])] = _text(it["interest"])
        elif isinstance(it, str) and it.strip():
            texts.append(it.strip())
    return texts, by_id


def _behaviors(record: dict[str, Any]) -> str:
    b = record.get("behaviors", record.get("compressed", ""))
    return b if isinstance(b, str) else ""


def _need(record: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if not _text(record.get(k))]
    if missing:
        raise ValueError(f"missing or empty field(s): {', '.join(missing)}")


def expand_record(record: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """Flat judge samples for `task` from one input record (see module doc)."""
    uid = str(record.get("user_id", "")).strip()
    if task == "interests":
        if "interest" in record:
            _need(record, "interest")
            return [_flat(record, f"{uid}:interest")]
        if not isinstance(record.get("interests"), list):
            raise ValueError("expected a mine-interests record (with an 'interests' list) or a sample with 'interest'")
        out = []
        for i, it in enumerate(record["interests"], start=1):
            if not isinstance(it, dict) or not _text(it.get("interest")):
                raise ValueError(f"interests[{i - 1}] has no 'interest' text")
            out.append({
                "sample_id": f"{uid}:{it.get('id') or f'I{i}'}", "user_id": uid,
                "attributes": record.get("attributes") or {}, "behaviors": _behaviors(record),
                "interest": _text(it["interest"]), "reason": _text(it.get("reason")),
            })
        return out
    if task == "tags":
        if "tag" in record:
            _need(record, "tag")
            return [_flat(record, f"{uid}:tag")]
        if not isinstance(record.get("tags"), list):
            raise ValueError("expected a predict-tags record (with a 'tags' list) or a sample with 'tag'")
        texts, by_id = _interest_texts(record)
        out = []
        for i, t in enumerate(record["tags"], start=1):
            if not isinstance(t, dict) or not _text(t.get("tag")):
                raise ValueError(f"tags[{i - 1}] has no 'tag' text")
            link = str(t.get("interest") or "")
            out.append({
                "sample_id": f"{uid}:T{i}", "user_id": uid, "attributes": record.get("attributes") or {},
                "interests": texts, "behaviors": _behaviors(record), "tag": _text(t["tag"]),
                "interest": by_id.get(link, link), "reason": _text(t.get("reason")),
            })
        return out
    if task == "explanations":
        if "explanation" not in record:
            raise ValueError("expected an explain record (with 'explanation')")
        item_id = str(record.get("item_id", "")).strip()
        return [_flat(record, f"{uid}:{item_id}")]
    raise ValueError(f"unknown task {task!r}")


def _flat(record: dict[str, Any], default_id: str) -> dict[str, Any]:
    sample = {k: v for k, v in record.items() if k not in ("labels", "verdicts", "pass")}
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
