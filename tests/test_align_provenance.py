"""align.provenance: an aligned model records whose train histories it learned from, under which split, and the
LLM stages refuse to serve those users for scoring under another split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recgpt_cli.align.provenance import TRAINED_USERS, serving_check, trained_users, write_trained_users
from recgpt_cli.align.samples import Sample


def _sample(user: str | None, split: str | None) -> Sample:
    return Sample("tag_prediction", "logs", [{"role": "user", "content": "x"}], "{}", user_id=user,
                  meta={"split": split} if split else {})


def test_trained_users_round_trip_and_inherit(tmp_path: Path) -> None:
    got = write_trained_users(tmp_path, [_sample("u2", "recbole"), _sample("u1", "recbole"), _sample("u3", "loo"),
                                         _sample(None, "loo"), _sample("u4", None)],  # no user / no split: nothing
                              inherited={"loo": ["u9"]})
    assert got == {"loo": ["u3", "u9"], "recbole": ["u1", "u2"]}
    assert (tmp_path / TRAINED_USERS).is_file()
    # found from the model dir, its GGUF or its hf/ dir; nothing for a model without the file
    for named in (tmp_path, tmp_path / "model.gguf", tmp_path / "hf"):
        assert trained_users(named) == {"loo": frozenset({"u3", "u9"}), "recbole": frozenset({"u1", "u2"})}
    assert trained_users(tmp_path / "elsewhere" / "x.gguf") == {} and trained_users(None) == {}


def test_serving_check_refuses_a_user_trained_under_another_split(tmp_path: Path) -> None:
    write_trained_users(tmp_path, [_sample("u1", "recbole")])
    check = serving_check(tmp_path / "model.gguf")
    rec: dict[str, Any] = {"user_id": "u1", "split": "loo", "phase": "test"}
    assert "aligned on this user's recbole-split train history" in (check(rec) or "")
    assert check({**rec, "split": "recbole"}) is None  # the same split: its train history is all it saw
    assert check({**rec, "user_id": "u2"}) is None  # a user it never trained on
    assert check({"user_id": "u1"}) is None  # serving from the full history: nothing is scored
    assert serving_check(None)(rec) is None
