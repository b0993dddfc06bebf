"""Judge label buffer (recgpt_cli.judge.buffer, §3.2): hashes, latest label wins, undo, resume, import/export."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from recgpt_cli.errors import BadInput
from recgpt_cli.io import iter_jsonl
from recgpt_cli.judge.buffer import (
    add_label,
    add_samples,
    current_labels,
    export_labels,
    import_labels,
    label_counts,
    labelled,
    next_unlabelled,
    open_buffer,
    sample_hash,
    undo_last,
)
from recgpt_cli.judge.samples import expand_record

GOLD_TAGS = Path(__file__).resolve().parent.parent / "sample_data" / "gold" / "tags.jsonl"
T0 = datetime(2025, 6, 1, 12, 0, 0)


def gold_rows() -> list[dict]:
    return [rec for _, rec in iter_jsonl(GOLD_TAGS)]


def tag_samples(n: int = 3) -> list[dict]:
    return [expand_record(rec, "tags")[0] for rec in gold_rows()[:n]]


@pytest.fixture
def con(tmp_path: Path):
    c = open_buffer(tmp_path / "labels.duckdb")
    yield c
    c.close()


def test_sample_hash_ignores_sample_id_labels_and_note() -> None:
    s = tag_samples(1)[0]
    h = sample_hash(s, "tags")
    assert len(h) == 64
    assert sample_hash({**s, "sample_id": "other-id", "note": "why", "labels": {"relevance": "No"}}, "tags") == h
    assert sample_hash({**s, "tag": "Foldable dog carrier case"}, "tags") != h
    assert sample_hash({**s, "user_id": "someone_else"}, "tags") != h
    assert sample_hash(s, "interests") != h


def test_add_samples_is_idempotent_and_stores_no_labels(con) -> None:
    rows = gold_rows()[:2]
    copy = {**rows[0], "sample_id": "renamed", "labels": {"relevance": "No"}}
    samples = [expand_record(r, "tags")[0] for r in rows] + [copy]
    assert add_samples(con, "tags", samples) == 2
    assert add_samples(con, "tags", samples) == 0
    stored = con.execute("SELECT sample_id, sample FROM judge_items ORDER BY sample_id").fetchall()
    assert [r[0] for r in stored] == ["paper-t3-pet-case", "paper-t3-pillowcase"]
    assert all("labels" not in orjson.loads(r[1]) for r in stored)


def test_latest_label_wins_ties_by_id_and_skip_counts(con) -> None:
    s = tag_samples(1)[0]
    add_samples(con, "tags", [s])
    h = sample_hash(s, "tags")
    add_label(con, h, "tags", "relevance", "Yes", annotator="ann", source="human", ts=T0)
    add_label(con, h, "tags", "relevance", "No", annotator="ann", source="human", ts=T0 - timedelta(hours=1))
    assert current_labels(con, "tags") == {h: {"relevance": "Yes"}}  # an older label added later does not win
    add_label(con, h, "tags", "relevance", "No", annotator="bob", source="human", ts=T0)
    assert current_labels(con, "tags") == {h: {"relevance": "No"}}  # same ts: the later row wins
    add_label(con, h, "tags", "validity", "skip", annotator="ann", source="human", ts=T0)
    add_label(con, h, "tags", "validity", "Yes", annotator="llm", source="llm", ts=T0 + timedelta(hours=1))
    assert current_labels(con, "tags") == {h: {"relevance": "No", "validity": "Yes"}}
    assert current_labels(con, "tags", sources=["human"]) == {h: {"relevance": "No", "validity": "skip"}}
    assert current_labels(con, "interests") == {}


def test_add_label_validates(con) -> None:
    s = tag_samples(1)[0]
    add_samples(con, "tags", [s])
    h = sample_hash(s, "tags")
    with pytest.raises(ValueError, match="unknown criterion 'factuality'"):
        add_label(con, h, "tags", "factuality", "Yes", annotator="a", source="human")
    with pytest.raises(ValueError, match=r"'Maybe' is not one of Yes, No \(or 'skip'\)"):
        add_label(con, h, "tags", "relevance", "Maybe", annotator="a", source="human")
    with pytest.raises(ValueError, match="no tags sample"):
        add_label(con, "0" * 64, "tags", "relevance", "Yes", annotator="a", source="human")
    with pytest.raises(ValueError, match="unknown judge task"):
        add_label(con, h, "tag", "relevance", "Yes", annotator="a", source="human")
    assert con.execute("SELECT count(*) FROM judge_labels").fetchone() == (0,)
    assert add_label(con, h, "tags", "relevance", "skip", annotator="a", source="human") >= 1


def test_undo_last_removes_the_annotators_latest_row(con) -> None:
    a, b = tag_samples(2)
    add_samples(con, "tags", [a, b])
    ha, hb = sample_hash(a, "tags"), sample_hash(b, "tags")
    add_label(con, ha, "tags", "relevance", "Yes", annotator="ann", source="human")
    add_label(con, ha, "tags", "consistency", "No", annotator="ann", source="human")
    add_label(con, hb, "tags", "relevance", "No", annotator="bob", source="human")
    assert undo_last(con, "tags", "ann") == (ha, "consistency")
    assert current_labels(con, "tags") == {ha: {"relevance": "Yes"}, hb: {"relevance": "No"}}
    assert undo_last(con, "interests", "ann") is None
    assert undo_last(con, "tags", "ann") == (ha, "relevance")
    assert undo_last(con, "tags", "ann") is None
    assert current_labels(con, "tags") == {hb: {"relevance": "No"}}


def test_next_unlabelled_keeps_input_order_and_treats_skip_as_answered(con) -> None:
    a, b, c = tag_samples(3)
    add_samples(con, "tags", [a, b, c])
    ha, hb, hc = (sample_hash(s, "tags") for s in (a, b, c))
    for crit in ("relevance", "consistency", "specificity", "validity"):
        add_label(con, hb, "tags", crit, "Yes", annotator="x", source="human")
    add_label(con, hc, "tags", "relevance", "skip", annotator="x", source="human")
    add_label(con, hc, "tags", "specificity", "No", annotator="x", source="human")
    add_label(con, ha, "tags", "validity", "Yes", annotator="m", source="llm")
    order = [hc, ha, hb, hc]
    assert next_unlabelled(con, "tags", order) == [
        (hc, ["consistency", "validity"]), (ha, ["relevance", "consistency", "specificity"])]
    assert next_unlabelled(con, "tags", order, sources=["human"]) == [
        (hc, ["consistency", "validity"]), (ha, ["relevance", "consistency", "specificity", "validity"])]


def test_labelled_complete_only(con) -> None:
    a, b = tag_samples(2)
    add_samples(con, "tags", [a, b])
    ha, hb = sample_hash(a, "tags"), sample_hash(b, "tags")
    for i, crit in enumerate(("relevance", "consistency", "specificity", "validity")):
        add_label(con, ha, "tags", crit, "Yes", annotator="x", source="human", ts=T0 + timedelta(minutes=i))
    add_label(con, ha, "tags", "relevance", "No", annotator="y", source="gold", ts=T0 + timedelta(minutes=9))
    add_label(con, hb, "tags", "relevance", "Yes", annotator="x", source="human", ts=T0)
    add_label(con, hb, "tags", "consistency", "skip", annotator="x", source="human", ts=T0)
    rows = labelled(con, "tags")
    assert [(r["sample_hash"], r["sample_id"], r["source"], r["annotator"], r["ts"]) for r in rows] == [
        (ha, "paper-t3-pet-case", "gold", "y", T0 + timedelta(minutes=9))]
    assert rows[0]["labels"] == {"relevance": "No", "consistency": "Yes", "specificity": "Yes", "validity": "Yes"}
    assert rows[0]["sample"]["tag"] == "Foldable pet carrier case"
    assert labelled(con, "tags", sources=["gold"]) == []
    partial = labelled(con, "tags", complete_only=False)
    assert [(r["sample_hash"], r["labels"]) for r in partial] == [
        (hb, {"relevance": "Yes"}), (ha, rows[0]["labels"])]
    # one skip keeps a sample out of the complete set even when a later criterion is answered
    add_label(con, hb, "tags", "specificity", "Yes", annotator="x", source="human")
    add_label(con, hb, "tags", "validity", "Yes", annotator="x", source="human")
    assert [r["sample_hash"] for r in labelled(con, "tags")] == [ha]


def test_import_gold_tags(con) -> None:
    n = import_labels(con, GOLD_TAGS, "tags", source="gold", annotator="paper")
    assert n == {"samples": 48, "new_samples": 48, "labels": 192, "already_stored": 0}
    got = current_labels(con, "tags")
    want = {sample_hash(r, "tags"): r["labels"] for r in gold_rows()}
    assert got == want
    assert import_labels(con, GOLD_TAGS, "tags", source="gold", annotator="paper")["labels"] == 0
    counts = label_counts(con, "tags")
    assert counts["samples"] == 48 and counts["complete"] == 48 and counts["by_source"] == {"gold": 192}
    assert sum(counts["by_criterion"]["relevance"].values()) == 48
    assert counts["by_criterion"]["relevance"]["No"] == sum(r["labels"]["relevance"] == "No" for r in gold_rows())


def test_import_bad_label_line_names_file_and_line_and_stores_nothing(con, tmp_path: Path) -> None:
    rows = gold_rows()[:3]
    rows[2] = {**rows[2], "labels": {**rows[2]["labels"], "validity": "Maybe"}}
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    with pytest.raises(BadInput) as exc:
        import_labels(con, bad, "tags", source="human", annotator="a")
    assert exc.value.message == f"{bad}:3: validity: 'Maybe' is not one of Yes, No"
    assert con.execute("SELECT (SELECT count(*) FROM judge_items) + (SELECT count(*) FROM judge_labels)"
                       ).fetchone() == (0,)
    rows[2] = {**gold_rows()[2], "ts": "yesterday"}
    bad.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    with pytest.raises(BadInput, match=r"bad\.jsonl:3: 'ts' 'yesterday' is not an ISO 8601 date-time"):
        import_labels(con, bad, "tags", source="human", annotator="a")


def test_import_row_overrides_source_annotator_ts(con, tmp_path: Path) -> None:
    row = {**gold_rows()[0], "source": "expert", "annotator": "zoe", "ts": "2025-01-02T03:04:05Z"}
    f = tmp_path / "one.jsonl"
    f.write_bytes(orjson.dumps(row) + b"\n")
    import_labels(con, f, "tags", source="human", annotator="a")
    [r] = labelled(con, "tags")
    assert (r["source"], r["annotator"], r["ts"]) == ("expert", "zoe", datetime(2025, 1, 2, 3, 4, 5))


def test_export_import_round_trip(con, tmp_path: Path, capsysbinary) -> None:
    import_labels(con, GOLD_TAGS, "tags", source="gold", annotator="paper")
    h = sample_hash(gold_rows()[0], "tags")
    add_label(con, h, "tags", "validity", "No", annotator="ann", source="human")
    before = current_labels(con, "tags")
    out = tmp_path / "export.jsonl"
    assert export_labels(con, "tags", str(out)) == 48
    exported = [rec for _, rec in iter_jsonl(out)]
    first = next(r for r in exported if r["sample_hash"] == h)
    assert (first["sample_id"], first["labels"]["validity"], first["source"], first["annotator"]) == (
        "paper-t3-pet-case", "No", "human", "ann")
    datetime.fromisoformat(first["ts"])
    assert "note" in first  # sample fields travel with the labels
    other = open_buffer(tmp_path / "other.duckdb")
    try:
        n = import_labels(other, out, "tags", source="ignored", annotator="ignored")
        assert n["samples"] == 48 and n["labels"] == 192
        assert current_labels(other, "tags") == before
        assert {r["sample_hash"] for r in labelled(other, "tags", sources=["human"])} == {h}
        assert import_labels(other, out, "tags", source="x", annotator="x")["labels"] == 0
    finally:
        other.close()
    assert export_labels(con, "tags", "-", sources=["human"]) == 0
    assert export_labels(con, "tags", "-") == 48
    lines = capsysbinary.readouterr().out.splitlines()
    assert len(lines) == 48 and orjson.loads(lines[0])["labels"]
