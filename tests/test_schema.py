"""Stage records (schema.py): each stage's output validates as its own kind and is refused as any other."""

from __future__ import annotations

import pytest

from recgpt_cli.schema import (
    RECORD_VERSION,
    CompressedUser,
    Explanation,
    InterestsRecord,
    Recommendation,
    TagsRecord,
    Verdict,
    parse_stage_record,
    record_kind,
    stage_row,
)

COMPRESSED = {"user_id": "u1", "attributes": {}, "date": "2025-07-01", "compressed": "2025-06(purchase) | racket",
              "categories": ["Tennis"], "split": "loo", "phase": "valid", "cut": "2025-06-01T10:00:00"}
INTERESTS = {**COMPRESSED, "interests": [{"interest_id": "I1", "interest": "tennis", "stage": "long-term"}],
             "interest_rules_removed": {"vague": 0}}
TAGS = {**INTERESTS, "tags": [{"tag": "tennis ball machine", "interest_id": "I1", "interest": "tennis"}]}
REC = {"user_id": "u1", "item_id": "i1", "rank": 1, "score": 0.5, "tag": "x", "interest_id": "I1",
       "interest": "tennis"}
EXPL = {"user_id": "u1", "item_id": "i1", "explanation": "For your tennis", "interest": "tennis",
        "source": "table", "title": "Ball machine", "category": ["Sports", "Tennis"], "interest_id": "I1"}
VERDICT = {"task": "tags", "sample_id": "u1:T1", "input": {}, "verdicts": {"relevance": "Yes"}, "pass": True}
ALL = [("compressed", COMPRESSED, CompressedUser), ("interests", INTERESTS, InterestsRecord),
       ("tags", TAGS, TagsRecord), ("recommendation", REC, Recommendation), ("explanation", EXPL, Explanation),
       ("verdict", VERDICT, Verdict)]


@pytest.mark.parametrize(("kind", "row", "model"), ALL)
def test_each_kind_round_trips_and_is_recognised_without_its_kind(kind: str, row: dict, model: type) -> None:
    stamped = stage_row(kind, row)
    assert list(stamped)[:2] == ["kind", "kind_version"] and stamped["kind_version"] == RECORD_VERSION
    rec = parse_stage_record(stamped, model)
    assert isinstance(rec, model) and rec.to_row()["kind"] == kind
    assert record_kind(row) == kind  # files written before kinds existed
    others = [m for k, _, m in ALL if k != kind]
    with pytest.raises(ValueError, match=rf"expected .* got {model.STAGE} output \(kind '{kind}'\)"):
        parse_stage_record(stamped, *others)


def test_old_id_field_unknown_fields_and_newer_versions() -> None:
    old = {**INTERESTS, "interests": [{"id": "I1", "interest": "tennis"}]}
    assert parse_stage_record(old, InterestsRecord).interests[0].interest_id == "I1"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="surprise: unknown field"):
        parse_stage_record({**COMPRESSED, "surprise": 1}, CompressedUser)
    with pytest.raises(ValueError, match="record version 9 is newer"):
        parse_stage_record({**COMPRESSED, "kind_version": 9}, CompressedUser)
    with pytest.raises(ValueError, match="unknown kind 'shoes'"):
        parse_stage_record({**COMPRESSED, "kind": "shoes"}, CompressedUser)
    with pytest.raises(ValueError, match="interests.0.interest: missing required field"):
        parse_stage_record({**INTERESTS, "interests": [{"interest_id": "I1"}]}, InterestsRecord)
