"""Which users' logs an aligned model learned from, and under which stored split (split-honest serving).

`align data` cuts each user's *train* history of one protocol's split. Under another protocol that history can hold
items the other split holds out (a random 8/1/1 split's train part holds leave-one-out's last items), so a model
aligned on it must not write interests or tags that are scored for those users under that protocol. `align sft`
writes `trained_users.json` ({split: [user ids]}) next to the model; the LLM stages refuse such records.
Imports nothing heavy: the stages read it before loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

TRAINED_USERS = "trained_users.json"


def write_trained_users(out: Path, samples: Iterable[Any], inherited: Mapping[str, Iterable[str]] | None = None
                        ) -> dict[str, list[str]]:
    """{split: sorted user ids} of the samples cut from a user's history under a split (meta "split"), with what
    the base model had learned from (`inherited`: an aligned model continued with `align sft --from`)."""
    by_split: dict[str, set[str]] = {k: set(v) for k, v in (inherited or {}).items()}
    for s in samples:
        split = s.meta.get("split") if isinstance(s.meta, dict) else None
        if split and s.user_id:
            by_split.setdefault(str(split), set()).add(str(s.user_id))
    result = {k: sorted(v) for k, v in sorted(by_split.items())}
    (out / TRAINED_USERS).write_text(json.dumps(result))
    return result


def model_record(model: str | Path | None, name: str) -> dict[str, Any]:
    """The JSON object `align sft` wrote as `name` next to the model named by `--model` (its dir, its GGUF or its
    hf/); {} for any other model (the embedded one, a GGUF from elsewhere, a server) or an unreadable file."""
    if not model:
        return {}
    p = Path(model)
    for d in (p, p.parent):
        f = d / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except ValueError:
                continue
            return data if isinstance(data, dict) else {}
    return {}


def trained_users(model: str | Path | None) -> dict[str, frozenset[str]]:
    """What `write_trained_users` recorded for the model named by `--model` ({} when nothing)."""
    return {str(k): frozenset(map(str, v)) for k, v in model_record(model, TRAINED_USERS).items()
            if isinstance(v, list)}


def serving_check(model: str | Path | None) -> Callable[[dict[str, Any]], str | None]:
    """A record check for the LLM stages: None, or why the record's user must not be served by this model."""
    trained = trained_users(model)

    def check(record: dict[str, Any]) -> str | None:
        split, user = record.get("split"), record.get("user_id")
        if split is None:  # serving from the full history: nothing is scored
            return None
        for other, users in trained.items():
            if other != split and user in users:
                return (f"user {user!r}: the model was aligned on this user's {other}-split train history, which can "
                        f"hold the items the {split} split holds out; score under the split it was aligned on "
                        f"(`compress --split {other}`, `run --protocol {other}`), align with `align data --protocol "
                        f"{split}`, or leave the users you score out of training (`align data --exclude-users`)")
        return None

    return check
