"""Prompt files: `prompts/<task>.md` with front matter (task, version, output) and `{{placeholders}}`.

The version is part of every cache key, so editing a prompt's text without bumping it still changes the
key (the rendered prompt is hashed too), and bumping it invalidates old outputs on purpose.

Prompts are bounded: `render` passes every variable through `clean_field` first, so whatever a record holds,
control characters (NUL, ESC, ... everything but newline and tab) never reach a model, each line of a value is
cut to MAX_LINE_CHARS (1,000) and the whole value to MAX_FIELD_CHARS (2,000; 12,000 for the long behaviour
fields `compressed` and `behaviors`, LONG_FIELDS), a cut marked with "…".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from recgpt_cli.errors import BadInput

MAX_LINE_CHARS = 1_000
MAX_FIELD_CHARS = 2_000
LONG_FIELD_CHARS = 12_000
LONG_FIELDS = frozenset({"compressed", "behaviors"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_field(value: Any, limit: int = MAX_FIELD_CHARS) -> str:
    """`value` as prompt text: control characters dropped (newline and tab kept), each line cut to
    MAX_LINE_CHARS, the whole cut to `limit` characters."""
    text = _CONTROL.sub("", str(value))
    lines = [ln if len(ln) <= MAX_LINE_CHARS else ln[: MAX_LINE_CHARS - 1] + "…" for ln in text.split("\n")]
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_SYSTEM_SPLIT = re.compile(r"^<!--\s*user\s*-->\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt file. `system` is the text before a `<!-- user -->` line (may be empty)."""

    task: str
    version: str
    output: str
    system: str
    user: str
    path: str

    @property
    def placeholders(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.system + self.user))

    def render(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        """Fill placeholders and return chat messages. Missing variables are an error, never left blank."""
        missing = self.placeholders - set(variables)
        if missing:
            raise BadInput(f"{self.path}: prompt needs variables not given: {', '.join(sorted(missing))}")

        values = {k: clean_field(v, LONG_FIELD_CHARS if k in LONG_FIELDS else MAX_FIELD_CHARS)
                  for k, v in variables.items()}

        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text).strip()

        messages = []
        if self.system.strip():
            messages.append({"role": "system", "content": fill(self.system)})
        messages.append({"role": "user", "content": fill(self.user)})
        return messages


def prompts_dir() -> Path:
    """Top-level `prompts/` in a checkout, or `recgpt_cli/prompts` inside an installed wheel."""
    packaged = Path(str(resources.files("recgpt_cli"))) / "prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "prompts"


def parse_prompt(text: str, path: str) -> Prompt:
    if not text.startswith("---"):
        raise BadInput.at(path, 1, "prompt file must start with front matter (--- task/version/output ---)")
    try:
        _, front, body = text.split("---", 2)
    except ValueError:
        raise BadInput.at(path, 1, "front matter is not closed with ---") from None
    meta: dict[str, str] = {}
    for i, line in enumerate(front.strip().splitlines(), start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ":" not in line:
            raise BadInput.at(path, i, f"front matter line is not `key: value`: {line!r}")
        key, value = line.split(":", 1)
        meta[key.strip()] = value.strip().strip('"').strip("'")
    for key in ("task", "version", "output"):
        if not meta.get(key):
            raise BadInput(f"{path}: front matter is missing `{key}`")
    parts = _SYSTEM_SPLIT.split(body, maxsplit=1)
    system, user = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
    return Prompt(meta["task"], meta["version"], meta["output"], system, user, path)


def load_prompt(name_or_path: str | Path) -> Prompt:
    """Load `prompts/<name>.md` by task name, or any prompt file by path (`--prompt FILE`)."""
    p = Path(name_or_path)
    if not p.is_file():  # a task name, not a path
        p = prompts_dir() / f"{name_or_path}.md"
    if not p.exists():
        what = "is a folder, not a prompt file" if Path(name_or_path).is_dir() else "no such prompt file"
        raise BadInput(f"{name_or_path}: {what}", f"prompts live in {prompts_dir()}")
    return parse_prompt(p.read_text(encoding="utf-8"), str(p))
