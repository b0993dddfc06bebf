"""recgpt_cli.align.self_train: rejection sampling keeps exactly the answers that pass the stage rules, and the
round loop stops when a round gains nothing (fake backend, the hand-written store of test_align_data)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from test_align_data import catalogue, make_store, words

from recgpt_cli.align.data import LogsConfig, log_contexts
from recgpt_cli.align.samples import Sample
from recgpt_cli.align.self_train import RoundStats, rejection_samples, self_train
from recgpt_cli.llm.base import FakeBackend, Message, SamplingParams
from recgpt_cli.llm.structured import StructuredLLM
from recgpt_cli.store import open_db

GOOD_INTEREST = {"interest": "teapots", "stage": "long-term", "reason": "glass teapot with infuser viewed lately"}
BAD_INTEREST = {"interest": "teapots", "stage": "long-term", "reason": "..."}
GOOD_TAG = {"item_tag": "cast iron teapot", "reason": "after the glass teapot in your history",
            "serves_interest": "I1"}


def responder(good_seeds: set[int], greedy: bool = False):
    def answer(messages: list[Message], schema: object, params: SamplingParams) -> str:
        user = messages[-1]["content"]
        good = params.seed in good_seeds
        assert (params.temperature == 0) if greedy else (params.temperature > 0)  # rejection sampling samples
        if "List this user's interests" in user:
            return orjson.dumps({"interests": [GOOD_INTEREST if good else BAD_INTEREST]}).decode()
        shown = re.search(r"for interest (I\d)", user)
        assert shown is not None
        if f"{shown[1]}: teapots" in user:  # teapots: seed-dependent; "nice stuff" is vague
            tag = GOOD_TAG if good else {**GOOD_TAG, "item_tag": "nice stuff"}
            return orjson.dumps({"tags": [{**tag, "serves_interest": shown[1]}]}).decode()
        # hiking boots: a jacket, outside the interest's categories (implausible), whatever the seed
        return orjson.dumps({"tags": [{"item_tag": "insulated snow jacket", "reason": "warm on the trail in winter",
                                       "serves_interest": shown[1]}]}).decode()
    return answer


@pytest.fixture()
def contexts(tmp_path: Path):
    con = open_db(make_store(tmp_path / "a.duckdb"), read_only=True)
    ctx = list(log_contexts(con, LogsConfig(cuts=1), exclude=["u2"], token_counter=words))
    con.close()
    return ctx


def test_rejection_sampling_keeps_only_passing_answers(contexts: list) -> None:
    llm = StructuredLLM(FakeBackend(responder({1})))
    got, stats = rejection_samples(contexts, llm, task="interests", k=2, catalogue=catalogue())
    assert (stats.inputs, stats.answers, stats.passed, stats.removed["bad_reason"]) == (1, 2, 1, 1)
    assert [orjson.loads(s.target) for s in got] == [{"interests": [GOOD_INTEREST]}]
    assert got[0].source == "self-train" and got[0].round == 1 and got[0].task == "interest_mining"

    got, stats = rejection_samples(contexts, llm, task="tags", k=2, round_no=3, catalogue=catalogue())
    # 2 interests x 2 answers; only the teapot answer of seed 1 passes; the jacket is implausible every time
    assert (stats.inputs, stats.answers, stats.passed) == (2, 4, 1)
    assert stats.removed["vague"] == 1 and stats.removed["implausible"] == 2
    assert [orjson.loads(s.target) for s in got] == [{"tags": [GOOD_TAG]}] and got[0].round == 3
    assert stats.pass_rate == pytest.approx(0.25)


def test_pooled_tags_keep_each_passing_tag_once_and_ask_for_that_many(contexts: list) -> None:
    """`pool=True`: the rules see the tags of all k answers together; survivors become one sample whose prompt asks
    for exactly as many tags as its reply holds; the tag-level pass rate judges each answer alone."""
    llm = StructuredLLM(FakeBackend(responder({1})))
    got, stats = rejection_samples(contexts, llm, task="tags", k=2, catalogue=catalogue(), pool=True)
    # teapots: seed 0 writes a vague tag, seed 1 a good one; hiking boots: an implausible jacket twice
    assert (stats.inputs, stats.answers, stats.passed, stats.items, stats.kept_items) == (2, 4, 1, 4, 1)
    assert stats.item_pass_rate == pytest.approx(0.25)
    assert [orjson.loads(s.target) for s in got] == [{"tags": [GOOD_TAG]}]
    assert "Recommend exactly 1 new products for interest I1" in got[0].messages[-1]["content"]
    assert stats.removed["vague"] == 1 and stats.removed["implausible"] == 2

    # both seeds write the same good tag: it is kept once (the pooled duplicate is removed), both answers pass alone
    llm = StructuredLLM(FakeBackend(responder({0, 1})))
    got, stats = rejection_samples(contexts, llm, task="tags", k=2, catalogue=catalogue(), pool=True)
    assert [orjson.loads(s.target) for s in got] == [{"tags": [GOOD_TAG]}]
    assert (stats.passed, stats.kept_items, stats.removed["duplicate"]) == (2, 2, 1)

    # the judge drops the tags it fails instead of the whole input
    got, stats = rejection_samples(contexts, llm, task="tags", k=2, catalogue=catalogue(), pool=True,
                                   judge=lambda t, s: False)
    assert got == [] and stats.removed["judge"] == 1
    with pytest.raises(Exception, match="pooled"):
        rejection_samples(contexts, llm, task="interests", k=1, pool=True)


def test_pooled_rounds_compare_the_tag_pass_rate(contexts: list, tmp_path: Path) -> None:
    def make_llm(model: Path) -> StructuredLLM:
        return StructuredLLM(FakeBackend(responder({1} if model.name == "start" else {0, 1})))

    report = self_train(lambda: contexts, tmp_path / "start", tmp_path, make_llm=make_llm,
                        train=lambda samples, frm, out: out, tasks=("tags",), rounds=5, k=2, catalogue=catalogue(),
                        pool=True)
    # the jacket interest never passes: tag pass rate 1/4, then 2/4, then 2/4 again -> stop
    assert [r.item_pass_rate for r in report.rounds] == [0.25, 0.5, 0.5]
    assert "round 3 gained nothing (pass rate 0.500 vs 0.500)" in report.stopped


def test_loop_stops_when_a_round_gains_nothing(contexts: list, tmp_path: Path) -> None:
    # the start model passes half of its interest answers, every later model all of them
    def make_llm(model: Path) -> StructuredLLM:
        return StructuredLLM(FakeBackend(responder({1} if model.name == "start" else {0, 1})))

    trained: list[tuple[int, Path]] = []

    def train(samples: list[Sample], from_model: Path, out: Path) -> Path:
        trained.append((len(samples), from_model))
        return out

    seen: list[RoundStats] = []
    report = self_train(lambda: contexts, tmp_path / "start", tmp_path, make_llm=make_llm, train=train,
                        base_samples=[Sample("t", "logs", [], "{}")], tasks=("interests",), rounds=5, k=2,
                        catalogue=catalogue(), on_round=seen.append)
    assert [r.pass_rate for r in report.rounds] == [0.5, 1.0, 1.0]
    assert "round 3 gained nothing" in report.stopped
    assert report.models == [tmp_path / "round-1", tmp_path / "round-2"]
    # each round trains on the logs samples + its own passing samples, from the previous round's model
    assert trained == [(2, tmp_path / "start"), (2, tmp_path / "round-1")]
    assert len(seen) == 3


def test_teacher_answers_once_greedy_and_only_passing_answers_become_samples(contexts: list) -> None:
    llm = StructuredLLM(FakeBackend(responder({0}, greedy=True)))
    got, stats = rejection_samples(contexts, llm, task="tags", k=1, temperature=0.0, source="teacher",
                                   catalogue=catalogue())
    assert (stats.answers, stats.passed, stats.pass_rate) == (2, 1, 0.5)
    assert [(s.source, orjson.loads(s.target)) for s in got] == [("teacher", {"tags": [GOOD_TAG]})]


def test_a_trained_judge_filters_what_the_rules_pass(contexts: list) -> None:
    """§3.2: with a judge, a rule-passing answer also needs the judge's pass on every item."""
    llm = StructuredLLM(FakeBackend(responder({0, 1})))
    seen: list[tuple[str, dict]] = []

    def judge(task: str, sample: dict) -> bool:
        seen.append((task, sample))
        return False

    got, stats = rejection_samples(contexts, llm, task="tags", k=2, catalogue=catalogue(), judge=judge)
    assert got == [] and stats.passed == 0 and stats.removed["judge"] == 2  # the two teapot answers
    assert {(t, s["tag"], s["interest"]) for t, s in seen} == {("tags", "cast iron teapot", "teapots")}
    assert seen[0][1]["behaviors"]  # the judge sees the history, as `recgpt judge` would
    got, stats = rejection_samples(contexts, llm, task="tags", k=2, catalogue=catalogue(), judge=lambda t, s: True)
    assert [orjson.loads(s.target) for s in got] == [{"tags": [GOOD_TAG]}]


def test_the_judge_is_used_only_when_it_beats_the_rules() -> None:
    from recgpt_cli.align.self_train import judge_beats_rules

    gold_path = Path(__file__).resolve().parents[1] / "sample_data" / "gold" / "tags.jsonl"
    gold = [orjson.loads(line) for line in gold_path.read_bytes().splitlines() if line.strip()]
    yes = orjson.dumps(dict.fromkeys(("relevance", "consistency", "specificity", "validity"), "Yes")).decode()
    always_yes = StructuredLLM(FakeBackend(lambda m, s, p: yes))
    better, accs = judge_beats_rules(always_yes, gold, "tags")
    assert not better and accs["judge_acc"] == accs["rules_acc"]  # passing everything adds nothing to the rules

    by_tag = {g["tag"]: g["labels"] for g in gold}

    def oracle(messages: list[Message], schema: object, params: SamplingParams) -> str:
        tag = messages[-1]["content"].split("Predicted Tag: ", 1)[1].split("\n", 1)[0]
        return orjson.dumps(by_tag[tag]).decode()

    better, accs = judge_beats_rules(StructuredLLM(FakeBackend(oracle)), gold, "tags")
    assert better and accs["judge_acc"] > accs["rules_acc"]


def test_explanation_samples_from_a_teacher_pass_the_safety_rules(tmp_path: Path) -> None:
    """§2.4.1: one input per interest whose category the user engaged with after the cut; the explanation prompt
    with that category's item information; explain's safety rules keep or drop each answer."""
    from recgpt_cli.align.self_train import ExplainInputs

    con = open_db(make_store(tmp_path / "a.duckdb"), read_only=True)
    ctx = list(log_contexts(con, LogsConfig(cuts=1), exclude=["u2"], token_counter=words))
    inputs = ExplainInputs.from_con(con)
    con.close()
    asked: list[str] = []

    def answer(messages: list[Message], schema: object, params: SamplingParams) -> str:
        user = messages[-1]["content"]
        asked.append(user)
        if "User Interest: teapots" in user:
            text = "Tea time, your way, with a fresh teapot" if params.seed == 1 else "Buy now, limited time deal!"
        else:  # hiking boots: names a catalogue brand the item information does not
            text = "Trailpeak boots for your next trail"
        return orjson.dumps({"explanation": text}).decode()

    llm = StructuredLLM(FakeBackend(answer))
    got, stats = rejection_samples(ctx, llm, task="explanations", k=2, explain_inputs=inputs)
    assert (stats.inputs, stats.answers, stats.passed) == (2, 4, 1)
    assert stats.removed["hard_sell"] == 1 and stats.removed["foreign_brand"] == 2
    assert [(s.task, orjson.loads(s.target)) for s in got] == [
        ("explanation", {"explanation": "Tea time, your way, with a fresh teapot"})]
    # the prompt is the explain stage's, with the category's item information and the cut date
    assert "Item Information: category: Shop > Teapots; example items: Cast Iron Teapot" in got[0].messages[-1][
        "content"]
    assert f"Current Date: {ctx[0].cut.date().isoformat()}" in got[0].messages[-1]["content"]
    assert len(asked) == 4
    with pytest.raises(Exception, match="item information"):
        rejection_samples(ctx, llm, task="explanations", k=1)


def test_on_topic_explanation_samples_name_their_interest_or_item(tmp_path: Path) -> None:
    """`on_topic`: an answer the safety rules pass but that names neither its interest nor its item is no sample
    (counted as off_topic); without the option it is one."""
    from recgpt_cli.align.self_train import ExplainInputs

    con = open_db(make_store(tmp_path / "a.duckdb"), read_only=True)
    ctx = list(log_contexts(con, LogsConfig(cuts=1), exclude=["u2"], token_counter=words))
    inputs = ExplainInputs.from_con(con)
    con.close()

    def answer(messages: list[Message], schema: object, params: SamplingParams) -> str:
        on = "User Interest: teapots" in messages[-1]["content"] and params.seed == 1
        return orjson.dumps({"explanation": "A cosy cast iron pot for slow mornings" if on
                             else "A lovely pick for your week ahead"}).decode()

    llm = StructuredLLM(FakeBackend(answer))
    got, stats = rejection_samples(ctx, llm, task="explanations", k=2, explain_inputs=inputs, on_topic=True)
    assert [orjson.loads(s.target)["explanation"] for s in got] == ["A cosy cast iron pot for slow mornings"]
    assert stats.removed["off_topic"] == 3 and stats.passed == 1
    loose, _ = rejection_samples(ctx, llm, task="explanations", k=2, explain_inputs=inputs)
    assert len(loose) == 2  # one per input: the generic answer passes the safety rules alone


def test_explanation_samples_prefer_an_opening_the_round_has_not_used(tmp_path: Path) -> None:
    """Of an input's passing answers, the one whose first two words the round has used least is the sample: the
    first input takes its first answer ("This item ..."), the second its other one, though "This item ..." comes
    first there too."""
    from recgpt_cli.align.self_train import ExplainInputs, opener

    con = open_db(make_store(tmp_path / "a.duckdb"), read_only=True)
    ctx = list(log_contexts(con, LogsConfig(cuts=1), exclude=["u2"], token_counter=words))
    inputs = ExplainInputs.from_con(con)
    con.close()

    def answer(messages: list[Message], schema: object, params: SamplingParams) -> str:
        pot = "User Interest: teapots" in messages[-1]["content"]
        text = (("This item brews a slow pot of tea", "Slow mornings with a cast iron teapot") if pot else
                ("This item keeps your week tidy", "A tidy week starts with this pick"))[params.seed]
        return orjson.dumps({"explanation": text}).decode()

    got, stats = rejection_samples(ctx, StructuredLLM(FakeBackend(answer)), task="explanations", k=2,
                                   explain_inputs=inputs)
    texts = [orjson.loads(s.target)["explanation"] for s in got]
    assert stats.passed == 4 and len(texts) == 2
    assert texts[0].startswith("This item") and not texts[1].startswith("This item")
    assert opener(texts[0]) == "this item" and opener("🌟 It's a gift") == "it's a"


def test_cli_teacher_explanations_are_stored_with_their_pass_rate(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`align data --source teacher --task explanations`: passing answers become samples and the run's pass counts
    go to `align_pass_rates` next to them."""
    import duckdb
    from typer.testing import CliRunner

    from recgpt_cli.cli import app
    from recgpt_cli.llm import factory

    store = make_store(tmp_path / "a.duckdb")
    (tmp_path / "scored.txt").write_text("u2\n")

    def teacher(messages: list[Message], schema: object, params: SamplingParams) -> str:
        assert params.temperature == 0  # a teacher answers once, greedy
        good = "User Interest: teapots" in messages[-1]["content"]
        return orjson.dumps({"explanation": "Tea time, your way, with a fresh teapot" if good
                             else "Buy now, limited time deal!"}).decode()

    monkeypatch.setattr(factory, "make_llm", lambda *a, **k: StructuredLLM(FakeBackend(teacher)))
    samples = tmp_path / "s.duckdb"
    r = CliRunner().invoke(app, ["align", "data", "--db", str(store), "--source", "teacher", "--task", "explanations",
                                 "--teacher-base-url", "http://teacher", "--teacher-model", "big", "--cuts", "1",
                                 "--exclude-users", str(tmp_path / "scored.txt"), "--samples", str(samples)])
    assert r.exit_code == 0, r.output
    assert "teacher explanations: 1/2 answers pass the rules (50.0%)" in " ".join(r.output.split())
    con = duckdb.connect(str(samples), read_only=True)
    rows = con.execute("SELECT source, task, model, inputs, answers, passed, samples, removed "
                       "FROM align_pass_rates").fetchall()
    got = con.execute("SELECT task, source, target FROM align_samples").fetchall()
    con.close()
    assert rows == [("teacher", "explanations", "big", 2, 2, 1, 1, '{"hard_sell":1}')]
    assert got == [("explanation", "teacher", '{"explanation": "Tea time, your way, with a fresh teapot"}')]


def test_cli_teacher_calls_that_fail_exit_3_and_the_rest_is_stored(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A teacher whose call fails (HTTP 500 after its retries) is said apart from answers the rules fail, and the
    command exits 3 with the other samples stored (was: exit 0, "1/2 answers pass the rules")."""
    import duckdb
    from typer.testing import CliRunner

    from recgpt_cli.cli import app
    from recgpt_cli.llm import factory
    from recgpt_cli.llm.base import BackendError

    store = make_store(tmp_path / "a.duckdb")
    (tmp_path / "scored.txt").write_text("u2\n")

    def teacher(messages: list[Message], schema: object, params: SamplingParams) -> str:
        if "User Interest: teapots" not in messages[-1]["content"]:
            raise BackendError("HTTP 500 from the teacher")
        return orjson.dumps({"explanation": "Tea time, your way, with a fresh teapot"}).decode()

    monkeypatch.setattr(factory, "make_llm", lambda *a, **k: StructuredLLM(FakeBackend(teacher)))
    samples = tmp_path / "s.duckdb"
    r = CliRunner().invoke(app, ["align", "data", "--db", str(store), "--source", "teacher", "--task", "explanations",
                                 "--teacher-base-url", "http://teacher", "--teacher-model", "big", "--cuts", "1",
                                 "--exclude-users", str(tmp_path / "scored.txt"), "--samples", str(samples)])
    out = " ".join(r.output.split())
    assert r.exit_code == 3, r.output
    assert "1 calls failed (no answer)" in out and "align data: 1 of 2 teacher calls failed" in out
    con = duckdb.connect(str(samples), read_only=True)
    assert con.execute("SELECT count(*) FROM align_samples").fetchone() == (1,)
    con.close()


def test_cli_self_train_pools_tags_and_records_the_tag_pass_rate(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`align self-train --task tags` (pooled by default): the round's tag-level counts reach the console and the
    store's `align_pass_rates`, its kept samples the sample store, and SFT starts from the given model."""
    import duckdb
    from typer.testing import CliRunner

    from recgpt_cli.align import sft
    from recgpt_cli.cli import app
    from recgpt_cli.llm import factory

    store = make_store(tmp_path / "a.duckdb")
    start = tmp_path / "aligned"
    start.mkdir()
    (start / "manifest.json").write_text("{}")
    (tmp_path / "scored.txt").write_text("u2\n")
    monkeypatch.setattr(factory, "make_llm", lambda *a, **k: StructuredLLM(FakeBackend(responder({1}))))
    trained: list[tuple[int, str]] = []
    monkeypatch.setattr(sft, "train_sft", lambda data, out, cfg, base=None, **kw: trained.append((len(data), base)))
    samples = tmp_path / "s.duckdb"
    r = CliRunner().invoke(app, ["align", "self-train", "--db", str(store), "--model", str(start), "--samples",
                                 str(samples), "--out", str(tmp_path / "st"), "--task", "tags", "--rounds", "1",
                                 "--k", "2", "--exclude-users", str(tmp_path / "scored.txt")])
    assert r.exit_code == 0, r.output
    con = duckdb.connect(str(samples), read_only=True)
    rate = con.execute("SELECT answers, passed, samples, items, kept_items FROM align_pass_rates").fetchall()
    kept = con.execute("SELECT source, target FROM align_samples").fetchall()
    con.close()
    answers, passed, n, items, kept_items = rate[0]
    assert len(rate) == 1 and n == len(kept) >= 1 and 0 < kept_items < items and passed <= answers
    assert f"{kept_items}/{items} tags" in " ".join(r.output.split())
    tags = [orjson.loads(t)["tags"] for _, t in kept]
    # the vague teapot tags never pass; the jacket does under hiking boots here: the store files it there, and φ,
    # fitted on the store's titles, learns that label (test_align_data's keyword φ does not)
    assert {src for src, _ in kept} == {"self-train"} and all(len(t) == 1 for t in tags)
    assert sorted(t[0]["item_tag"] for t in tags) == ["cast iron teapot", "insulated snow jacket"]
    assert trained == [(n, start)]


def test_constrained_tags_are_sampled_from_the_offered_phrases(contexts: list) -> None:
    """`constrain`: tag answers are decoded under the enum predict-tags serves with; with a grammar that enforces
    it (here: the fake answers with an offered phrase), the invalid and stale rules have nothing left to remove."""
    from recgpt_cli.tags import TagVocabulary

    offered_seen: list[list[str]] = []

    def answer(messages: list[Message], schema: dict, params: SamplingParams) -> str:
        enum = schema["properties"]["tags"]["items"]["properties"]["item_tag"]["enum"]
        offered_seen.append(enum)
        iid = "I1" if "for interest I1" in messages[-1]["content"] else "I2"
        return orjson.dumps({"tags": [{"item_tag": enum[params.seed % len(enum)], "serves_interest": iid,
                                       "reason": "after the glass teapot in your history"}]}).decode()

    cat = catalogue()
    got, stats = rejection_samples(contexts, StructuredLLM(FakeBackend(answer)), task="tags", k=2, catalogue=cat,
                                   pool=True, constrain="interest")
    vocab = TagVocabulary.of(cat)
    day = contexts[0].cut.date()
    expected = [vocab.allowed("interest", contexts[0].record, [i], day=day, catalogue=cat) for i in
                contexts[0].interests]
    assert offered_seen and all(e in [list(x) for x in expected if x] for e in offered_seen)
    assert stats.inputs == sum(1 for x in expected if x)  # an interest with nothing to offer is no input
    assert stats.removed.get("invalid", 0) == stats.removed.get("stale", 0) == 0
    written = [t["item_tag"] for s in got for t in orjson.loads(s.target)["tags"]]
    assert written and set(written) <= set(vocab.phrases)
    with pytest.raises(Exception, match="--constrain free"):
        rejection_samples(contexts, StructuredLLM(FakeBackend(answer)), task="tags", constrain="free")
