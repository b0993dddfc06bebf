"""Make pydantic's JSON schema easy on constrained decoders (llama.cpp GBNF, OpenAI-compatible servers).

- `$ref`s into `$defs` are inlined (some servers' converters only follow local refs, or none at all);
- every property becomes required: a fixed key set gives a tiny model one path through the grammar instead
  of letting it wander (fields with defaults still validate when present);
- keys no decoder uses (`title`, `default`, `examples`) are dropped, so the schema (part of each cache key)
  changes only when the shape does.
Recursive models (a $ref that reaches itself) are left as refs: inlining them would never end.
"""

from __future__ import annotations

from typing import Any

_DROP = {"title", "default", "examples"}


def normalise_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A self-contained copy of `schema` with refs inlined, all properties required, cosmetic keys dropped."""
    defs = schema.get("$defs", {})

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(n, seen) for n in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.split("/")[-1]
            if name in seen or name not in defs:
                return node  # recursive: keep the ref (and $defs below)
            merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
            return walk(merged, seen + (name,))
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in _DROP or k == "$defs":
                continue
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: walk(sub, seen) for name, sub in v.items()}
            else:
                out[k] = walk(v, seen)
        if isinstance(out.get("properties"), dict):
            out["required"] = list(out["properties"])
        return out

    result = walk(schema, ())
    if defs and _has_ref(result):
        result["$defs"] = {name: walk(d, (name,)) for name, d in defs.items()}
    return result


def _has_ref(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or any(_has_ref(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_ref(v) for v in node)
    return False
