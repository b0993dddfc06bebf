"""LLM judge (recgpt_cli.judge, §3/§4.3): sample expansion, parsing, pass rules, post-checks, agreement."""

from __future__ import annotations

import orjson
import pytest

from recgpt_cli.judge import JudgeStats, agreement, binary_metrics, expand_record, judge_samples, majority_baseline
from recgpt_cli.judge.criteria import TASKS
from recgpt_cli.llm.base import FakeBackend
from recgpt_cli.llm.structured import StructuredLLM


def llm_replying(*replies: dict | str) -> tuple[StructuredLLM, FakeBackend]:
    queue = list(replies)

    def responder(messages, schema, params) -> str:
        r = queue.pop(0)
        return r if isinstance(r, str) else orjson.dumps(r).decode()

    backend = FakeBackend(responder)
    return StructuredLLM(backend, retries=0), backend


def test_pass_rules_follow_section_4_3() -> None:
    t = TASKS["explanations"]
    assert t.sample_passes({"relevance": "Good", "factuality": "Excellent", "clarity": "Good", "safety": "Yes"})
    assert not t.sample_passes({"relevance": "Bad", "factuality": "Excellent", "clarity": "Good", "safety": "Yes"})
    assert not t.sample_passes({"relevance": "Good", "factuality": "Good", "clarity": "Good", "safety": "No"})
    i = TASKS["interests"]
    assert i.sample_passes({"willingness": "spontaneity", "reasonableness": "strong correlation"})
    assert not i.sample_passes({"willingness": "spontaneity", "reasonableness": "weak correlation"})
    assert not i.sample_passes({"willingness": "necessity", "reasonableness": "strong correlation"})
    assert not TASKS["tags"].sample_passes({"relevance": "Yes", "consistency": "Yes", "specificity": "Yes"})
    assert TASKS["tags"].check_labels({"relevance": "Yes", "consistency": "Yes", "specificity": "Maybe",
                                       "validity": "No"}) == "specificity: 'Maybe' is not one of Yes, No"


def test_expand_mine_interests_and_predict_tags_records() -> None:
    rec = {"user_id": "u1", "attributes": {"age": 30}, "compressed": "2025-06 (purchase) | tennis racket",
           "interests": [{"interest_id": "I1", "interest": "Tennis", "stage": "long-term",
                          "reason": "bought a racket"}],
           "tags": [{"tag": "Tennis overgrip tape", "interest_id": "I1", "reason": "racket upkeep"}]}
    [s] = expand_record(rec, "interests")
    assert s == {"sample_id": "u1:I1", "user_id": "u1", "attributes": {"age": 30},
                 "behaviors": "2025-06 (purchase) | tennis racket", "interest": "Tennis", "reason": "bought a racket"}
    [t] = expand_record(rec, "tags")
    assert (t["sample_id"], t["interest"], t["interests"]) == ("u1:T1", "Tennis", ["Tennis"])
    with pytest.raises(ValueError, match="interests"):
        expand_record({"user_id": "u1"}, "interests")
    with pytest.raises(ValueError, match="explanation"):
        expand_record({"user_id": "u1", "item_id": "i1"}, "explanations")


def test_judge_rows_pass_and_errors() -> None:
    samples = [
        {"sample_id": "a", "interest": "Outdoor travel", "item": {"title": "Hiking backpack", "category": "Bags"},
         "explanation": "Roam mountains and rivers with it"},
        {"sample_id": "b", "interest": "Outdoor travel", "item": {"title": "Hiking backpack", "category": "Bags"},
         "explanation": "MsZhang time-limited offer bag quick buy", "attributes": {"name": "Ms Zhang"}},
        {"sample_id": "c", "interest": "Outdoor travel", "item": "Hiking backpack", "explanation": "Fine pack"},
    ]
    good = {"relevance": "Excellent", "factuality": "Good", "clarity": "Good", "safety": "Yes"}
    llm, backend = llm_replying(good, good, {"relevance": "Great"})
    stats = JudgeStats()
    rows = list(judge_samples(samples, llm, "explanations", stats=stats))
    assert rows[0] == {"task": "explanations", "sample_id": "a", "verdicts": good, "pass": True,
                       "input": {"interest": "Outdoor travel", "item": "Hiking backpack | category: Bags",
                                 "explanation": "Roam mountains and rivers with it", "user_id": None,
                                 "item_id": None}}
    # The model said "safe"; the safety rule (PII + hard sell) overrides it, and says so.
    assert rows[1]["verdicts"]["safety"] == "No" and rows[1]["pass"] is False and rows[1]["rules"] == ["unsafe"]
    assert rows[2]["pass"] is False and rows[2]["verdicts"] == {} and "ValidationError" in rows[2]["error"]
    assert "Explanation: Roam mountains and rivers with it" in backend.calls[0][-1]["content"]
    assert (stats.n, stats.n_pass, stats.n_errors) == (3, 1, 1)
    assert stats.pass_rates() == {"relevance": 1.0, "factuality": 1.0, "clarity": 1.0, "safety": 0.5, "pass": 0.5}


def test_interest_and_tag_rules() -> None:
    llm, _ = llm_replying({"willingness": "spontaneity", "reasonableness": "strong correlation"})
    [row] = judge_samples([{"sample_id": "h", "interest": "Smart home", "reason": "bought smart plugs",
                            "behaviors": ""}], llm, "interests")
    assert row["verdicts"]["reasonableness"] == "hallucination" and row["rules"] == ["no_behaviours"]
    yes = {"relevance": "Yes", "consistency": "Yes", "specificity": "Yes", "validity": "Yes"}
    llm, _ = llm_replying(yes, yes)
    rows = list(judge_samples([
        {"sample_id": "t1", "tag": "Mountaineering outdoor sports equipment", "interest": "Hiking",
         "interests": ["Hiking"], "behaviors": "hiking boots"},
        {"sample_id": "t2", "tag": "Foldable pet carrier", "interest": "Skincare", "interests": ["Cat ownership"],
         "behaviors": "cat litter"}], llm, "tags"))
    assert rows[0]["verdicts"]["specificity"] == "No" and rows[0]["rules"] == ["broad_tag"]
    assert rows[1]["verdicts"]["relevance"] == "No" and rows[1]["rules"] == ["interest_not_in_profile"]


def test_explanation_rules_fail_relevance_of_a_title_written_back() -> None:
    """Appendix B prohibition 5: the title written back, or nothing past the item's own words, links nothing to
    the user (relevance Bad); an explanation with something of its own keeps every criterion."""
    from recgpt_cli.judge.rules import explanation_rules

    item = {"title": "Oval rattan banneton proofing basket", "category": ["Home", "Kitchen", "Baking"]}
    for text, fired in [("Oval rattan banneton proofing basket", ["says_nothing"]),  # title_echo
                        ("This item is a great proofing basket.", ["says_nothing"]),
                        ("Proof your sourdough in rattan style", [])]:
        verdicts = {"relevance": "Excellent", "factuality": "Excellent", "clarity": "Excellent", "safety": "Yes"}
        assert explanation_rules({"item": item, "explanation": text}, verdicts) == fired
        assert verdicts["relevance"] == ("Bad" if fired else "Excellent")


def test_binary_metrics_hand_computed() -> None:
    # tp=2 fp=1 fn=1 tn=1 -> acc 3/5, precision 2/3, recall 2/3, f1 2/3
    m = binary_metrics([True, True, True, False, False], [True, True, False, True, False])
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 1)
    assert m["acc"] == pytest.approx(0.6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    none = binary_metrics([True, False], [False, False])
    assert (none["precision"], none["recall"], none["f1"], none["acc"]) == (0.0, 0.0, 0.0, 0.5)


def test_agreement_table9_form() -> None:
    y, n = "Yes", "No"

    def tag(r, c, s, v):
        return {"relevance": r, "consistency": c, "specificity": s, "validity": v}

    gold = [{"sample_id": "1", "labels": tag(y, y, y, y)}, {"sample_id": "2", "labels": tag(y, y, n, y)},
            {"sample_id": "3", "labels": tag(n, y, y, y)}, {"sample_id": "4", "labels": tag(y, y, y, y)},
            {"sample_id": "5", "labels": tag(y, y, y, y)}]
    judged = [{"task": "tags", "sample_id": "1", "verdicts": tag(y, y, y, y)},
              {"task": "tags", "sample_id": "2", "verdicts": tag(y, y, y, y)},   # misses the specificity fail
              {"task": "tags", "sample_id": "3", "verdicts": tag(n, y, y, y)},
              {"task": "tags", "sample_id": "4", "verdicts": tag(y, n, y, y)},   # false alarm
              {"task": "tags", "sample_id": "9", "verdicts": tag(y, y, y, y)},   # no gold label
              ]
    a = agreement(judged, gold)
    assert (a["n"], a["n_missing"], a["n_unlabelled"], a["n_errors"]) == (4, 1, 1, 0)
    # overall gold pass: T F F T ; judged pass: T T F F -> tp1 fp1 fn1 tn1
    assert a["overall"]["acc"] == 0.5 and a["overall"]["precision"] == 0.5 and a["overall"]["recall"] == 0.5
    spec = a["criteria"]["specificity"]
    assert (spec["tp"], spec["fp"], spec["fn"], spec["tn"]) == (3, 1, 0, 0) and spec["acc"] == 0.75
    assert a["criteria"]["relevance"]["acc"] == 1.0 and a["criteria"]["consistency"]["recall"] == 0.75


def test_majority_baseline() -> None:
    gold = [{"sample_id": str(i), "labels": {"willingness": "spontaneity", "reasonableness": r}}
            for i, r in enumerate(["strong correlation", "weak correlation", "strong correlation"])]
    rows = majority_baseline(gold, "interests")
    assert all(r["pass"] for r in rows)
    a = agreement(rows, gold)
    assert a["overall"]["acc"] == pytest.approx(2 / 3) and a["overall"]["precision"] == pytest.approx(2 / 3)
    assert a["overall"]["recall"] == 1.0
    assert a["criteria"]["reasonableness"]["label_acc"] == pytest.approx(2 / 3)


# --- CLI ---------------------------------------------------------------------------------------------------

GOOD_EXPL = {"relevance": "Excellent", "factuality": "Good", "clarity": "Good", "safety": "Yes"}


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(orjson.dumps(r).decode() + "\n" for r in rows))


@pytest.fixture()
def fake_factory(monkeypatch):
    """Route the command's make_llm to a FakeBackend that always answers GOOD_EXPL."""
    backend = FakeBackend(lambda m, s, p: orjson.dumps(GOOD_EXPL).decode())
    monkeypatch.setattr("recgpt_cli.llm.factory.make_llm", lambda *a, **k: StructuredLLM(backend))
    return backend


def _samples():
    return [{"sample_id": "s1", "interest": "Hiking", "item": "Hiking boots", "explanation": "Trails feel lighter"},
            {"sample_id": "s2", "interest": "Hiking", "item": "Hiking boots", "explanation": "Hurry, buy now!"}]


def test_cli_judge_writes_rows_and_agreement(tmp_path, fake_factory) -> None:
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    src, out, gold = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "gold.jsonl"
    _write_jsonl(src, _samples())
    _write_jsonl(gold, [{"sample_id": "s1", "labels": GOOD_EXPL},
                        {"sample_id": "s2", "labels": {**GOOD_EXPL, "relevance": "Bad", "safety": "No"}}])
    r = CliRunner().invoke(app, ["judge", str(src), "--task", "explanations", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert [(x["sample_id"], x["pass"]) for x in rows] == [("s1", True), ("s2", False)]
    assert rows[1]["rules"] == ["unsafe"] and len(fake_factory.calls) == 2
    r = CliRunner().invoke(app, ["judge", str(src), "--task", "explanations", "--against", str(gold), "--json", "-q"])
    assert r.exit_code == 0, r.output
    report = orjson.loads(r.stdout)
    assert report["n"] == 2 and report["overall"]["acc"] == 1.0
    assert report["criteria"]["relevance"]["acc"] == 0.5 and report["criteria"]["safety"]["acc"] == 1.0


def test_cli_judge_bad_input_exit_2_with_file_line(tmp_path, fake_factory) -> None:
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [_samples()[0], {"sample_id": "x", "interest": "Hiking"}])
    r = CliRunner().invoke(app, ["judge", str(src), "--task", "explanations", "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and f"{src}:2: missing or empty field(s): explanation" in r.output
    r = CliRunner().invoke(app, ["judge", str(src), "--task", "explanations", "--skip-bad",
                                 "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 0 and (tmp_path / "o.jsonl.rejects.jsonl").exists()
    gold = tmp_path / "gold.jsonl"
    _write_jsonl(gold, [{"sample_id": "s1", "labels": {**GOOD_EXPL, "safety": "Maybe"}}])
    r = CliRunner().invoke(app, ["judge", str(src), "--task", "explanations", "--against", str(gold)])
    assert r.exit_code == 2 and f"{gold}:1: safety: 'Maybe' is not one of Yes, No" in r.output


@pytest.mark.model
def test_real_model_judge_three_gold_samples() -> None:
    """The embedded SmolLM2 judges 3 gold samples per task with schema-valid labels (not necessarily right)."""
    from pathlib import Path

    from recgpt_cli.llm.factory import make_llm

    llm = make_llm(task="judge", no_cache=True)
    gold_dir = Path(__file__).resolve().parents[1] / "sample_data" / "gold"
    for task in ("explanations",):
        gold = [orjson.loads(x) for x in (gold_dir / f"{task}.jsonl").read_text().splitlines()[:3]]
        rows = list(judge_samples(gold, llm, task))
        assert len(rows) == 3
        for row in rows:
            assert TASKS[task].check_labels(row["verdicts"]) is None, row
            assert row["pass"] == TASKS[task].sample_passes(row["verdicts"])


def test_explain_rows_expand_to_samples_that_expand_again_unchanged() -> None:
    from recgpt_cli.schema import stage_row

    row = stage_row("explanation", {"user_id": "u1", "item_id": "i1", "explanation": "For your hikes",
                                    "interest": "Hiking", "source": "table", "title": "Boots", "category": ["Shoes"]})
    [sample] = expand_record(row, "explanations")
    assert sample["sample_id"] == "u1:i1" and "kind" not in sample
    assert expand_record(sample, "explanations") == [sample]  # the CLI expands, then judge_samples does again
