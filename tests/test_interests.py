"""mine-interests (§2.1.2): prompt variables, the post-processing rules, failure rows, the CLI, the real model."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from recgpt_cli.errors import BadInput
from recgpt_cli.interests import (
    RESAMPLES,
    InterestList,
    MinedInterest,
    clean_interests,
    content_words,
    evidence_words,
    interest_list_model,
    is_supported,
    load_interest_pool,
    matched_pool,
    mine_interests,
    season_of,
)
from recgpt_cli.llm.base import FakeBackend
from recgpt_cli.llm.structured import StructuredLLM

DAY = "2025-06-30"

# A `compress` record, written by hand (the contract in COMMON.md plus the optional evidence fields).
RECORD: dict[str, Any] = {
    "user_id": "u1",
    "attributes": {"age": 31, "gender": "F", "location": "Hangzhou"},
    "compressed": "2025-06-20 (purchase, favorite) | Volley Pro Tennis Racket, Tennis Balls 3-pack; "
                  "2025-04 (search) | waterproof hiking boots; 2025-03 (detail_view, cart) | Trailmark Hiking Backpack",
    "n_behaviors": 9,
    "n_tokens_raw": 120,
    "n_tokens_compressed": 50,
    "truncated": False,
    "categories": ["Sports > Racket Sports > Tennis Rackets", "Sports > Outdoor > Hiking Boots",
                   "Pets > Cat > Cat Food"],
    "recent_items": [{"title": "Volley Pro Tennis Racket", "category": ["Sports", "Racket Sports", "Tennis Rackets"],
                      "timestamp": "2025-06-20T10:00:00"}],
}


def mined(*triples: tuple[str, str]) -> list[MinedInterest]:
    return [MinedInterest(interest=i, stage="long-term", reason=r) for i, r in triples]


def reply(*interests: str) -> str:
    return json.dumps({"interests": [{"interest": i, "stage": "long-term", "reason": "seen in history"}
                                     for i in interests]})


def fake_llm(text: str) -> StructuredLLM:
    return StructuredLLM(FakeBackend(lambda messages, schema, params: text))


# ---- words and rules ----

def test_content_words_fold_plurals_and_drop_generic_words() -> None:
    assert content_words("Men's Running Shoes") == {"men", "running", "shoe"}
    assert content_words("Hobbies: buying products for the 2 cats") == {"cat"}
    assert content_words("online shopping stuff") == {"online"}


def test_season_is_northern_meteorological() -> None:
    seasons = [season_of(date(2025, m, 1)) for m in range(1, 13)]
    assert seasons == ["winter"] * 2 + ["spring"] * 3 + ["summer"] * 3 + ["autumn"] * 3 + ["winter"]


def test_hallucination_check_matches_stems_and_long_prefixes_only() -> None:
    ev = evidence_words(RECORD)
    assert {"tennis", "racket", "hiking", "boot", "backpack", "cat"} <= ev
    assert "purchase" not in ev and "detail_view" not in ev and "2025" not in ev  # behaviour words never count
    assert is_supported("Tennis", ev)
    assert is_supported("hike", ev) is False  # "hike" vs "hiking": no prefix relation
    assert is_supported("cat ownership", ev)  # from the categories
    assert is_supported("smart home", ev) is False
    assert is_supported("racketball", ev)  # "racket" is a >= 4-letter prefix
    assert is_supported("catalogue shopping", ev) is False  # "cat" is too short to match as a prefix


def test_clean_interests_applies_rules_in_order_with_exact_counts() -> None:
    raw = mined(
        ("Tennis", "bought a racket"),
        ("online shopping", "buys a lot"),          # vague: no content word left... "online" is one -> unsupported
        ("products", "many products"),             # vague
        ("smart home", "made up"),                 # unsupported
        ("tennis", "racket again"),                    # duplicate (same words)
        ("outdoor hiking", "boots and backpack"),
        ("hiking outdoors", "boots again"),            # duplicate (same words after plural folding)
        ("cat care", "cat food"),
        ("hiking backpack", "new daypack"),         # over the cap of 3
    )
    kept, removed = clean_interests(raw, RECORD, max_interests=3)
    assert kept == [
        {"interest_id": "I1", "interest": "Tennis", "stage": "long-term", "reason": "bought a racket"},
        {"interest_id": "I2", "interest": "outdoor hiking", "stage": "long-term", "reason": "boots and backpack"},
        {"interest_id": "I3", "interest": "cat care", "stage": "long-term", "reason": "cat food"},
    ]
    assert removed == {"vague": 1, "unsupported": 2, "bad_reason": 0, "duplicate": 2, "over_cap": 1}


def test_near_duplicates_by_jaccard() -> None:
    raw = mined(("hiking boots outdoor", "walked trails"), ("outdoor hiking boots trips", "bought maps"),
                ("hiking", "trail boots"))
    kept, removed = clean_interests(raw, RECORD, max_interests=8)
    # {hiking, boot, outdoor} vs {outdoor, hiking, boot, trip}: Jaccard 0.75 >= 0.6; {hiking}: 1/3, kept.
    assert [k["interest"] for k in kept] == ["hiking boots outdoor", "hiking"]
    assert removed["duplicate"] == 1


def test_interest_pool_renames_close_matches_and_dedupes_after_renaming() -> None:
    pool = ["tennis", "cat ownership", "home cooking"]
    raw = mined(("cats", "cat food"), ("Cat lover", "cat food again"), ("hiking", "bought boots"))
    kept, removed = clean_interests(raw, RECORD, max_interests=8, pool=pool)
    assert [(k["interest"], k["preset"]) for k in kept] == [("cat ownership", True), ("hiking", False)]
    assert removed["duplicate"] == 1
    assert matched_pool(pool, evidence_words(RECORD)) == ["tennis", "cat ownership"]  # no cooking evidence


def test_load_interest_pool(tmp_path: Path) -> None:
    f = tmp_path / "pool.txt"
    f.write_text("# comment\ntennis\n\ncat ownership  # inline\ntennis\n")
    assert load_interest_pool(f) == ["tennis", "cat ownership"]
    with pytest.raises(BadInput):
        load_interest_pool(tmp_path / "missing.txt")
    with pytest.raises(BadInput, match="is a directory"):
        load_interest_pool(tmp_path)
    f.write_bytes(b"tennis\nsk\xe9 boots\n")
    with pytest.raises(BadInput, match=r"pool.txt:2: not valid UTF-8"):
        load_interest_pool(f)
    assert load_interest_pool(Path(__file__).parents[1] / "sample_data" / "interest_pool.txt")


def test_schema_bounds_every_string_and_array() -> None:
    schema = interest_list_model(5).model_json_schema()
    arr = schema["properties"]["interests"]
    assert (arr["minItems"], arr["maxItems"]) == (3, 5)  # asks for >= 3 ...
    assert interest_list_model(5).model_validate({"interests": [  # ... but accepts one
        {"interest": "tennis", "stage": "short-term", "reason": "racket"}]})
    item = schema["$defs"]["MinedInterest"]["properties"]
    assert item["interest"]["maxLength"] == 40 and item["reason"]["maxLength"] == 120
    assert item["stage"]["enum"] == ["long-term", "short-term"]
    assert interest_list_model(8) is interest_list_model(8)
    assert issubclass(interest_list_model(2), InterestList)


# ---- the stage with a fake backend ----

def test_mine_interests_renders_prompt_and_keeps_input_fields() -> None:
    backend = FakeBackend(lambda m, s, p: reply("tennis", "smart home", "hiking"))
    rows = list(mine_interests([RECORD], StructuredLLM(backend), date=DAY, max_interests=4))
    # "smart home" is unsupported: asked RESAMPLES times more (this backend always answers the same), the first
    # reply served
    assert len(rows) == 1 and len(backend.calls) == 1 + RESAMPLES and rows[0]["interest_resamples"] == RESAMPLES
    row = rows[0]
    assert {k: row[k] for k in RECORD} == RECORD
    assert row["interests"] == [
        {"interest_id": "I1", "interest": "tennis", "stage": "long-term", "reason": "seen in history"},
        {"interest_id": "I2", "interest": "hiking", "stage": "long-term", "reason": "seen in history"},
    ]
    assert row["interest_rules_removed"] == {"vague": 0, "unsupported": 1, "bad_reason": 0, "duplicate": 0,
                                             "over_cap": 0}
    assert "error" not in row
    system, user = backend.calls[0]
    assert system["role"] == "system" and "shopping guide" in system["content"]
    assert "Date: 2025-06-30 (summer)" in user["content"]
    assert "age: 31, gender: F, location: Hangzhou" in user["content"]
    assert "Volley Pro Tennis Racket" in user["content"]
    assert "at most 4." in system["content"]
    assert user["content"].endswith("List this user's interests as JSON, most important first.")
    assert "{{" not in user["content"]


def test_garbage_output_is_a_failure_row_not_a_crash() -> None:
    backend = FakeBackend(lambda m, s, p: "I think the user likes tennis")
    rows = list(mine_interests([RECORD, {**RECORD, "user_id": "u2"}], StructuredLLM(backend, retries=1), date=DAY))
    assert [r["user_id"] for r in rows] == ["u1", "u2"]
    assert all(r["interests"] == [] and r["error"].startswith("JSONDecodeError") for r in rows)
    assert len(backend.calls) == 4  # one retry each, then give up


LOOP = "1 tennis item over 1 month, lately tennis tennis tennis tennis tennis tennis tennis tennis tennis"


def interests_reply(*pairs: tuple[str, str]) -> str:
    return json.dumps({"interests": [{"interest": i, "stage": "short-term", "reason": r} for i, r in pairs]})


def test_a_looping_reason_is_asked_again_warm_with_a_new_seed() -> None:
    good = interests_reply(("tennis", "2 tennis items over 1 month, lately a racket"),
                           ("hiking", "a search for hiking boots in April"))
    backend = FakeBackend(lambda m, s, p: interests_reply(("tennis", LOOP), ("hiking", LOOP))
                          if p.temperature == 0 else good)
    seeds: list[tuple[float, int]] = []
    llm = StructuredLLM(backend)
    real = llm.generate
    llm.generate = lambda *a: seeds.append((a[3].temperature, a[3].seed)) or real(*a)  # type: ignore[method-assign]
    [row] = mine_interests([RECORD], llm, date=DAY, max_interests=4)
    assert [i["interest"] for i in row["interests"]] == ["tennis", "hiking"]
    assert row["interest_resamples"] == 1 and row["interest_rules_removed"]["bad_reason"] == 0
    assert seeds == [(0.0, 0), (0.7, 1000)]
    # --resamples 0: the one greedy reply, its looping reasons removed and counted
    [row] = mine_interests([RECORD], StructuredLLM(backend), date=DAY, max_interests=4, resamples=0)
    assert row["interests"] == [] and row["interest_rules_removed"]["bad_reason"] == 2
    assert row["interest_resamples"] == 0


def test_resamples_serve_the_reply_keeping_most_interests_first_on_ties() -> None:
    replies = {0: interests_reply(("tennis", "two rackets bought in June"), ("hiking", LOOP)),   # keeps 1
               1000: interests_reply(("tennis", LOOP), ("hiking", "boots searched in April")),  # keeps 1: tie
               2000: interests_reply(("tennis", LOOP), ("hiking", LOOP))}                      # keeps 0
    backend = FakeBackend(lambda m, s, p: replies[p.seed])
    [row] = mine_interests([RECORD], StructuredLLM(backend), date=DAY, max_interests=4, resamples=2)
    assert len(backend.calls) == 3 and row["interest_resamples"] == 2
    assert [(i["interest"], i["reason"]) for i in row["interests"]] == [("tennis", "two rackets bought in June")]
    assert row["interest_rules_removed"]["bad_reason"] == 1
    # an unsupported interest is a fault a new seed can fix too; a duplicate is not
    invented = {0: interests_reply(("tennis", "two rackets bought in June"), ("golf clubs", "a new driver")),
                1000: interests_reply(("tennis", "two rackets bought in June"), ("hiking", "boots in April"))}
    backend = FakeBackend(lambda m, s, p: invented[p.seed])
    [row] = mine_interests([RECORD], StructuredLLM(backend), date=DAY, max_interests=4)
    assert row["interest_resamples"] == 1 and [i["interest"] for i in row["interests"]] == ["tennis", "hiking"]
    twice = interests_reply(("tennis", "two rackets bought in June"), ("tennis", "a racket again in June"))
    backend = FakeBackend(lambda m, s, p: twice)
    [row] = mine_interests([RECORD], StructuredLLM(backend), date=DAY, max_interests=4)
    assert row["interest_rules_removed"]["duplicate"] == 1 and row["interest_resamples"] == 0
    # a reply with no bad reason ends the asking at once
    backend = FakeBackend(lambda m, s, p: replies[p.seed])
    replies[1000] = interests_reply(("hiking", "boots searched in April"))
    backend.calls.clear()
    [row] = mine_interests([RECORD], StructuredLLM(backend), date=DAY, max_interests=4)
    assert len(backend.calls) == 2 and row["interest_resamples"] == 1


def test_bad_options_are_bad_input() -> None:
    with pytest.raises(BadInput, match="resamples"):
        list(mine_interests([RECORD], fake_llm(reply("tennis")), date=DAY, resamples=-1))
    with pytest.raises(BadInput, match="max-interests"):
        list(mine_interests([RECORD], fake_llm(reply("tennis")), date=DAY, max_interests=0))
    with pytest.raises(BadInput, match="--date"):
        list(mine_interests([RECORD], fake_llm(reply("tennis")), date="30/06/2025"))
    with pytest.raises(BadInput, match="TagList"):
        list(mine_interests([RECORD], fake_llm(reply("tennis")), date=DAY, prompt="tag_prediction"))


# ---- CLI ----

@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Route the CLI's backend factory to a FakeBackend answering interests or tags by schema."""
    import recgpt_cli.llm.factory as factory

    calls: list[Any] = []

    def responder(messages: Any, schema: Any, params: Any) -> str:
        calls.append(messages)
        if "interests" in schema["properties"]:
            return reply("tennis", "hiking")
        ids = [i for i in ("I1", "I2") if f"for interest {i} as JSON" in messages[-1]["content"]]
        return json.dumps({"tags": [{"item_tag": "tennis elbow brace" if ids == ["I1"] else "trekking poles pair",
                                     "serves_interest": ids[0], "reason": "fits the history"}]})

    monkeypatch.setattr(factory, "make_backend", lambda opts: FakeBackend(responder))
    return calls


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows))
    return path


def test_cli_mine_interests_file_and_positional(tmp_path: Path, fake_cli: list[Any]) -> None:
    from recgpt_cli.cli import app

    src = write_jsonl(tmp_path / "c.jsonl", [RECORD])
    out = tmp_path / "i.jsonl"
    res = CliRunner().invoke(app, ["mine-interests", str(src), "--out", str(out), "--date", DAY, "--no-cache"])
    assert res.exit_code == 0, res.output
    row = orjson.loads(out.read_bytes())
    assert [i["interest"] for i in row["interests"]] == ["tennis", "hiking"]
    assert "1 users, 1 ok, 0 failed" in res.output


def test_cli_refuses_users_the_aligned_model_learned_under_another_split(tmp_path: Path, fake_cli: list[Any]
                                                                         ) -> None:
    """A model aligned on u1's recbole train history must not write u1's interests for the loo split's test phase:
    that history holds loo's held-out items. The record is refused at its line, before any call."""
    from recgpt_cli.align.provenance import TRAINED_USERS
    from recgpt_cli.cli import app

    model = tmp_path / "aligned"
    model.mkdir()
    (model / TRAINED_USERS).write_text('{"recbole": ["u1"]}')
    (model / "model.gguf").write_bytes(b"")
    src = write_jsonl(tmp_path / "c.jsonl", [{**RECORD, "date": DAY, "split": "loo", "phase": "test", "cut": DAY}])
    res = CliRunner().invoke(app, ["mine-interests", str(src), "--model", str(model / "model.gguf"), "--no-cache"])
    assert res.exit_code == 2, res.output
    assert f"{src}:1: user 'u1': the model was aligned on this user's recbole-split train history" in res.output
    assert fake_cli == []


def test_cli_bad_line_is_exit_2_with_file_and_line(tmp_path: Path, fake_cli: list[Any]) -> None:
    from recgpt_cli.cli import app

    src = write_jsonl(tmp_path / "c.jsonl", [RECORD, {"user_id": "u2"}, b"{oops"])
    res = CliRunner().invoke(app, ["mine-interests", "--in", str(src), "--date", DAY, "--no-cache"])
    assert res.exit_code == 2
    assert f"{src}:2: expected recgpt compress output (kind 'compressed'), got a record no recgpt stage writes" \
        in res.output
    out = tmp_path / "i.jsonl"
    res = CliRunner().invoke(app, ["mine-interests", str(src), "--out", str(out), "--date", DAY, "--no-cache",
                                   "--skip-bad"])
    assert res.exit_code == 0, res.output
    assert len(out.read_bytes().splitlines()) == 1
    rejects = (tmp_path / "i.jsonl.rejects.jsonl").read_bytes().splitlines()
    assert [(orjson.loads(r)["line"], orjson.loads(r)["error"][:18]) for r in rejects] == [
        (2, "expected recgpt co"), (3, "malformed JSON (un")]


def test_cli_date_from_option_or_record(tmp_path: Path, fake_cli: list[Any]) -> None:
    from recgpt_cli.cli import app

    src = write_jsonl(tmp_path / "c.jsonl", [RECORD])
    res = CliRunner().invoke(app, ["mine-interests", str(src), "--no-cache"])
    assert res.exit_code == 2 and f"{src}:1: no `date` in the record and no --date given" in res.output
    assert fake_cli == []
    src = write_jsonl(tmp_path / "c.jsonl", [{**RECORD, "date": "2025-01-10"}])  # compress writes `date`
    res = CliRunner().invoke(app, ["mine-interests", str(src), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "Date: 2025-01-10 (winter)" in fake_cli[0][-1]["content"]


# ---- the real embedded model ----

@pytest.mark.model
def test_real_model_mines_schema_valid_interests() -> None:
    from recgpt_cli.llm.llama_cpp_backend import LlamaCppBackend

    llm = StructuredLLM(LlamaCppBackend(), retries=0)
    users = [RECORD, {**RECORD, "user_id": "u2", "compressed": "2025-06 (purchase) | Catnip Cat Tree, Cat Food 2kg; "
                      "2025-05 (search) | cat litter", "recent_items": []}]
    rows = list(mine_interests(users, llm, date=DAY, max_interests=2))  # ~220 tokens a call at most
    assert len(rows) == 2
    for row in rows:
        assert set(row["interest_rules_removed"]) == {"vague", "unsupported", "bad_reason", "duplicate", "over_cap"}
        assert row["interests"] or row.get("error") or sum(row["interest_rules_removed"].values())
        assert len(row["interests"]) <= 2
        for i, it in enumerate(row["interests"], start=1):
            assert it["interest_id"] == f"I{i}" and it["stage"] in ("long-term", "short-term")
            assert is_supported(it["interest"], evidence_words(row))  # the hallucination rule held


def test_interest_reasons_must_be_sentences() -> None:
    mined = [MinedInterest(interest="tennis", stage="long-term", reason="..."),
             MinedInterest(interest="hiking", stage="long-term", reason="hiking"),
             MinedInterest(interest="tennis", stage="long-term",
                           reason="lately hand-rolled hand-rolled hand-rolled hand-rolled hand-rolled"),
             MinedInterest(interest="hiking", stage="long-term", reason="Bought boots and searched for trails")]
    record = {"user_id": "u1", "compressed": "2025-06(purchase) | tennis racket, hiking boots"}
    kept, removed = clean_interests(mined, record, max_interests=5)
    assert [k["interest"] for k in kept] == ["hiking"] and removed["bad_reason"] == 3
