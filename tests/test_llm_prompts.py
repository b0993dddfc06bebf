"""Prompt files: front matter, system/user split, placeholders, packaged prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.prompts import load_prompt, parse_prompt, prompts_dir

GOOD = """---
task: tag_prediction
version: "2"
# comment lines are ignored
output: TagList
---
# Role
You predict tags.
<!-- user -->
Interests: {{interests}}
Date: {{ date }}
"""


def test_front_matter_and_render() -> None:
    p = parse_prompt(GOOD, "tags.md")
    assert (p.task, p.version, p.output) == ("tag_prediction", "2", "TagList")
    assert p.placeholders == {"interests", "date"}
    assert p.render({"interests": ["golf"], "date": "2025-07-01", "unused": 1}) == [
        {"role": "system", "content": "# Role\nYou predict tags."},
        {"role": "user", "content": "Interests: ['golf']\nDate: 2025-07-01"},
    ]


def test_no_system_part_gives_one_user_message() -> None:
    p = parse_prompt("---\ntask: t\nversion: 1\noutput: O\n---\nHello {{x}}\n", "t.md")
    assert p.render({"x": "you"}) == [{"role": "user", "content": "Hello you"}]


def test_missing_variable_names_them() -> None:
    p = parse_prompt(GOOD, "tags.md")
    with pytest.raises(BadInput, match=r"tags.md: prompt needs variables not given: date, interests"):
        p.render({})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no front matter", r"t.md:1: prompt file must start with front matter"),
        ("---\ntask: t\nversion: 1\n", r"t.md:1: front matter is not closed"),
        ("---\ntask t\n---\nx", r"t.md:2: front matter line is not `key: value`"),
        ("---\ntask: t\noutput: O\n---\nx", r"t.md: front matter is missing `version`"),
    ],
)
def test_bad_prompt_files(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_prompt(text, "t.md")


def test_load_by_path_and_unknown_name(tmp_path: Path) -> None:
    f = tmp_path / "mine.md"
    f.write_text(GOOD, encoding="utf-8")
    assert load_prompt(f).task == "tag_prediction"
    assert load_prompt(str(f)).path == str(f)
    with pytest.raises(BadInput, match="no_such_task: no such prompt file"):
        load_prompt("no_such_task")
    with pytest.raises(BadInput, match="is a folder, not a prompt file"):
        load_prompt(tmp_path)


def test_every_packaged_prompt_parses() -> None:
    names = sorted(p.stem for p in prompts_dir().glob("*.md"))
    assert names, "no prompts found"
    for name in names:
        p = load_prompt(name)
        assert p.version and p.output and p.user.strip()
