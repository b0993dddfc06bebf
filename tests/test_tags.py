"""predict-tags (§2.2.1): the paper's constraints enforced in code, call planning, failure rows, CLI, real model."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from recgpt_cli.errors import BadInput
from recgpt_cli.llm.base import FakeBackend
from recgpt_cli.llm.structured import StructuredLLM
from recgpt_cli.tags import (
    MAX_EXPLORE,
    PredictedTag,
    clean_tags,
    history_items,
    interest_leaves,
    is_stale,
    is_vague,
    link_interest,
    predict_tags,
    recent_phrases,
    tag_list_model,
    tag_words,
)

DAY = date(2025, 6, 30)
INTERESTS = [
    {"interest_id": "I1", "interest": "tennis", "stage": "long-term", "reason": "racket and balls"},
    {"interest_id": "I2", "interest": "outdoor hiking", "stage": "long-term", "reason": "boots and backpack"},
]
# A `mine-interests` record, written by hand.
RECORD: dict[str, Any] = {
    "user_id": "u1",
    "attributes": {"age": 31, "gender": "F"},
    "compressed": "2025-06-20 (purchase) | Volley Pro Tennis Racket; 2025-04 (search) | waterproof hiking boots",
    "recent_items": [
        {"title": "Volley Pro Tennis Racket", "category": ["Sports", "Racket Sports", "Tennis Rackets"],
         "timestamp": "2025-06-20T10:00:00"},
        {"title": "Trailmark Running Shoes", "category": "Sports > Running > Running Shoes", "timestamp": 1750000000},
        {"title": "Summit Camping Tent", "category": ["Sports", "Outdoor", "Camping Tents"],
         "timestamp": "2025-05-01T09:00:00"},  # 60 days before DAY: not recent
    ],
    "recent_queries": ["tennis balls"],
    "interests": INTERESTS,
    "interest_rules_removed": {"vague": 0, "unsupported": 0, "duplicate": 0, "over_cap": 0},
}


def tag(t: str, interest: str = "I1", reason: str = "fits the history") -> PredictedTag:
    return PredictedTag(tag=t, interest=interest, reason=reason)


def reply(*tags: tuple[str, str]) -> str:
    return json.dumps({"tags": [{"item_tag": t, "reason": "fits the history", "serves_interest": i} for t, i in tags]})


# ---- rules ----

def test_vague_tags() -> None:
    assert is_vague("tennis")  # no modifier + core word
    assert is_vague("nice things")  # only vague words
    assert is_vague("smart set")  # the paper's own examples of vague words
    assert is_vague("good stuff") and is_vague("best products") and is_vague("a b")
    assert not is_vague("smart watch")  # one specific word is enough
    assert not is_vague("foldable pet carrier")
    assert tag_words("Best Waterproof Hiking Boots") == {"waterproof", "hiking", "boot"}


def test_link_interest_by_id_then_by_text() -> None:
    assert link_interest("I2", INTERESTS) == "I2"
    assert link_interest(" i2 ", INTERESTS) == "I2"
    assert link_interest("2", INTERESTS) == "I2"
    assert link_interest("I2: outdoor hiking", INTERESTS) == "I2"
    assert link_interest("hiking outdoors", INTERESTS) == "I2"  # same words
    assert link_interest("Tennis lessons", INTERESTS) == "I1"  # all the interest's words present
    assert link_interest("hiking", INTERESTS) == "I2"  # Jaccard 1/2
    assert link_interest("I7", INTERESTS) is None
    assert link_interest("cooking", INTERESTS) is None
    assert link_interest("I1", INTERESTS[1:]) is None  # only interests the call saw


def test_freshness_uses_the_titles_of_the_last_30_days_items_only() -> None:
    recent = recent_phrases(RECORD, DAY)
    assert recent == [{"volley", "pro", "tennis", "racket"}, {"trailmark", "running", "shoe"}]
    assert is_stale(tag_words("lightweight tennis racket"), recent)  # 2/3 words in a recent title
    assert is_stale(tag_words("trail running shoes"), recent)  # 2/3 in "Trailmark Running Shoes"
    assert not is_stale(tag_words("tennis elbow brace"), recent)  # 1/3
    assert not is_stale(tag_words("running socks"), recent)  # 1/2
    assert not is_stale(tag_words("two person camping tent"), recent)  # the tent is 60 days old
    # what the user is after is not what they have: a search ("tennis balls") and a category leaf do not count
    assert not is_stale(tag_words("pressurised tennis balls"), recent)
    shoe = {"title": "Aero Flex", "category": "Sports > Running > Running Shoes", "timestamp": "2025-06-25"}
    assert recent_phrases({"recent_items": [shoe]}, DAY) == [{"aero", "flex"}]
    assert not is_stale(tag_words("running shoes"), recent_phrases({"recent_items": [shoe]}, DAY))


def test_clean_tags_exact_output_and_counts() -> None:
    shown = INTERESTS
    predicted = [
        (tag("tennis elbow brace", "I1"), shown),
        (tag("things", "I1"), shown),                          # vague
        (tag("trekking poles", "cooking"), shown),             # unlinked
        (tag("carbon tennis racket", "I1"), shown),            # stale
        (tag("Tennis Elbow Braces", "I1"), shown),             # duplicate
        (tag("trekking poles", "outdoor hiking"), shown),      # linked by text
        (tag("hiking water bottle", "I2"), shown),             # over the cap of 2
    ]
    kept, removed = clean_tags(predicted, RECORD, day=DAY, n_tags=2)
    assert kept == [
        {"tag": "tennis elbow brace", "interest_id": "I1", "interest": "tennis", "reason": "fits the history"},
        {"tag": "trekking poles", "interest_id": "I2", "interest": "outdoor hiking", "reason": "fits the history"},
    ]
    assert removed == {"vague": 1, "bad_reason": 0, "brand": 0, "unlinked": 1, "implausible": 0, "invalid": 0,
                       "stale": 1, "duplicate": 1, "over_cap": 1}


def test_schema_asks_for_k_tags_and_bounds_strings() -> None:
    schema = tag_list_model(4).model_json_schema()
    assert (schema["properties"]["tags"]["minItems"], schema["properties"]["tags"]["maxItems"]) == (4, 4)
    props = schema["$defs"]["PredictedTag"]["properties"]
    assert props["item_tag"]["maxLength"] == 40 and props["reason"]["maxLength"] == 100
    assert sorted(props) == list(props) == ["item_tag", "reason", "serves_interest"]  # generation order
    assert tag_list_model(4).model_validate({"tags": [{"item_tag": "ab", "serves_interest": "I1", "reason": "ab"}]})


# ---- the stage with a fake backend ----

def test_one_call_per_interest_each_linked_to_its_interest() -> None:
    def responder(messages: Any, schema: Any, params: Any) -> str:
        user = messages[-1]["content"]
        if "for interest I1 as JSON" in user:
            return reply(("tennis elbow brace", "I1"), ("vibration dampener pack", "I1"), ("court shoes", "I2"))
        return reply(("trekking poles", "I2"), ("hiking rain poncho", "I2"), ("merino hiking socks", "I2"))

    backend = FakeBackend(responder)
    rows = list(predict_tags([RECORD], StructuredLLM(backend), date=DAY, n_tags=5))
    assert len(backend.calls) == 2
    assert "Date: 2025-06-30 (summer)" in backend.calls[0][-1]["content"]
    assert "User Interests: I1: tennis (long-term)" in backend.calls[0][-1]["content"]
    assert "Engaged in the last 30 days (do not repeat): Volley Pro Tennis Racket; Trailmark Running Shoes\n" in \
        backend.calls[0][-1]["content"]
    row = rows[0]
    # taken in turns, each interest's first tag before any second one
    assert [(t["tag"], t["interest_id"]) for t in row["tags"]] == [
        ("tennis elbow brace", "I1"), ("trekking poles", "I2"), ("vibration dampener pack", "I1"),
        ("hiking rain poncho", "I2"), ("merino hiking socks", "I2")]
    # "court shoes" named I2 in the call that only saw I1.
    assert row["tag_rules_removed"] == {"vague": 0, "bad_reason": 0, "brand": 0, "unlinked": 1, "implausible": 0,
                                        "invalid": 0, "stale": 0, "duplicate": 0, "over_cap": 0}

    def two(messages: Any, schema: Any, params: Any) -> str:
        if "for interest I1 as JSON" in messages[-1]["content"]:
            return reply(("tennis elbow brace", "I1"), ("vibration dampener pack", "I1"))
        return reply(("trekking poles", "I2"), ("hiking rain poncho", "I2"))

    # 2 asked per interest, 3 kept: the second interest's first tag comes before the first's second one
    capped = list(predict_tags([RECORD], StructuredLLM(FakeBackend(two)), date=DAY, n_tags=3))[0]
    assert [(t["tag"], t["interest_id"]) for t in capped["tags"]] == [
        ("tennis elbow brace", "I1"), ("trekking poles", "I2"), ("vibration dampener pack", "I1")]
    assert {k: row[k] for k in RECORD} == RECORD and "error" not in row


def test_tags_per_call_is_n_over_interests_bounded() -> None:
    seen: list[int] = []

    def responder(messages: Any, schema: Any, params: Any) -> str:
        seen.append(schema["properties"]["tags"]["maxItems"])
        return reply(("tennis elbow brace", "I1"))

    llm = StructuredLLM(FakeBackend(responder))
    list(predict_tags([RECORD], llm, date=DAY, n_tags=50))
    list(predict_tags([RECORD], llm, date=DAY, n_tags=5))
    list(predict_tags([RECORD], llm, date=DAY, n_tags=50, per_interest=False))
    assert seen == [10, 10, 3, 3, 50]


def test_failures_are_recorded_per_call_and_per_user() -> None:
    def responder(messages: Any, schema: Any, params: Any) -> str:
        return reply(("tennis elbow brace", "I1")) if "for interest I1 as JSON" in messages[-1]["content"] else "{bad"

    row = next(predict_tags([RECORD], StructuredLLM(FakeBackend(responder), retries=0), date=DAY))
    assert [t["tag"] for t in row["tags"]] == ["tennis elbow brace"]
    assert row["tag_errors"][0]["interest_id"] == "I2" and "error" not in row
    row = next(predict_tags([RECORD], StructuredLLM(FakeBackend(lambda m, s, p: "no"), retries=0), date=DAY))
    assert row["tags"] == [] and row["error"].startswith("JSONDecodeError") and len(row["tag_errors"]) == 2


def test_users_without_interests_get_no_call() -> None:
    backend = FakeBackend(lambda m, s, p: reply(("tennis elbow brace", "I1")))
    rows = list(predict_tags([{**RECORD, "interests": []}, {**RECORD, "error": "upstream failed"}],
                             StructuredLLM(backend), date=DAY))
    assert backend.calls == []
    assert [r["tags"] for r in rows] == [[], []] and rows[1]["error"] == "upstream failed"


def test_bad_n_tags() -> None:
    with pytest.raises(BadInput, match="n-tags"):
        list(predict_tags([RECORD], StructuredLLM(FakeBackend(lambda m, s, p: "")), date=DAY, n_tags=0))


# ---- CLI: mine-interests | predict-tags ----

def test_cli_pipeline_and_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recgpt_cli.llm.factory as factory
    from recgpt_cli.cli import app

    def responder(messages: Any, schema: Any, params: Any) -> str:
        if "interests" in schema["properties"]:
            return json.dumps({"interests": [{"interest": "tennis", "stage": "long-term",
                                              "reason": "bought a racket"}]})
        return reply(("tennis elbow brace", "I1"), ("tennis racket", "I1"))

    monkeypatch.setattr(factory, "make_backend", lambda opts: FakeBackend(responder))
    compressed = {k: v for k, v in RECORD.items() if k not in ("interests", "interest_rules_removed")}
    runner = CliRunner()
    mined = runner.invoke(app, ["mine-interests", "-", "--date", "2025-06-30", "--no-cache", "-q"],
                          input=orjson.dumps(compressed).decode() + "\n")
    assert mined.exit_code == 0, mined.output
    res = runner.invoke(app, ["predict-tags", "-", "--date", "2025-06-30", "--no-cache", "--n-tags", "5"],
                        input=mined.stdout)
    assert res.exit_code == 0, res.output
    row = orjson.loads(res.stdout.splitlines()[0])
    assert row["tags"] == [{"tag": "tennis elbow brace", "interest_id": "I1", "interest": "tennis",
                            "reason": "fits the history"}]
    assert row["tag_rules_removed"]["stale"] == 1
    assert "predict-tags" in res.stderr and "1 users, 1 ok" in res.stderr

    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(RECORD) + "\n" + json.dumps({"user_id": "u2", "compressed": "x"}) + "\n")
    res = runner.invoke(app, ["predict-tags", str(src), "--date", "2025-06-30", "--no-cache"])
    assert res.exit_code == 2 and f"{src}:2: expected recgpt mine-interests output (kind 'interests')" in res.stderr


# ---- the real embedded model ----

@pytest.mark.model
def test_real_model_tags_link_to_interests_and_obey_rules() -> None:
    from recgpt_cli.llm.llama_cpp_backend import LlamaCppBackend

    llm = StructuredLLM(LlamaCppBackend(), retries=0)
    users = [RECORD, {**RECORD, "user_id": "u2", "interests": INTERESTS[1:]}]
    rows = list(predict_tags(users, llm, date=DAY, n_tags=2))  # 3 calls of one tag each
    assert len(rows) == 2
    for row in rows:
        assert row["tags"] or row.get("error") or sum(row["tag_rules_removed"].values())
        assert len(row["tags"]) <= 2
        ids = {i["interest_id"] for i in row["interests"]}
        recent = recent_phrases(row, DAY)
        for t in row["tags"]:
            assert t["interest_id"] in ids
            assert not is_vague(t["tag"]) and not is_stale(tag_words(t["tag"]), recent)


def test_date_comes_from_the_record_when_not_given() -> None:
    backend = FakeBackend(lambda m, s, p: reply(("tennis elbow brace", "I1")))
    row = next(predict_tags([{**RECORD, "date": "2025-01-15"}], StructuredLLM(backend), date=None, n_tags=2))
    assert "Date: 2025-01-15 (winter)" in backend.calls[0][-1]["content"]
    assert row["tags"]
    with pytest.raises(BadInput, match="no date"):
        next(predict_tags([RECORD], StructuredLLM(backend), date=None))


def test_relevant_history_keeps_the_lines_behind_the_interest() -> None:
    from recgpt_cli.tags import relevant_history

    history = ("2025-06-20(purchase) | Volley Pro Tennis Racket (Tennis Rackets)\n"
               "2025-05(detail_view) | Lumina Cookware Set (Cookware)\n"
               "2025-04(search) | search:\"tennis balls\"")
    tennis = [{"interest_id": "I1", "interest": "Tennis", "reason": "bought a racket"}]
    assert relevant_history(history, tennis) == (
        "2025-06-20(purchase) | Volley Pro Tennis Racket (Tennis Rackets)\n2025-04(search) | search:\"tennis balls\"")
    assert relevant_history(history, tennis, limit=1).count("\n") == 0
    # nothing matches: the whole history rather than none
    assert relevant_history(history, [{"interest_id": "I2", "interest": "Origami"}]) == history


# ---- tightened rules (issue 8): reasons, brands, plausibility, validity ----


def _catalogue() -> Any:
    from recgpt_cli.catalogue import Catalogue
    from recgpt_cli.tag_category import train_tag_category

    items = [("Volley Pro Tennis Racket", ["Sports", "Racket Sports", "Tennis Rackets"], "Volley"),
             ("Acecourt Tennis Balls 4-Pack", ["Sports", "Racket Sports", "Tennis Balls"], "Acecourt"),
             ("Acecourt Tennis Elbow Brace", ["Sports", "Racket Sports", "Tennis Balls"], "Acecourt"),
             ("Trailpeak Waterproof Hiking Boots", ["Sports", "Outdoor", "Hiking Boots"], "Trailpeak"),
             ("Trailpeak Trekking Poles Carbon", ["Sports", "Outdoor", "Trekking Poles"], "Trailpeak"),
             ("Velvet Bloom Eau de Parfum", ["Beauty", "Fragrance", "Perfume"], "Velvet Bloom"),
             ("Puzzleworks Jigsaw Puzzle 1000", ["Toys", "Puzzles", "Jigsaw Puzzles"], "Puzzleworks")]
    phi = train_tag_category([t for t, _, _ in items] * 3, [p[-1] for _, p, _ in items] * 3)
    return Catalogue.from_items(items, phi)


def test_bad_reasons_are_rejected_and_real_ones_kept() -> None:
    shown = INTERESTS
    predicted = [(tag("tennis elbow brace", "I1", reason), shown)
                 for reason in ("...", "I2", "tennis elbow brace", "N/A", "[reason]", "brace")]
    # decoding loops the aligned model wrote on ml-100k validation (cut at the schema's length bound)
    predicted += [(tag("tennis elbow brace", "I1", reason), shown) for reason in (
        "after lewd lewd lewd lewd lewd", "after the story of the cat in the story of the cat in the story of th")]
    predicted.append((tag("tennis elbow brace", "I1", "Plays tennis weekly and bought a racket"), shown))
    # a repeated three-word run is still a reason ("the cast iron" twice)
    predicted.append((tag("cast iron tennis brace", "I1", "after the cast iron pan and the cast iron kettle"), shown))
    # and so is one hyphenated word in two titles (four words only if hyphens split them)
    predicted.append((tag("glow tennis brace", "I1", "after glow-in-the-dark puzzle, before that glow-in-the-dark mat"),
                      shown))
    kept, removed = clean_tags(predicted, RECORD, day=DAY, n_tags=10)
    assert removed["bad_reason"] == 8 and [t["reason"] for t in kept] == [
        "Plays tennis weekly and bought a racket", "after the cast iron pan and the cast iron kettle",
        "after glow-in-the-dark puzzle, before that glow-in-the-dark mat"]


def test_catalogue_rules_brand_implausible_invalid() -> None:
    cat = _catalogue()
    shown = INTERESTS
    record = {**RECORD, "compressed": RECORD["compressed"] + ', search:"acecourt balls"'}
    predicted = [
        (tag("Trailpeak hiking boots", "I2"), shown),       # brand copied from the catalogue, never searched
        (tag("Acecourt elbow brace", "I1"), shown),         # brand the user searched for: kept
        (tag("jigsaw puzzle", "I1"), shown),                # a real product, but not a tennis one: implausible
        (tag("tennis elbow brace", "I1"), shown),           # kept
        (tag("electric tennis cooler", "I1"), shown),       # no item carries 3/4 of its words: invalid
        (tag("waterproof hiking boots", "I2"), shown),      # kept
    ]
    kept, removed = clean_tags(predicted, record, day=DAY, n_tags=10, catalogue=cat)
    assert [t["tag"] for t in kept] == ["Acecourt elbow brace", "tennis elbow brace", "waterproof hiking boots"]
    assert (removed["brand"], removed["implausible"], removed["invalid"]) == (1, 1, 1)
    # without a catalogue those three rules are off
    kept, removed = clean_tags(predicted, record, day=DAY, n_tags=10)
    assert len(kept) == 6 and removed["brand"] == removed["implausible"] == removed["invalid"] == 0


def test_interest_leaves_come_from_the_items_behind_the_interest_not_their_lines() -> None:
    cat = _catalogue()
    history = ("2025-05(detail_view) | Trailpeak Waterproof Hiking Boots (Hiking Boots), Velvet Bloom Eau de Parfum "
               "(Perfume)\n2024(categories) | Jigsaw Puzzles x3, Tennis Balls x1")
    phi = {text: cat.leaves_of([text])[0] for text in ("hiking", "weekend trips", "puzzles")}
    assert not any("Perfume" in leaves for leaves in phi.values())
    assert list(history_items(history)) == [
        ("Trailpeak Waterproof Hiking Boots (Hiking Boots)", "Hiking Boots"),
        (" Velvet Bloom Eau de Parfum (Perfume)", "Perfume"),
        ("Jigsaw Puzzles", "Jigsaw Puzzles"), (" Tennis Balls", "Tennis Balls")]
    # the boots share a word with the interest; the perfume only shares their line
    hiking = {"interest_id": "I1", "interest": "hiking", "reason": "bought boots"}
    assert interest_leaves(hiking, history, cat) == phi["hiking"] | {"Hiking Boots"}
    # no item shares a word with the text: the reason's words pick them
    trips = {"interest_id": "I1", "interest": "weekend trips", "reason": "viewed waterproof boots"}
    assert interest_leaves(trips, history, cat) == phi["weekend trips"] | {"Hiking Boots"}
    # the items sharing the most words: the balls for "tennis balls", not the racket seen the same day
    rackets = history + ("\n2025-04(detail_view) | Volley Pro Tennis Racket (Tennis Rackets), Acecourt Tennis Balls "
                         "(Tennis Balls)")
    balls = {"interest_id": "I1", "interest": "tennis balls", "reason": "x"}
    assert interest_leaves(balls, rackets, cat) == cat.leaves_of(["tennis balls"])[0] | {"Tennis Balls"}
    assert "Tennis Rackets" not in cat.leaves_of(["tennis balls"])[0]
    # the summary line's categories count as items
    puzzles = {"interest_id": "I1", "interest": "puzzles", "reason": "x"}
    assert interest_leaves(puzzles, history, cat) == phi["puzzles"] | {"Jigsaw Puzzles"}
    # so a perfume tag linked to the hiking interest is implausible (it passed when whole lines counted)
    record = {**RECORD, "compressed": history}
    kept, removed = clean_tags([(tag("eau de parfum", "I1"), [hiking]), (tag("waterproof hiking boots", "I1"),
                                                                          [hiking])],
                               record, day=DAY, n_tags=10, catalogue=cat)
    assert [t["tag"] for t in kept] == ["waterproof hiking boots"] and removed["implausible"] == 1


# ---- constrained decoding (--constrain) ----

def test_vocabulary_offers_valid_fresh_phrases_and_the_interest_mode_narrows_them() -> None:
    from recgpt_cli.tags import TagVocabulary

    cat = _catalogue()
    assert cat.phrases == ("eau de parfum", "jigsaw puzzle", "pro tennis racket", "tennis balls",
                           "tennis elbow brace", "trekking poles carbon", "waterproof hiking boots")
    vocab = TagVocabulary.of(cat)
    # the racket was bought in the last 30 days: stale, never offered ("tennis balls" was only searched for)
    offered = vocab.allowed("catalogue", RECORD, INTERESTS[:1], day=DAY, catalogue=cat)
    assert offered == ("eau de parfum", "jigsaw puzzle", "tennis balls", "tennis elbow brace",
                       "trekking poles carbon", "waterproof hiking boots")
    narrowed = vocab.allowed("interest", RECORD, INTERESTS[:1], day=DAY, catalogue=cat)
    assert narrowed is not None and "tennis elbow brace" in narrowed and set(narrowed) < set(offered)
    assert "jigsaw puzzle" not in narrowed and "eau de parfum" not in narrowed
    assert vocab.allowed("none", RECORD, INTERESTS[:1], day=DAY, catalogue=cat) is None
    # two months later the racket is no longer recent
    later = vocab.allowed("catalogue", RECORD, INTERESTS[:1], day=date(2025, 8, 30), catalogue=cat)
    assert later == cat.phrases


def test_constrained_calls_write_one_new_catalogue_phrase_each() -> None:
    from recgpt_cli.tags import TagPredictor

    cat = _catalogue()
    enums: list[list[str]] = []

    def responder(messages: Any, schema: Any, params: Any) -> str:
        item = schema["properties"]["tags"]["items"]["properties"]["item_tag"]
        assert schema["properties"]["tags"]["maxItems"] == 1
        enums.append(item["enum"])
        iid = "I1" if "for interest I1 as JSON" in messages[-1]["content"] else "I2"
        return reply((item["enum"][-1], iid))  # the last phrase offered: each call must offer a new one

    backend = FakeBackend(responder)
    predictor = TagPredictor(StructuredLLM(backend), DAY, n_tags=4, catalogue=cat, constrain="catalogue")
    row, gens = predictor(RECORD)
    assert len(backend.calls) == 4 == len(gens)  # k = 2 tags for each of the 2 interests, one call each
    assert enums[0] == ["eau de parfum", "jigsaw puzzle", "tennis balls", "tennis elbow brace",
                        "trekking poles carbon", "waterproof hiking boots"]
    assert [e[-1] for e in enums] == ["waterproof hiking boots", "trekking poles carbon", "tennis elbow brace",
                                      "tennis balls"]
    assert all(len(b) == len(a) - 1 for a, b in zip(enums, enums[1:], strict=False))
    assert row["tag_rules_removed"]["duplicate"] == row["tag_rules_removed"]["stale"] == 0
    # nothing fresh left for an interest: no call, and the record says so
    backend.calls.clear()
    only_stale = TagPredictor(StructuredLLM(backend), DAY, n_tags=4, catalogue=_catalogue_of_stale_items(),
                              constrain="catalogue")
    row, gens = only_stale(RECORD)
    assert gens == [] and row["tags"] == [] and row["tags_unavailable"] == ["I1", "I2"] and "error" not in row


def _catalogue_of_stale_items() -> Any:
    from recgpt_cli.catalogue import Catalogue

    return Catalogue.from_items([("Volley Pro Tennis Racket", ["Sports", "Tennis Rackets"], "Volley"),
                                 ("Volley Tennis Racket", ["Sports", "Tennis Rackets"], "Volley")])


def test_unconstrained_calls_and_bad_modes() -> None:
    from recgpt_cli.tags import TagPredictor

    schemas: list[Any] = []

    def responder(messages: Any, schema: Any, params: Any) -> str:
        schemas.append(schema)
        return reply(("tennis elbow brace", "I1"))

    predictor = TagPredictor(StructuredLLM(FakeBackend(responder)), DAY, n_tags=4, catalogue=_catalogue(),
                             constrain="none")
    predictor(RECORD)
    assert len(schemas) == 2 and all("enum" not in s["properties"]["tags"]["items"]["properties"]["item_tag"]
                                     for s in schemas)
    # a free-running backend (hf) cannot be held to an enum: free-text calls, one per interest
    free = FakeBackend(responder)
    free.enforces_schema = False  # type: ignore[attr-defined]
    schemas.clear()
    TagPredictor(StructuredLLM(free), DAY, n_tags=4, catalogue=_catalogue(), constrain="catalogue")(RECORD)
    assert len(schemas) == 2 and all("enum" not in s["properties"]["tags"]["items"]["properties"]["item_tag"]
                                     for s in schemas)
    with pytest.raises(BadInput, match="--constrain free: must be one of none, catalogue, interest"):
        TagPredictor(StructuredLLM(FakeBackend(responder)), DAY, constrain="free")


@pytest.mark.model
def test_real_model_constrained_tags_come_from_the_offered_phrases() -> None:
    from recgpt_cli.llm.llama_cpp_backend import LlamaCppBackend
    from recgpt_cli.tags import TagPredictor

    cat = _catalogue()
    offered = set(cat.phrases) - {"pro tennis racket"}
    predictor = TagPredictor(StructuredLLM(LlamaCppBackend(), retries=0), DAY, n_tags=4, catalogue=cat,
                             constrain="catalogue")
    row, gens = predictor(RECORD)
    written = [t.tag for g in gens if g.value is not None for t in g.value.tags]
    assert written and set(written) <= offered  # llama.cpp's grammar kept the free-running model in the enum
    assert len(set(written)) == len(written)  # and no call repeated an earlier phrase
    assert row["tag_rules_removed"]["invalid"] == row["tag_rules_removed"]["stale"] == 0


def test_cli_constrain_with_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """predict-tags --db: constrained by default (every tag one of the store's phrases); a bad mode exits 2."""
    from test_align_data import make_store

    import recgpt_cli.llm.factory as factory
    from recgpt_cli.catalogue import Catalogue
    from recgpt_cli.cli import app
    from recgpt_cli.store import open_db

    store = make_store(tmp_path / "shop.duckdb")
    con = open_db(store, read_only=True)
    phrases = set(Catalogue.from_db(con, with_phi=False).phrases)
    con.close()
    enums: list[list[str]] = []

    def responder(messages: Any, schema: Any, params: Any) -> str:
        enum = schema["properties"]["tags"]["items"]["properties"]["item_tag"]["enum"]
        enums.append(enum)
        iid = "I1" if "for interest I1 as JSON" in messages[-1]["content"] else "I2"
        return reply((enum[0], iid))

    monkeypatch.setattr(factory, "make_backend", lambda opts: FakeBackend(responder))
    runner = CliRunner()
    res = runner.invoke(app, ["predict-tags", "-", "--db", str(store), "--date", "2025-06-30", "--no-cache",
                              "--n-tags", "4"], input=json.dumps(RECORD) + "\n")
    assert res.exit_code == 0, res.output
    row = orjson.loads(res.stdout.splitlines()[0])
    assert enums and all(set(e) <= phrases for e in enums)
    assert row["tags"] and {t["tag"] for t in row["tags"]} <= phrases
    calls = len(enums)
    res = runner.invoke(app, ["predict-tags", "-", "--db", str(store), "--date", "2025-06-30", "--no-cache",
                              "--n-tags", "4", "--explore", "0"], input=json.dumps(RECORD) + "\n")
    assert res.exit_code == 0, res.output
    plain = orjson.loads(res.stdout.splitlines()[0])
    explored = [t for t in row["tags"] if t.get("explore")]  # --explore 1 by default: one call per interest
    assert len(explored) == 2 and not any(t.get("explore") for t in plain["tags"])
    assert len(enums) - calls == calls - len(explored)
    assert plain["tags"] == [t for t in row["tags"] if not t.get("explore")]
    res = runner.invoke(app, ["predict-tags", "-", "--db", str(store), "--date", "2025-06-30", "--no-cache",
                              "--explore", "6"], input=json.dumps(RECORD) + "\n")
    assert res.exit_code == 2 and "--explore" in res.output
    res = runner.invoke(app, ["predict-tags", "-", "--db", str(store), "--date", "2025-06-30", "--no-cache",
                              "--constrain", "free"], input=json.dumps(RECORD) + "\n")
    assert res.exit_code == 2 and "--constrain free: must be one of none, catalogue, interest" in res.stderr
    stranger = {**RECORD, "user_id": "nobody"}
    res = runner.invoke(app, ["predict-tags", "-", "--db", str(store), "--date", "2025-06-30", "--no-cache"],
                        input=json.dumps(stranger) + "\n")
    assert res.exit_code == 2 and "<stdin>:1: unknown user_id 'nobody'" in res.stderr, res.output
    res = runner.invoke(app, ["predict-tags", "-", "--db", str(store), "--date", "2025-06-30", "--no-cache",
                              "--max-tags-per-call", "0"], input=json.dumps(RECORD) + "\n")
    assert res.exit_code == 2 and "--max-tags-per-call" in res.stderr


def test_exploration_tags_come_from_neighbour_categories_the_history_never_shows() -> None:
    from recgpt_cli.tags import TagPredictor, clean_tags, explore_leaves

    cat = _catalogue()
    assert cat.related_leaves({"Hiking Boots"}) == {"Trekking Poles"}  # both under Sports > Outdoor
    assert cat.related_leaves({"Perfume"}) == set() and cat.related_leaves({"Unknown"}) == set()
    record = {**RECORD, "categories": ["Tennis Rackets", "Hiking Boots"]}
    # tennis (φ: Tennis Balls) has one neighbour, Tennis Rackets, and the user has it; trekking poles are new
    assert explore_leaves(INTERESTS[0], record, cat) == set()
    assert explore_leaves(INTERESTS[1], record, cat) == {"Trekking Poles"}
    enums: list[list[str]] = []

    def responder(messages: Any, schema: Any, params: Any) -> str:
        enums.append(schema["properties"]["tags"]["items"]["properties"]["item_tag"]["enum"])
        iid = "I1" if "for interest I1 as JSON" in messages[-1]["content"] else "I2"
        return reply((enums[-1][0], iid))

    backend = FakeBackend(responder)
    row, gens = TagPredictor(StructuredLLM(backend), DAY, n_tags=2, catalogue=cat, constrain="interest")(record)
    # one interest tag each (k = 2 / 2), then one exploration call for hiking only (tennis has nowhere new to go)
    assert enums == [["tennis balls", "tennis elbow brace"], ["waterproof hiking boots"], ["trekking poles carbon"]]
    assert len(gens) == 3
    assert [(t["tag"], t["interest_id"], t.get("explore")) for t in row["tags"]] == [
        ("tennis balls", "I1", None), ("waterproof hiking boots", "I2", None), ("trekking poles carbon", "I2", True)]
    assert row["tag_rules_removed"]["over_cap"] == 0  # exploration tags sit outside --n-tags
    backend.calls.clear()
    row, gens = TagPredictor(StructuredLLM(backend), DAY, n_tags=2, catalogue=cat, constrain="interest",
                             explore=0)(record)
    assert len(gens) == 2 and not any(t.get("explore") for t in row["tags"])
    # the rules hold exploration tags to the neighbours: perfume is nobody's neighbour, and an interest tag may not
    # leave the interest's own categories
    explorer = [{**INTERESTS[1], "explore": True}]
    kept, removed = clean_tags([(tag("eau de parfum", "I2"), explorer), (tag("trekking poles carbon", "I2"),
                                                                         INTERESTS[1:]),
                                (tag("trekking poles carbon", "I2"), explorer)], record, day=DAY, n_tags=1,
                               catalogue=cat)
    assert removed["implausible"] == 2 and [(t["tag"], t.get("explore")) for t in kept] == [
        ("trekking poles carbon", True)]
    with pytest.raises(BadInput, match="explore"):
        TagPredictor(StructuredLLM(backend), DAY, explore=MAX_EXPLORE + 1)
