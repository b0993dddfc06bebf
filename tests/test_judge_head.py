"""The trained judge's heads (§3.2, `recgpt judge train` / `judge --head`): the regression fit, the verdict logic,
save/load and its refusals, training from the buffer (held-out split, resume) and serving, on a tiny random model;
and on the real embedded model, that heads fitted on hand labels agree with people on held-out users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from test_llm_hf import tiny_model_dir
from typer.testing import CliRunner

from recgpt_cli.align.self_train import judge_beats_rules
from recgpt_cli.cli import app
from recgpt_cli.errors import BadInput
from recgpt_cli.judge.buffer import import_labels, open_buffer
from recgpt_cli.judge.check import check_history
from recgpt_cli.judge.criteria import get_task
from recgpt_cli.judge.head import (
    FAIL,
    PASS,
    FeatureCache,
    FeatureModel,
    HeadJudge,
    Linear,
    TaskHead,
    fit_linear,
    fit_task_head,
    is_head_dir,
    load_head_dir,
    model_fingerprint,
    save_task_head,
)
from recgpt_cli.judge.training import is_heldout

HAND = Path(__file__).resolve().parents[1] / "sample_data" / "judge_train"


def test_fit_linear_separates_labels_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    centres = {"Bad": (-4.0, 0.0), "Good": (0.0, 4.0), "Excellent": (4.0, 0.0)}
    x = np.concatenate([rng.normal(c, 0.5, size=(20, 2)) for c in centres.values()]).astype(np.float32)
    y = [label for label in centres for _ in range(20)]
    head = fit_linear(x, y, 0.01)
    assert head.labels == ["Bad", "Excellent", "Good"]
    p = head.proba(x)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert [head.labels[i] for i in p.argmax(axis=1)] == y
    again = fit_linear(x, y, 0.01)
    assert np.array_equal(again.weight, head.weight) and np.array_equal(again.bias, head.bias)
    one = fit_linear(x[:5], ["Yes"] * 5)
    assert one.labels == ["Yes"] and np.allclose(one.proba(x), 1.0)
    with pytest.raises(ValueError, match="one label per feature row"):
        fit_linear(x, y[:3])


def _const(labels: list[str], probs: list[float]) -> Linear:
    """A head that ignores the features and always gives `probs` (bias = log-probabilities)."""
    return Linear(labels, np.zeros(1, np.float32), np.ones(1, np.float32), np.zeros((len(labels), 1), np.float32),
                  np.log(np.asarray(probs, np.float32)))


def _tag_head(p_pass: float, relevance_yes: float, others_yes: float = 0.9) -> TaskHead:
    crit = {c: _const(["No", "Yes"], [1 - others_yes, others_yes]) for c in get_task("tags").criteria}
    crit["relevance"] = _const(["No", "Yes"], [1 - relevance_yes, relevance_yes])
    return TaskHead("tags", _const([FAIL, PASS], [1 - p_pass, p_pass]), crit)


def test_verdicts_follow_the_sample_head() -> None:
    x = np.zeros((1, 1), np.float32)
    # The sample head passes: every criterion gets a passing label even where its own head leans to "No".
    assert _tag_head(0.8, 0.3).verdicts(x) == [{"relevance": "Yes", "consistency": "Yes", "specificity": "Yes",
                                               "validity": "Yes"}]
    # It fails and a criterion head says why: that criterion fails, the others keep their heads' labels.
    assert _tag_head(0.2, 0.3).verdicts(x) == [{"relevance": "No", "consistency": "Yes", "specificity": "Yes",
                                               "validity": "Yes"}]
    # It fails while every criterion head passes: the least sure criterion (relevance, 0.6 < 0.9) fails.
    assert _tag_head(0.2, 0.6).verdicts(x)[0]["relevance"] == "No"
    # Multi-label criteria: a failing verdict takes the likeliest failing label the head saw; a passing one the
    # likeliest passing label; a head that never saw a failing label falls back to the first one of the task.
    spec = get_task("interests")
    head = TaskHead("interests", _const([FAIL, PASS], [0.7, 0.3]), {
        "willingness": _const(["spontaneity"], [1.0]),
        "reasonableness": _const(["no correlation", "strong correlation", "weak correlation"], [0.1, 0.6, 0.3])})
    v = head.verdicts(x)[0]
    assert v == {"willingness": "spontaneity", "reasonableness": "weak correlation"} and not spec.sample_passes(v)
    head.criteria["reasonableness"] = _const(["strong correlation"], [1.0])
    head.criteria["willingness"] = _const(["spontaneity"], [1.0])
    assert head.verdicts(x)[0] == {"willingness": "necessity", "reasonableness": "strong correlation"}
    head.sample = _const([FAIL, PASS], [0.1, 0.9])
    assert spec.sample_passes(head.verdicts(x)[0])


def test_save_load_round_trip_and_refusals(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    x[:, 0] = np.sign(x[:, 0]) * (1 + np.abs(x[:, 0]))  # a margin around the rule's boundary
    labels = [{"relevance": "Yes" if a > 0 else "No", "consistency": "Yes", "specificity": "Yes",
               "validity": "Yes"} for a in x[:, 0]]
    head = fit_task_head("tags", x, labels)
    manifest = {"base": "embedded", "fingerprint": "f" * 64, "layer": 3, "weight_decay": 0.01}
    save_task_head(tmp_path / "h", head, manifest, {"train": 30})
    loaded = load_head_dir(tmp_path / "h")
    assert loaded.manifest["tasks"] == {"tags": {"train": 30}}
    back = loaded.task_head("tags")
    assert np.allclose(back.pass_proba(x), head.pass_proba(x)) and back.verdicts(x) == head.verdicts(x)
    # The heads fit a rule that one feature decides (fails name relevance, the criterion that failed).
    truth = [get_task("tags").sample_passes(lab) for lab in labels]
    assert [get_task("tags").sample_passes(v) for v in head.verdicts(x)] == truth
    assert all(v["relevance"] == "No" for v, t in zip(head.verdicts(x), truth, strict=True) if not t)
    with pytest.raises(BadInput, match="no judge head for --task interests"):
        loaded.task_head("interests")
    # Another model's heads written to the same dir start it over: heads of two feature models never mix.
    save_task_head(tmp_path / "h", fit_task_head("explanations", x, [
        {"relevance": "Good", "factuality": "Good", "clarity": "Good", "safety": "Yes"}] * 30),
                   {**manifest, "fingerprint": "e" * 64}, {"train": 30})
    assert set(load_head_dir(tmp_path / "h").manifest["tasks"]) == {"explanations"}
    assert not (tmp_path / "h" / "tags.pt").exists()
    with pytest.raises(BadInput, match="not a judge head dir"):
        load_head_dir(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"base": "embedded"}')
    with pytest.raises(BadInput, match="not a judge head manifest"):
        load_head_dir(tmp_path / "bad")


def _buffer(path: Path, task: str) -> Path:
    con = open_buffer(path)
    try:
        import_labels(con, HAND / f"{task}.jsonl", task, source="agent", annotator="engineering-agent-s12")
    finally:
        con.close()
    return path


def test_features_shape_and_wrong_model_refused(tmp_path: Path) -> None:
    tiny = tiny_model_dir(tmp_path / "tiny")
    fm = FeatureModel(tiny, layer=2)
    sample = orjson.loads((HAND / "tags.jsonl").read_text().splitlines()[0])
    f = list(fm.features([sample, sample], "tags"))
    assert len(f) == 2 and f[0].shape == (32,) and np.array_equal(f[0], f[1])  # last + mean of 16-d states
    with pytest.raises(BadInput, match="layers 0..2"):
        FeatureModel(tiny, layer=3)
    other = tiny_model_dir(tmp_path / "other")
    (other / "config.json").write_text((other / "config.json").read_text().replace('"hidden_act"', '"hidden_act" '))
    assert model_fingerprint(other) != model_fingerprint(tiny)


def test_feature_cache_resumes_without_running_the_model(tmp_path: Path) -> None:
    tiny = tiny_model_dir(tmp_path / "tiny")
    samples = [orjson.loads(line) for line in (HAND / "tags.jsonl").read_text().splitlines()[:3]]
    cache = FeatureCache(tmp_path / "c", "ab" * 32, 2)
    fresh = list(FeatureModel(tiny, 2, cache).features(samples, "tags"))
    files = list(cache.dir.glob("*.jsonl"))
    assert len(files) == 1 and len(files[0].read_bytes().splitlines()) == 3
    with files[0].open("ab") as f:
        f.write(b'{"k": "torn", "v": "00')  # a kill in the middle of a line
    fm = FeatureModel(tiny, 2, FeatureCache(tmp_path / "c", "ab" * 32, 2))
    fm.model = None  # any forward pass would fail: every vector must come from the cache
    again = list(fm.features(samples, "tags"))
    assert all(np.array_equal(a, b) for a, b in zip(fresh, again, strict=True))
    # Another layer (or model) is another cache.
    assert FeatureCache(tmp_path / "c", "ab" * 32, 1).get(FeatureCache.key(fm.text(samples[0], "tags"))) is None


def test_train_serve_check_on_a_tiny_model(tmp_path: Path) -> None:
    tiny = tiny_model_dir(tmp_path / "tiny")
    buf = _buffer(tmp_path / "buf.duckdb", "tags")
    head = tmp_path / "head"
    args = ["judge", "train", "--buffer", str(buf), "--task", "tags", "--from", str(tiny), "--layer", "2",
            "--out", str(head), "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "head + rules" in r.output and "always pass" in r.output
    rows = [orjson.loads(line) for line in (HAND / "tags.jsonl").read_text().splitlines()]
    n_held = sum(is_heldout(row["user_id"], 0.2) for row in rows)
    info = load_head_dir(head).manifest["tasks"]["tags"]
    assert load_head_dir(head).manifest["base"] == str(tiny.resolve())  # absolute: serves from any directory
    assert (info["labelled"], info["heldout"], info["train"]) == (147, n_held, 147 - n_held) and n_held > 0
    assert set(info["agreement_heldout"]) == {"always pass", "rules only", "head", "head + rules"}
    assert info["agreement_heldout"]["always pass"]["n"] == n_held
    # A rerun on unchanged labels resumes: the head is not refitted.
    mtime = (head / "tags.pt").stat().st_mtime_ns
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "up to date" in r.output and (head / "tags.pt").stat().st_mtime_ns == mtime
    # Serving: rows in the LLM judge's shape, pass consistent with the verdicts, rules applied.
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join(orjson.dumps(row).decode() for row in rows[:4]) + "\n")
    out = tmp_path / "verdicts.jsonl"
    r = CliRunner().invoke(app, ["judge", "--task", "tags", str(inp), "--head", str(head), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    judged = [orjson.loads(line) for line in out.read_text().splitlines()]
    spec = get_task("tags")
    assert [j["sample_id"] for j in judged] == [row["sample_id"] for row in rows[:4]]
    assert all(j["pass"] == spec.sample_passes(j["verdicts"]) for j in judged)
    # The milestone check serves the head too (on labels it was not fitted on) and records it under its own name.
    held_file = tmp_path / "held.jsonl"
    held_file.write_text("\n".join(orjson.dumps(row).decode() for row in rows if is_heldout(row["user_id"], 0.2)))
    r = CliRunner().invoke(app, ["judge", "check", "--task", "tags", "--against", str(held_file), "--head",
                                 str(head), "--buffer", str(buf), "--min-f1", "0"])
    assert r.exit_code == 0, r.output
    con = open_buffer(buf)
    try:
        assert check_history(con, "tags")[0]["judge"] == f"head:{head} + rules"
    finally:
        con.close()
    # Self-training's rejection filter takes a head dir too: judged the same way, gated on beating the rules.
    hj = HeadJudge(load_head_dir(head), tmp_path / "cache")
    assert hj("tags", rows[0]) == judged[0]["pass"] and is_head_dir(head) and not is_head_dir(tiny)
    better, accs = judge_beats_rules(hj, rows[:4], "tags")
    assert better == (accs["judge_acc"] > accs["rules_acc"])
    # Agreement on the head's own training labels would leak: refused, with the file named; held-out ones are fine.
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("\n".join(orjson.dumps(row).decode() for row in rows
                                    if not is_heldout(row["user_id"], 0.2)) + "\n")
    for cmd in (["judge", "--task", "tags", str(train_file), "--against", str(train_file), "--head", str(head)],
                ["judge", "check", "--task", "tags", "--against", str(train_file), "--head", str(head), "--buffer",
                 str(buf)]):
        r = CliRunner().invoke(app, cmd)
        assert r.exit_code == 2 and f"{147 - n_held} of its {147 - n_held} samples" in r.output, r.output
        assert "would leak" in r.output
    r = CliRunner().invoke(app, ["judge", "--task", "tags", str(held_file), "--against", str(held_file), "--head",
                                 str(head), "--json"])
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout[r.stdout.index("{"):])["n"] == n_held
    # A head serves only with the model it was fitted on; a task it was not trained on is refused.
    (tiny / "config.json").write_text((tiny / "config.json").read_text().replace('"hidden_act"', '"hidden_act" '))
    r = CliRunner().invoke(app, ["judge", "--task", "tags", str(inp), "--head", str(head), "-q"])
    assert r.exit_code != 0 and "retrain the heads" in r.output
    r = CliRunner().invoke(app, ["judge", "--task", "interests", str(inp), "--head", str(head), "-q"])
    assert r.exit_code == 2 and "no judge head for --task interests" in r.output
    r = CliRunner().invoke(app, ["judge", "train", "--buffer", str(tmp_path / "none.duckdb"), "--out", str(head)])
    assert r.exit_code == 2 and "no such label buffer" in r.output


def test_packaged_heads_and_when_they_are_the_default(tmp_path: Path) -> None:
    """The heads that ship: tags only (where they beat the LLM judge + rules on gold), over the embedded GGUF, and
    picked by `recgpt judge` only when no option asks for another judge."""
    from recgpt_cli.commands.judge import _pick_head
    from recgpt_cli.judge.head import BUILTIN_HEADS, builtin_head
    from recgpt_cli.llm.embedded import embedded_model_path
    from recgpt_cli.llm.fingerprint import file_sha256
    from recgpt_cli.llm.options import LLMOptions

    m = load_head_dir(BUILTIN_HEADS).manifest
    assert set(m["tasks"]) == {"tags", "interests"} and m["base"] == "embedded" and m["layer"] == 18
    assert m["fingerprint"] == file_sha256(embedded_model_path())
    for task in ("tags", "interests"):
        agree = m["tasks"][task]["agreement_heldout"]
        assert agree["head + rules"]["acc"] > agree["rules only"]["acc"]
        assert builtin_head(task) == BUILTIN_HEADS and _pick_head(None, False, LLMOptions(), task) == BUILTIN_HEADS
    assert builtin_head("explanations") is None and _pick_head(None, False, LLMOptions(), "explanations") is None
    assert _pick_head(None, True, LLMOptions(), "tags") is None
    assert _pick_head(None, False, LLMOptions(model="x.gguf"), "tags") is None
    assert _pick_head(None, False, LLMOptions(backend="openai", base_url="http://127.0.0.1:1/v1"), "tags") is None
    assert _pick_head(None, False, LLMOptions(prompt="p.md"), "tags") is None
    assert _pick_head(tmp_path, False, LLMOptions(), "tags") == tmp_path
    with pytest.raises(BadInput, match="give one"):
        _pick_head(tmp_path, True, LLMOptions(), "tags")
    # No gold sample is a training label: the written labels' users are invented (hl..), and the derived ones leave
    # the gold set's sample_data users out (sample_data/judge_train/exclude_users.txt).
    for task in ("tags", "interests"):
        gold = [orjson.loads(line) for line in (HAND.parent / "gold" / f"{task}.jsonl").read_text().splitlines()]
        load_head_dir(BUILTIN_HEADS).refuse_training_samples(gold, task, "gold")
    # Its own training labels are refused under any user id: the judge never sees the id, so a renamed copy is the
    # same input (the buffer hash alone, which holds the id, let such a copy through).
    own = [orjson.loads(line) for line in (HAND / "tags.jsonl").read_text().splitlines()]
    renamed = [{**s, "user_id": f"{s['user_id']}-copy", "sample_id": f"{s['sample_id']}-copy"} for s in own]
    n_train = len(m["tasks"]["tags"]["train_hashes"])
    for samples in (own, renamed):
        with pytest.raises(BadInput, match=rf"{n_train} of its {len(own)} samples .* would leak"):
            load_head_dir(BUILTIN_HEADS).refuse_training_samples(samples, "tags", "own")


def test_a_judge_from_align_sft_is_not_scored_on_its_training_inputs(tmp_path: Path) -> None:
    """`align sft` records the judge inputs it trained on (`judge_inputs` in the manifest); agreement measured with
    that model on them is refused wherever the model is named (its dir, its GGUF, its hf/)."""
    from recgpt_cli.commands.judge import _refuse_own_labels
    from recgpt_cli.judge.buffer import judge_input_hash
    from recgpt_cli.llm.options import LLMOptions

    own = [orjson.loads(line) for line in (HAND / "tags.jsonl").read_text().splitlines()]
    model = tmp_path / "judge-model"
    (model / "hf").mkdir(parents=True)
    (model / "manifest.json").write_text(orjson.dumps(
        {"judge_inputs": [judge_input_hash(own[0], "tags")]}).decode())
    renamed = {**own[0], "user_id": "someone-else"}
    for named in (model, model / "model.gguf", model / "hf"):
        with pytest.raises(BadInput, match=r"labels.jsonl: 1 of its 2 samples .* would leak"):
            _refuse_own_labels(None, LLMOptions(model=str(named)), [own[1], renamed], "tags", "labels.jsonl")
    _refuse_own_labels(None, LLMOptions(model=str(model)), own[1:3], "tags", "labels.jsonl")  # not trained on
    _refuse_own_labels(None, LLMOptions(), own, "tags", "labels.jsonl")  # the embedded model trained on none


@pytest.mark.slow
@pytest.mark.model
def test_heads_on_the_embedded_model_beat_the_rules_on_held_out_hand_labels(tmp_path: Path, embedded_hf: Path
                                                                              ) -> None:
    """The real claim, small: on the hand tag labels' held-out users, heads read from the embedded model agree
    with the labels more often than always-pass and the rules alone (bench/README.md has the full table)."""
    buf = _buffer(tmp_path / "buf.duckdb", "tags")
    r = CliRunner().invoke(app, ["judge", "train", "--buffer", str(buf), "--task", "tags", "--from", str(embedded_hf),
                                 "--out", str(tmp_path / "head"), "-q"])
    assert r.exit_code == 0, r.output
    fitted = load_head_dir(tmp_path / "head")
    agree = fitted.manifest["tasks"]["tags"]["agreement_heldout"]
    assert agree["head + rules"]["acc"] > agree["rules only"]["acc"] > agree["always pass"]["acc"]
    assert agree["head"]["acc"] > agree["always pass"]["acc"]
    # The packaged heads are what `make heads` fits from these labels: the same verdicts on held-out samples
    # (features read once from the same weights) and the same stored held-out agreement.
    from recgpt_cli.judge.head import BUILTIN_HEADS

    shipped = load_head_dir(BUILTIN_HEADS)
    held = [orjson.loads(line) for line in (HAND / "tags.jsonl").read_text().splitlines()
            if is_heldout(orjson.loads(line)["user_id"], 0.2)]
    x = np.stack(list(FeatureModel(embedded_hf).features(held, "tags")))
    assert shipped.task_head("tags").verdicts(x) == fitted.task_head("tags").verdicts(x)
    assert shipped.manifest["tasks"]["tags"]["agreement_heldout"] == agree
