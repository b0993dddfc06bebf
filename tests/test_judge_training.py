"""Judge labels at scale and judge training (§3.2): derived-label rules on a hand-made store, held-out split,
recency downsampling, minority augmentation, `align data --source labels`, and `judge check`'s exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from test_align_data import make_store
from typer.testing import CliRunner

from recgpt_cli.align.data import LogsConfig
from recgpt_cli.align.samples import load_samples
from recgpt_cli.cli import app
from recgpt_cli.judge.buffer import labelled, open_buffer
from recgpt_cli.judge.check import check_history, record_check
from recgpt_cli.judge.derive import derive_labels, store_derived
from recgpt_cli.judge.training import (
    JudgeDataConfig,
    augment_minority,
    build_judge_samples,
    downsample_recent,
    is_heldout,
    judge_sample,
)
from recgpt_cli.llm.prompts import load_prompt
from recgpt_cli.store import open_db


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    path = make_store(tmp_path / "a.duckdb")
    con = open_db(path)  # a category nobody touched: the source of unrelated candidates
    con.execute("INSERT INTO items VALUES ('g1', 'Flexi Garden Hose, 20m', ['Shop', 'Garden Hoses'], "
                "'Garden Hoses', NULL, NULL, NULL, '{}')")
    con.close()
    return path


def derived(store: Path, truth: dict[str, set[str]] | None, **cfg: Any) -> list[Any]:
    con = open_db(store, read_only=True)
    try:
        return list(derive_labels(con, ["interests", "tags", "explanations"], LogsConfig(cuts=1, **cfg),
                                  truth=truth, exclude=["u2"]))
    finally:
        con.close()


def test_derived_labels_follow_the_rules(store: Path) -> None:
    rows = derived(store, {"u1": {"Teapots"}})
    assert {r.sample["user_id"] for r in rows} == {"u1"}  # u2 is a scored user: never labelled
    assert {r.source for r in rows} == {"derived:truth"}
    by = {(r.task, r.kind, r.sample.get("interest"), r.sample.get("tag")): r.labels for r in rows}
    # interests from logs, both categories come back after the cut -> strong correlation
    assert by[("interests", "from_logs", "teapots", None)] == {"willingness": "spontaneity",
                                                                "reasonableness": "strong correlation"}
    # the untouched category is the negative: unrelated (no correlation) or hallucinated
    neg = [r for r in rows if r.task == "interests" and r.kind in ("unrelated", "hallucinated")]
    assert [r.sample["interest"] for r in neg] == ["garden hoses"]
    assert neg[0].labels["reasonableness"] in ("no correlation", "hallucination")
    # tags: engaged after the cut -> all Yes; another category's item under this interest -> relevance No;
    # an untouched category -> relevance and consistency No; a broad core word -> specificity No
    assert by[("tags", "engaged", "teapots", "cast iron teapot")] == dict.fromkeys(
        ("relevance", "consistency", "specificity", "validity"), "Yes")
    assert by[("tags", "broad", "teapots", "teapots products")]["specificity"] == "No"
    unrelated = [r for r in rows if r.task == "tags" and r.kind == "unrelated"]
    assert unrelated and all(r.sample["tag"] == "flexi garden hose" and r.labels["relevance"] == "No"
                             and r.labels["consistency"] == "No" for r in unrelated)
    wrong = [r for r in rows if r.task == "tags" and r.kind == "wrong_interest"]
    assert wrong and all(r.labels["relevance"] == "No" and r.labels["consistency"] == "Yes" for r in wrong)
    # explanations: the grounded template passes; every variant fails exactly where it was broken
    good = [r for r in rows if r.task == "explanations" and r.kind == "grounded"]
    assert good[0].sample["explanation"] == ("Because you enjoy teapots, this cast iron teapot is a teapots that "
                                             "suits it.")
    assert good[0].labels == {"relevance": "Excellent", "factuality": "Excellent", "clarity": "Good",
                              "safety": "Yes"}
    broken = {r.kind: r.labels for r in rows if r.task == "explanations" and r.kind != "grounded"}
    expected_fail = {"wrong_category": "factuality", "wrong_interest": "relevance", "stutter": "clarity",
                     "hard_sell": "safety"}
    for kind, labels in broken.items():
        assert labels[expected_fail[kind]] in ("Bad", "No")
    # the truth never reaches a prompt: no sample field carries it
    assert all("truth" not in orjson.dumps(r.sample).decode() for r in rows)


def test_relevance_needs_truth_or_behaviour_after_the_cut(store: Path) -> None:
    # a 5-day window holds only h3 (boots): teapots come back neither in the window nor (without truth) elsewhere
    no_truth = {(r.task, r.sample.get("interest")): r.labels for r in derived(store, None, window_days=5)
                if r.kind == "from_logs"}
    assert no_truth[("interests", "teapots")]["reasonableness"] == "weak correlation"
    assert no_truth[("interests", "hiking boots")]["reasonableness"] == "strong correlation"
    with_truth = {(r.task, r.sample.get("interest")): r.labels for r in derived(store, {"u1": {"Teapots"}},
                                                                                 window_days=5)
                  if r.kind == "from_logs"}
    assert with_truth[("interests", "teapots")]["reasonableness"] == "strong correlation"
    assert {r.source for r in derived(store, None, window_days=5)} == {"derived:behaviour"}


def row(user: str, ok: bool, ts: str, behaviors: str = "a\nb\nc\nd", source: str = "derived:truth"
        ) -> dict[str, Any]:
    label = "Yes" if ok else "No"
    return {"user_id": user, "sample_hash": f"{user}-{ts}", "ts": ts, "source": source,
            "sample": {"user_id": user, "behaviors": behaviors, "tag": "cast iron teapot", "interest": "tea",
                       "interests": ["tea"], "reason": "r"},
            "labels": {"relevance": label, "consistency": "Yes", "specificity": "Yes", "validity": "Yes"}}


def test_recency_downsampling_keeps_the_newest_per_class() -> None:
    rows = [row("u", True, f"2025-01-0{d}") for d in range(1, 6)] + [row("v", False, "2025-01-01")]
    kept = downsample_recent(rows, "tags", max_per_class=2)
    assert sorted(r["ts"] for r in kept if r["labels"]["relevance"] == "Yes") == ["2025-01-04", "2025-01-05"]
    assert sum(r["labels"]["relevance"] == "No" for r in kept) == 1


def test_minority_augmentation_adds_shortened_variants_by_round() -> None:
    rows = [row("u", True, f"2025-01-0{d}") for d in range(1, 9)] + [row("v", False, "2025-01-01"),
                                                                     row("w", False, "2025-01-02", behaviors="one")]
    pairs = augment_minority(rows, "tags", JudgeDataConfig(minority_share=0.5, max_rounds=3))
    extra = [(r, rnd) for r, rnd in pairs if rnd > 0]
    # 8 pass vs 2 fail: 2 more fail samples needed; "one" has a single line so only v can vary, once per round
    assert [rnd for _, rnd in extra] == [1, 2]
    assert [r["sample"]["behaviors"] for r, _ in extra] == ["a\nb", "a"]
    assert all(r["labels"]["relevance"] == "No" for r, _ in extra)


def test_minority_augmentation_repeats_hand_labels_whole() -> None:
    # a person's "strong correlation" may rest on the whole history: its variants are the sample itself
    rows = [row("u", True, f"2025-01-0{d}", source="hand") for d in range(1, 9)] + [
        row("v", False, "2025-01-01", source="hand")]
    pairs = augment_minority(rows, "tags", JudgeDataConfig(minority_share=0.5, max_rounds=3))
    extra = [(r, rnd) for r, rnd in pairs if rnd > 0]
    assert [rnd for _, rnd in extra] == [1, 2, 3]
    assert all(r["sample"]["behaviors"] == "a\nb\nc\nd" and r["labels"]["relevance"] == "No" for r, _ in extra)


def test_heldout_split_is_by_user_and_stable() -> None:
    users = [f"user{i}" for i in range(400)]
    held = [u for u in users if is_heldout(u, 0.2)]
    assert 50 < len(held) < 110
    rows = [row(u, i % 2 == 0, "2025-01-01", behaviors=f"{u} bought a teapot") for i, u in enumerate(users)]
    samples, heldout, counts = build_judge_samples(rows, "tags", JudgeDataConfig(heldout_share=0.2))
    assert {r["user_id"] for r in heldout} == set(held)
    assert not {s.user_id for s in samples} & set(held)
    assert counts["heldout"] == len(held)
    # a held-out user who shows the judge exactly what a training user does is no held-out sample: dropped
    twin = {**rows[users.index(held[0])], "sample": {**rows[0]["sample"], "user_id": held[0]}}
    assert not is_heldout(users[0], 0.2)
    _, heldout, _ = build_judge_samples([twin if r["user_id"] == held[0] else r for r in rows], "tags",
                                        JudgeDataConfig(heldout_share=0.2))
    assert {r["user_id"] for r in heldout} == set(held[1:])


def test_judge_sample_is_what_the_judge_serves() -> None:
    r = row("u", False, "2025-01-01")
    s = judge_sample(r["sample"], r["labels"], "tags")
    from recgpt_cli.judge.samples import prompt_variables

    assert s.messages == load_prompt("judge_tags").render(prompt_variables(r["sample"], "tags"))
    assert s.target == ('{"relevance": "No", "consistency": "Yes", "specificity": "Yes", "validity": "Yes"}')
    assert s.task == "judge_tags" and s.category == "fail"


def test_align_data_from_the_buffer_and_sft_task_filter(store: Path, tmp_path: Path) -> None:
    buf = tmp_path / "labels.duckdb"
    r = CliRunner().invoke(app, ["judge", "derive", "--db", str(store), "--buffer", str(buf), "--truth",
                                 str(tmp_path / "truth.jsonl"), "--cuts", "1"])
    assert r.exit_code == 2 and "truth.jsonl" in r.output  # a missing truth file is bad input, no traceback
    (tmp_path / "truth.jsonl").write_text('{"user_id": "u1", "interests": ["Teapots"]}\n')
    (tmp_path / "exclude.txt").write_text("u2\n")
    r = CliRunner().invoke(app, ["judge", "derive", "--db", str(store), "--buffer", str(buf), "--truth",
                                 str(tmp_path / "truth.jsonl"), "--cuts", "1", "--exclude-users",
                                 str(tmp_path / "exclude.txt")])
    assert r.exit_code == 0, r.output
    con = open_buffer(buf)
    n_tags = len(labelled(con, "tags"))
    again = store_derived(con, derived(store, {"u1": {"Teapots"}}, history_tokens=128))  # twice: nothing new
    con.close()
    assert n_tags > 0 and again["tags"]["labels"] == 0
    out = tmp_path / "align" / "samples.duckdb"
    r = CliRunner().invoke(app, ["align", "data", "--source", "labels", "--task", "judge", "--buffer", str(buf),
                                 "--samples", str(out), "--heldout-share", "0"])
    assert r.exit_code == 0, r.output
    samples = load_samples(out, tasks=["judge"])
    assert {s.task for s in samples} == {"judge_interests", "judge_tags", "judge_explanations"}
    # each sample keeps the hash of what the judge saw, which `align sft` records so that scoring is refused on it
    assert all(s.meta.get("input_hash") and s.meta.get("sample_hash") for s in samples)
    assert not load_samples(out, tasks=["interests"])
    assert (out.parent / "judge-heldout-tags.jsonl").exists()


def test_check_records_and_fails_below_threshold(tmp_path: Path) -> None:
    report = {"task": "tags", "n": 3, "overall": {"acc": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5}}
    con = open_buffer(tmp_path / "b.duckdb")
    assert record_check(con, report, judge="x", labels="f.jsonl", min_f1=0.4)
    assert not record_check(con, report, judge="y", labels="f.jsonl", min_f1=0.6)
    hist = check_history(con, "tags")
    con.close()
    assert [h["judge"] for h in hist] == ["y", "x"] and [h["passed"] for h in hist] == [False, True]


def test_judge_check_cli_exit_code_on_a_degraded_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`judge check` with the fake backend answering "No" everywhere (a degraded judge): exit 1, a clear message,
    and the check is in the DB; with a threshold of 0 it passes (exit 0)."""
    from recgpt_cli.llm.base import FakeBackend
    from recgpt_cli.llm.structured import StructuredLLM

    gold = Path(__file__).resolve().parents[1] / "sample_data" / "gold" / "tags.jsonl"
    buf = tmp_path / "b.duckdb"
    reply = '{"relevance": "No", "consistency": "No", "specificity": "No", "validity": "No"}'
    monkeypatch.setattr("recgpt_cli.llm.factory.make_llm",
                        lambda *a, **k: StructuredLLM(FakeBackend(lambda m, s, p: reply)))
    args = ["judge", "check", "--task", "tags", "--against", str(gold), "--buffer", str(buf), "-q", "--llm-judge"]
    r = CliRunner().invoke(app, [*args, "--min-f1", "0.5"])
    assert r.exit_code == 1, r.output
    assert "below --min-f1 0.50" in r.output and "realign" in r.output
    r = CliRunner().invoke(app, [*args, "--min-f1", "0"])
    assert r.exit_code == 0, r.output
    con = open_buffer(buf)
    hist = check_history(con, "tags")
    con.close()
    assert [h["passed"] for h in hist] == [True, False] and hist[0]["f1"] == 0.0
    # a judge that cannot answer some labels has not passed, whatever the F1 of the rest (was: recorded as passed)
    answers = iter([reply.replace("No", "Yes"), "not json"] * 1000)
    monkeypatch.setattr("recgpt_cli.llm.factory.make_llm",
                        lambda *a, **k: StructuredLLM(FakeBackend(lambda m, s, p: next(answers)), retries=0))
    r = CliRunner().invoke(app, [*args, "--min-f1", "0"])
    assert r.exit_code == 1 and "got no verdict" in r.output, r.output
    con = open_buffer(buf)
    assert check_history(con, "tags")[0]["passed"] is False
    con.close()


def test_against_labels_must_match_and_be_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`judge --against`: labels whose sample_ids were not judged are bad input (was: a table of zeros, exit 0),
    and a sample_id labelled twice is `file:line` (was: the last row won)."""
    from recgpt_cli.llm.base import FakeBackend
    from recgpt_cli.llm.structured import StructuredLLM

    gold = Path(__file__).resolve().parents[1] / "sample_data" / "gold" / "tags.jsonl"
    rows = gold.read_text().splitlines()
    reply = '{"relevance": "Yes", "consistency": "Yes", "specificity": "Yes", "validity": "Yes"}'
    monkeypatch.setattr("recgpt_cli.llm.factory.make_llm",
                        lambda *a, **k: StructuredLLM(FakeBackend(lambda m, s, p: reply)))
    judged, labels = tmp_path / "judged.jsonl", tmp_path / "labels.jsonl"
    judged.write_text(rows[0] + "\n")
    labels.write_text(rows[1] + "\n")
    r = CliRunner().invoke(app, ["judge", "--task", "tags", str(judged), "--against", str(labels), "-q",
                                 "--llm-judge"])
    assert r.exit_code == 2 and "none of its 1 labelled samples was judged" in r.output, r.output
    labels.write_text(rows[0] + "\n" + rows[0] + "\n")
    r = CliRunner().invoke(app, ["judge", "--task", "tags", str(judged), "--against", str(labels), "-q",
                                 "--llm-judge"])
    assert r.exit_code == 2 and f"{labels}:2: duplicate sample_id" in r.output, r.output


@pytest.mark.parametrize("task", ["interests", "tags", "explanations"])
def test_hand_training_labels_load_and_never_touch_the_gold_set(tmp_path: Path, task: str) -> None:
    """sample_data/judge_train is training data for the judge; the gold set is its test: no shared sample, user or
    text, every label valid for its criterion, and both classes present on the held-out users too."""
    from recgpt_cli.judge.buffer import import_labels
    from recgpt_cli.judge.criteria import get_task

    root = Path(__file__).resolve().parents[1] / "sample_data"
    buf = open_buffer(tmp_path / "b.duckdb")
    got = import_labels(buf, root / "judge_train" / f"{task}.jsonl", task, source="hand", annotator="t")
    import_labels(buf, root / "gold" / f"{task}.jsonl", task, source="gold", annotator="t")
    rows = labelled(buf, task)
    train = [r for r in rows if r["source"] == "agent"]
    gold = [r for r in rows if r["source"] == "gold"]
    assert len(train) == got["samples"] == got["new_samples"] and gold
    assert not {r["user_id"] for r in train} & {r["user_id"] for r in gold}
    # short interest names ("Camping") may coincide; what was written about them may not
    def written(r: dict[str, Any]) -> tuple[str, str]:
        s = r["sample"]
        return (str(s.get("tag") or s.get("interest") or "").lower(),
                str(s.get("reason") or s.get("explanation") or "").lower())

    assert not {written(r) for r in train} & {written(r) for r in gold}
    spec = get_task(task)
    _, held, _ = build_judge_samples(train, task)
    for part in (train, held):
        assert {spec.sample_passes(r["labels"]) for r in part} == {True, False}
