"""Explanations (recgpt_cli.explain, §2.4): table building, lookup, fallback, safety regeneration, CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from recgpt_cli.explain import (
    ExplainStats,
    OverlapMatcher,
    build_explanation_table,
    default_matcher,
    explain_recommendations,
    interest_category_pairs,
    load_items,
    load_table,
    names_subject,
    parse_user_interests,
)
from recgpt_cli.llm.base import FakeBackend, SamplingParams
from recgpt_cli.llm.structured import StructuredLLM
from recgpt_cli.store import connect

ITEMS = [
    ("i1", "Waterproof hiking backpack 30L", ["Sports", "Outdoor", "Backpacks"]),
    ("i2", "Trail running shoes", ["Sports", "Outdoor", "Hiking Shoes"]),
    ("i3", "Baby sun hat with wide brim", ["Baby", "Clothing", "Baby Hats"]),
    ("i4", "Stainless steel frying pan", ["Home", "Kitchen", "Cookware"]),
]
USERS = [
    {"user_id": "u1", "attributes": {"name": "Li Na", "age": 30}, "compressed": "",
     "interests": [{"interest_id": "I1", "interest": "Outdoor hiking"}, {"interest_id": "I2", "interest": "Baby care"}],
     "tags": [{"tag": "Waterproof hiking backpack", "interest_id": "I1"},
              {"tag": "Trail hiking shoes", "interest_id": "I1"},
              {"tag": "Wide brim baby sun hat", "interest_id": "I2"},
              {"tag": "Orphan tag", "interest_id": "I9"}]},
    {"user_id": "u2", "attributes": {}, "compressed": "",
     "interests": [{"interest_id": "I1", "interest": "Outdoor hiking"}],
     "tags": [{"tag": "Hiking backpack rain cover", "interest_id": "I1"}]},
]


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.duckdb"
    with connect(path) as con:
        for iid, title, cat in ITEMS:
            con.execute("INSERT INTO items VALUES (?, ?, ?, ?, NULL, NULL, NULL, NULL)", [iid, title, cat, cat[-1]])
        con.executemany("INSERT INTO users VALUES (?, NULL)", [[u["user_id"]] for u in USERS])
    return path


def _interest_of(messages: list[dict[str, str]]) -> str:
    return re.search(r"User Interest: (.*)", messages[-1]["content"]).group(1).strip()


def fake_llm(reply: Any = None) -> tuple[StructuredLLM, FakeBackend]:
    def responder(messages, schema, params: SamplingParams) -> str:
        if reply is not None:
            return reply(messages, params)
        return orjson.dumps({"explanation": f"Made for {_interest_of(messages).lower()} days"}).decode()

    backend = FakeBackend(responder)
    return StructuredLLM(backend), backend


def test_parse_user_interests_links_tags_by_id_and_drops_orphans() -> None:
    u = parse_user_interests(USERS[0])
    assert u.interests == ["Outdoor hiking", "Baby care"]
    assert u.tags == [("Waterproof hiking backpack", "Outdoor hiking"), ("Trail hiking shoes", "Outdoor hiking"),
                      ("Wide brim baby sun hat", "Baby care")]
    with pytest.raises(ValueError, match="interests"):
        parse_user_interests({"user_id": "u1"})


def test_overlap_matcher_maps_tags_to_categories(db: Path) -> None:
    m = OverlapMatcher(load_items(db).values())
    top = m.predict(["Waterproof hiking backpack", "Wide brim baby sun hat", "quantum flux"], 2)
    assert top[0][0][0] == "Backpacks"
    assert top[1][0][0] == "Baby Hats"
    assert top[2] == []


def test_default_matcher_is_the_shared_tag_category_model(db: Path) -> None:
    m, name = default_matcher(load_items(db))
    assert name == "tag_category"
    assert [top[0][0] for top in m.predict(["Waterproof hiking backpack", "baby sun hat"], 1)] == [
        "Backpacks", "Baby Hats"]


def test_table_one_call_per_distinct_pair_then_resume(db: Path) -> None:
    users = [parse_user_interests(r) for r in USERS]
    matcher = OverlapMatcher(load_items(db).values())
    pairs = interest_category_pairs(users, matcher, k=1)
    # u1 and u2 share ("Outdoor hiking", "Backpacks"): one pair, not one per user.
    assert sorted(pairs) == [("Baby care", "Baby Hats"), ("Outdoor hiking", "Backpacks"),
                             ("Outdoor hiking", "Hiking Shoes")]
    llm, backend = fake_llm()
    stats = ExplainStats()
    rows = build_explanation_table(db, users, llm, date="2025-06-18", matcher=matcher, k=1, stats=stats)
    assert len(backend.calls) == 3 and stats.llm_calls == 3 and len(rows) == 3
    assert {r["explanation"] for r in rows} == {"Made for baby care days", "Made for outdoor hiking days"}
    assert "Current Date: 2025-06-18" in backend.calls[0][-1]["content"]
    # A rerun finds every pair stored already: no LLM call at all.
    stats2 = ExplainStats()
    assert build_explanation_table(db, users, llm, date="2025-06-18", matcher=matcher, k=1, stats=stats2) == []
    assert len(backend.calls) == 3 and stats2.pairs_existing == 3
    table = load_table(db)
    assert table[("outdoor hiking", "hiking shoes")] == "Made for outdoor hiking days"


def test_online_lookup_and_fallback(db: Path) -> None:
    users = {r["user_id"]: parse_user_interests(r) for r in USERS}
    table = {("baby care", "baby hats"): "Sun-safe and just right for baby"}
    recs = [{"user_id": "u1", "item_id": "i3", "rank": 1, "score": 0.9, "tag": None, "interest_id": "I1"},
            {"user_id": "u1", "item_id": "i4", "rank": 2, "score": 0.5, "tag": None, "interest": None},
            {"user_id": "u9", "item_id": "i3", "rank": 1, "score": 0.5, "tag": None, "interest": None}]
    stats = ExplainStats()
    out = list(explain_recommendations(recs, items=load_items(db), users=users, table=table, stats=stats))
    # The retrieval's interest (I1, hiking) has no entry for Baby Hats; the user's other interest does.
    assert out[0] == {"user_id": "u1", "item_id": "i3", "explanation": "Sun-safe and just right for baby",
                      "interest": "Baby care", "source": "table", "title": "Baby sun hat with wide brim",
                      "category": ["Baby", "Clothing", "Baby Hats"], "interest_id": "I2"}
    assert (out[1]["source"], out[1]["interest"], out[1]["explanation"]) == (
        "fallback", None, "Picked for you from Cookware")
    assert out[2]["source"] == "fallback"  # unknown user: no interests at all
    assert stats.by_source == {"table": 1, "fallback": 2}


def test_a_table_entry_that_calls_the_item_another_category_is_not_served(db: Path) -> None:
    """A table row written for a wrong pair (a pan under the hiking interest) that says the pan is a backpack is
    checked against the item it would be served for and not used: the fallback stands in."""
    users = {r["user_id"]: parse_user_interests(r) for r in USERS}
    rec = {"user_id": "u1", "item_id": "i4", "rank": 1, "score": 0.9, "tag": None, "interest_id": "I1"}
    for text, source in [("This item is a light backpack for long trails", "fallback"),
                         ("A hot breakfast at the end of a long trail", "table")]:
        [out] = explain_recommendations([rec], items=load_items(db), users=users,
                                        table={("outdoor hiking", "cookware"): text})
        assert out["source"] == source, text


def test_llm_mode_regenerates_unsafe_then_drops(db: Path) -> None:
    users = {r["user_id"]: parse_user_interests(r) for r in USERS}
    items = load_items(db)

    def reply(messages, params: SamplingParams) -> str:
        # Seed 0: hard sell; first regeneration: leaks the user's name; second: fine.
        text = {0: "Buy now, hiking pack!", 7919: "Li Na, this pack is yours"}.get(params.seed, "Rain-proof pal")
        return orjson.dumps({"explanation": text}).decode()

    llm, backend = fake_llm(reply)
    stats = ExplainStats()
    recs = [{"user_id": "u1", "item_id": "i1", "interest_id": "I1"}]
    out = list(explain_recommendations(recs, items=items, users=users, mode="llm", llm=llm, stats=stats))
    assert (out[0]["explanation"], out[0]["source"], out[0]["interest"]) == (
        "Rain-proof pal", "llm", "Outdoor hiking")
    assert stats.regenerated == 2 and stats.dropped == 0 and len(backend.calls) == 3
    assert stats.safety_failures == {"hard_sell": 1, "pii_term": 1}

    always_bad, backend2 = fake_llm(lambda m, p: orjson.dumps({"explanation": "Hurry!! limited time"}).decode())
    stats = ExplainStats()
    out = list(explain_recommendations(recs, items=items, users=users, mode="llm", llm=always_bad, stats=stats))
    assert out[0]["source"] == "fallback" and out[0]["explanation"] == "Picked for you from Backpacks"
    assert stats.dropped == 1 and len(backend2.calls) == 3


def test_invalid_llm_json_counts_as_error_not_crash(db: Path) -> None:
    users = {r["user_id"]: parse_user_interests(r) for r in USERS}
    llm, _ = fake_llm(lambda m, p: "not json")
    stats = ExplainStats()
    out = list(explain_recommendations([{"user_id": "u2", "item_id": "i2"}], items=load_items(db), users=users,
                                       mode="llm", llm=llm, stats=stats))
    # the item-only fallback, marked as an LLM failure (not a safety drop) so the command can exit 3
    assert out[0]["source"] == "fallback:llm-error" and stats.llm_errors == 3 and stats.dropped == 1


# --- CLI ---------------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(orjson.dumps(r).decode() + "\n" for r in rows))


def test_cli_build_table_then_lookup(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    llm, backend = fake_llm()
    monkeypatch.setattr("recgpt_cli.llm.factory.make_llm", lambda *a, **k: llm)
    interests, recs = tmp_path / "interests.jsonl", tmp_path / "recs.jsonl"
    _write_jsonl(interests, USERS)
    _write_jsonl(recs, [{"user_id": "u1", "item_id": "i1", "rank": 1, "score": 1.0, "tag": None, "interest_id": "I1"},
                        {"user_id": "u2", "item_id": "i4", "rank": 1, "score": 1.0, "tag": None, "interest": None}])
    table_out = tmp_path / "table.jsonl"
    bare = tmp_path / "bare.duckdb"  # a store whose table was never built: the user's input is at fault, exit 2
    bare.write_bytes(db.read_bytes())
    with duckdb.connect(str(bare)) as con:
        con.execute("DROP TABLE IF EXISTS explanation_table")
    r = CliRunner().invoke(app, ["explain", str(recs), "--db", str(bare), "--interests", str(interests), "-q"])
    assert r.exit_code == 2 and "no explanation_table" in r.output and "--build-table" in r.output, r.output
    r = CliRunner().invoke(app, ["explain", "--build-table", "--db", str(db), "--interests", str(interests),
                                 "--date", "2025-06-18", "--k", "1", "--table-out", str(table_out)])
    assert r.exit_code == 0, r.output
    first = table_out.read_text().splitlines()
    assert len(first) == len(backend.calls) > 0
    # a rerun (say after a kill) generates nothing new but still writes the whole table to --table-out
    r = CliRunner().invoke(app, ["explain", "--build-table", "--db", str(db), "--interests", str(interests),
                                 "--date", "2025-06-18", "--k", "1", "--table-out", str(table_out)])
    assert r.exit_code == 0 and len(backend.calls) == len(first), r.output
    assert sorted(table_out.read_text().splitlines()) == sorted(first)
    r = CliRunner().invoke(app, ["explain", str(recs), "--db", str(db), "--interests", str(interests), "-q"])
    assert r.exit_code == 0, r.output
    rows = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [(x["item_id"], x["source"]) for x in rows] == [("i1", "table"), ("i4", "fallback")]
    assert rows[0]["explanation"] == "Made for outdoor hiking days"


def test_cli_build_table_with_failing_calls_exits_3_and_a_rerun_asks_again(db: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Pairs whose every call fails get no row and the command exits 3 (was: exit 0, "table rows written: 0");
    nothing failed is stored, so the rerun asks for exactly those pairs."""
    from typer.testing import CliRunner

    from recgpt_cli.cli import app
    from recgpt_cli.llm.base import BackendError

    down = {"on": True}

    def reply(messages: Any, params: SamplingParams) -> str:
        if down["on"] and "baby" in _interest_of(messages).lower():
            raise BackendError("HTTP 500")
        return orjson.dumps({"explanation": f"Made for {_interest_of(messages).lower()} days"}).decode()

    llm, backend = fake_llm(reply)
    monkeypatch.setattr("recgpt_cli.llm.factory.make_llm", lambda *a, **k: llm)
    interests = tmp_path / "interests.jsonl"
    _write_jsonl(interests, USERS)
    args = ["explain", "--build-table", "--db", str(db), "--interests", str(interests), "--date", "2025-06-18",
            "--k", "1", "--table-out", str(tmp_path / "table.jsonl")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 3, r.output
    assert "explain --build-table: 1 of" in r.output and "every call failed" in r.output
    rows = len((tmp_path / "table.jsonl").read_text().splitlines())
    down["on"] = False
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "table.jsonl").read_text().splitlines()) == rows + 1


def test_cli_bad_recs_exit_2_with_file_line(db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    interests, recs = tmp_path / "interests.jsonl", tmp_path / "recs.jsonl"
    _write_jsonl(interests, USERS)
    _write_jsonl(recs, [{"user_id": "u1", "item_id": "i1"}, {"user_id": "u1", "item_id": "nope"}])
    table = tmp_path / "t.jsonl"
    _write_jsonl(table, [{"interest": "Outdoor hiking", "category_leaf": "Backpacks", "explanation": "Trail buddy"}])
    args = ["explain", str(recs), "--db", str(db), "--interests", str(interests), "--table", str(table)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and f"{recs}:2: unknown item_id 'nope'" in r.output
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(app, [*args, "--skip-bad", "--out", str(out)])
    assert r.exit_code == 0 and len(out.read_text().splitlines()) == 1
    assert "nope" in (tmp_path / "out.jsonl.rejects.jsonl").read_text()
    # both inputs from stdin cannot both be read: refused, not an empty success (was: exit 0, 0 written)
    r = CliRunner().invoke(app, ["explain", "-", "--db", str(db), "--interests", "-"], input=recs.read_text())
    assert r.exit_code == 2 and "both read stdin" in r.output, r.output
    _write_jsonl(interests, [{"user_id": "u1"}])
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2
    assert f"{interests}:1: expected recgpt mine-interests output (kind 'interests') or recgpt predict-tags" in r.output


def test_cli_unknown_user_and_bad_table_file_exit_2(db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    interests, recs, table = tmp_path / "interests.jsonl", tmp_path / "recs.jsonl", tmp_path / "t.jsonl"
    _write_jsonl(interests, USERS)
    _write_jsonl(recs, [{"user_id": "u1", "item_id": "i1"}, {"user_id": "nobody", "item_id": "i1"}])
    _write_jsonl(table, [{"interest": "Outdoor hiking", "category_leaf": "Backpacks", "explanation": "Trail buddy"}])
    args = ["explain", str(recs), "--db", str(db), "--interests", str(interests)]
    r = CliRunner().invoke(app, [*args, "--table", str(table)])
    assert r.exit_code == 2 and f"{recs}:2: unknown user_id 'nobody'" in r.output
    _write_jsonl(recs, [{"user_id": "u1", "item_id": "i1"}])
    for rows, expect in (([{"interest": "Outdoor hiking", "category_leaf": "Backpacks"}],
                          f"{table}:1: missing or empty 'explanation'"),
                         (None, f"{table}: no such file"), ([], f"{table}: file is empty")):
        if rows is None:
            table.unlink()
        else:
            _write_jsonl(table, rows)
        r = CliRunner().invoke(app, [*args, "--table", str(table)])
        assert r.exit_code == 2 and expect in r.output and "internal error" not in r.output, r.output


@pytest.mark.model
def test_real_model_builds_table_for_two_pairs(db: Path) -> None:
    """The embedded SmolLM2 writes table rows for 2 (interest, category) pairs; each passed the safety filter
    or was dropped and counted (schema-valid, not necessarily good)."""
    from recgpt_cli.llm.factory import make_llm

    users = [parse_user_interests({"user_id": "u1", "interests": [{"interest_id": "I1", "interest": "Outdoor hiking"}],
                                   "tags": [{"tag": "Waterproof hiking backpack", "interest_id": "I1"},
                                            {"tag": "Trail hiking shoes", "interest_id": "I1"}]})]
    stats = ExplainStats()
    rows = build_explanation_table(db, users, make_llm(task="explanation", no_cache=True), date="2025-06-18", k=1,
                                   stats=stats)
    assert stats.pairs == 2
    assert len(rows) + stats.dropped == 2
    for row in rows:
        assert 0 < len(row["explanation"]) <= 80 and row["category_leaf"] in ("Backpacks", "Hiking Shoes")


def test_cli_llm_mode(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    llm, backend = fake_llm()
    monkeypatch.setattr("recgpt_cli.llm.factory.make_llm", lambda *a, **k: llm)
    interests, recs = tmp_path / "interests.jsonl", tmp_path / "recs.jsonl"
    _write_jsonl(interests, USERS)
    _write_jsonl(recs, [{"user_id": "u1", "item_id": "i3", "interest": None}])
    r = CliRunner().invoke(app, ["explain", "--in", str(recs), "--db", str(db), "--interests", str(interests),
                                 "--mode", "llm", "--date", "2025-06-18", "-q"])
    assert r.exit_code == 0, r.output
    [row] = [orjson.loads(line) for line in r.stdout.splitlines()]
    # No interest from retrieval: phi maps "Baby care" to the item's category (Baby Hats), so that one is used.
    assert (row["source"], row["interest"], row["explanation"]) == ("llm", "Baby care", "Made for baby care days")
    assert len(backend.calls) == 1
    # every call failing is not a safety drop: the row says so and the command exits 3 (was: exit 0, "fallback")
    broken, _ = fake_llm(lambda m, p: "not json")
    monkeypatch.setattr("recgpt_cli.llm.factory.make_llm", lambda *a, **k: broken)
    r = CliRunner().invoke(app, ["explain", "--in", str(recs), "--db", str(db), "--interests", str(interests),
                                 "--mode", "llm", "--date", "2025-06-18", "-q"])
    assert r.exit_code == 3 and "1 of 1 recommendations failed" in r.output, r.output
    assert orjson.loads(r.stdout.splitlines()[0])["source"] == "fallback:llm-error"


def test_names_subject_needs_a_word_of_the_interest_or_the_item() -> None:
    item = "category: Home > Bedroom > Bed Pillows; example items: Cloudrest Down Pillow"
    assert names_subject("Softer pillows for tired sleepers", "sleep comfort", item)  # plural folded
    assert names_subject("Rest easy, sleep comfort lover", "sleep comfort", item)
    assert not names_subject("A lovely pick for your week", "sleep comfort", item)
    assert not names_subject("An example of a category item", "tea", item)  # category_texts' labels don't count
