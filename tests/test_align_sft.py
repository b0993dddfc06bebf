"""recgpt_cli.align.sft on the real embedded model (LoRA, tiny data, short contexts): loss goes down, the adapter
saves and loads, an interrupted run resumes to the same weights, a kill -9 loses at most `save_every` steps, and
the exported GGUF serves what was learned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from recgpt_cli.align.samples import Sample
from recgpt_cli.align.sft import SFTConfig, _batch, autocast_dtype, encode, end_of_turn_id, reply_loss, train_sft
from recgpt_cli.errors import BadInput

pytestmark = pytest.mark.slow

COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red", "banana": "yellow",
           "orange": "orange", "violet": "purple"}


def samples() -> list[Sample]:
    return [Sample("colour", "logs", [{"role": "system", "content": "Answer in JSON."},
                                      {"role": "user", "content": f"Colour of {thing}?"}],
                   f'{{"colour": "{colour}"}}') for thing, colour in COLOURS.items()]


def cfg(**kw: object) -> SFTConfig:
    base = dict(max_steps=6, batch_size=4, lr=3e-3, max_length=128, threads=2, save_every=100, gguf_type="f16",
                warmup_steps=1)
    return SFTConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(embedded_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("sft") / "run"
    result = train_sft(samples(), out, cfg(max_steps=12), base=embedded_hf)
    return out, result


def test_prompt_is_masked_and_reply_ends_the_turn(embedded_hf: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_hf)
    s = samples()[0]
    ids, labels = encode(tok, s, 128)  # type: ignore[misc]
    learned = [t for t in labels if t != -100]
    assert tok.decode(learned) == '{"colour": "blue"}<|im_end|>'
    assert ids[: len(ids) - len(learned)] == tok(tok.apply_chat_template(
        s.messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
    assert encode(tok, s, 10) is None  # too long: skipped, counted by train_sft


def test_reply_loss_is_transformers_loss_on_fewer_logits(embedded_hf: Path) -> None:
    """The output layer applied to the reply positions only gives the loss transformers computes from `labels`
    over every position (replies of different lengths in one padded batch)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_hf)
    model = AutoModelForCausalLM.from_pretrained(embedded_hf, dtype=torch.float32).eval()
    rows = [r for r in (encode(tok, s, 128) for s in samples()[:3]) if r is not None]
    rows[1] = (rows[1][0] + [1345, 47], rows[1][1] + [1345, 47])  # a longer reply: the others are padded
    batch = _batch(rows, end_of_turn_id(tok), "cpu")
    with torch.no_grad():
        assert float(reply_loss(model, batch)) == pytest.approx(float(model(**batch).loss), rel=1e-5)


def test_gradient_checkpointing_gives_the_same_training(embedded_hf: Path, tmp_path: Path) -> None:
    """Recomputing activations in the backward pass changes memory and time, not what is learned, so a
    checkpointed run may resume a plain one."""
    plain = train_sft(samples(), tmp_path / "a", cfg(max_steps=3), base=embedded_hf, export=False)
    ckpt = train_sft(samples(), tmp_path / "b", cfg(max_steps=3, gradient_checkpointing=True), base=embedded_hf,
                     export=False)
    assert ckpt.losses == pytest.approx(plain.losses, abs=1e-4)
    assert SFTConfig(gradient_checkpointing=True).fingerprint() == SFTConfig().fingerprint()


def test_precision_resolution() -> None:
    import torch

    assert autocast_dtype("cpu", "fp32") is None and autocast_dtype("cuda", "fp32") is None
    assert autocast_dtype("cpu", "bf16") is torch.bfloat16 and autocast_dtype("cuda", "auto") is torch.bfloat16
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert (autocast_dtype("cpu", "auto") is torch.bfloat16) == native
    with pytest.raises(BadInput, match="--precision"):
        SFTConfig(precision="fp8")


def test_loss_decreases_and_outputs_are_written(trained: tuple[Path, object]) -> None:
    out, r = trained
    losses = r.losses  # type: ignore[attr-defined]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < 0.5 * losses[0]
    for part in ("adapter/adapter_config.json", "hf/config.json", "model.gguf", "manifest.json", "train_log.jsonl"):
        assert (out / part).exists(), part
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == 12 and manifest["samples"] == 8 and manifest["config"]["method"] == "lora"
    assert manifest["precision"] == ("fp32" if autocast_dtype("cpu", "auto") is None else "bf16")
    assert manifest["judge_inputs"] == []  # no judge samples here; a judge run records what it saw
    assert json.loads((out / "trained_users.json").read_text()) == {}  # these samples are no user's history
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 12


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft's, raised on wrapping
def test_adapter_reloads_to_the_merged_model(trained: tuple[Path, object], embedded_hf: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = trained
    ids = torch.tensor([[1, 504, 3458, 282, 1345, 47]])
    merged = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(embedded_hf, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, out / "adapter").eval()
    with torch.no_grad():
        a, b = merged(ids).logits, with_adapter(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(embedded_hf, dtype=torch.float32).eval()(ids).logits
    assert torch.allclose(a, b, atol=1e-3)
    assert not torch.allclose(a, plain, atol=1e-2)  # training changed the model


def test_exported_gguf_serves_what_was_learned(trained: tuple[Path, object]) -> None:
    from recgpt_cli.llm.base import SamplingParams
    from recgpt_cli.llm.factory import make_backend
    from recgpt_cli.llm.options import LLMOptions

    out, _ = trained
    backend = make_backend(LLMOptions(model=str(out)))  # an aligned dir means its model.gguf
    assert Path(backend.model_path).name == "model.gguf"  # type: ignore[attr-defined]
    s = samples()[0]
    text = backend.complete(s.messages, None, SamplingParams(max_tokens=12)).text
    assert orjson.loads(text) == {"colour": "blue"}


def test_adapter_gguf_serves_what_the_merged_export_serves(trained: tuple[Path, object], tmp_path: Path) -> None:
    """The adapter as a llama.cpp LoRA GGUF, merged into the embedded GGUF with numpy at first use, answers every
    prompt as the model.gguf exported from the merged transformers weights does (tensor names, alpha / rank, q/k's
    rope row order: any one wrong and the answers differ)."""
    from recgpt_cli.align.gguf_export import export_lora_gguf
    from recgpt_cli.llm.base import SamplingParams
    from recgpt_cli.llm.embedded import embedded_model_path
    from recgpt_cli.llm.factory import make_backend
    from recgpt_cli.llm.fingerprint import file_sha256
    from recgpt_cli.llm.options import LLMOptions

    out, _ = trained
    d = tmp_path / "adapter-only"
    export_lora_gguf(out / "adapter", d / "adapter.gguf")
    (d / "manifest.json").write_text(json.dumps({"adapter_base": "embedded",
                                                 "adapter_base_sha256": file_sha256(embedded_model_path())}))
    lora = make_backend(LLMOptions(model=str(d), cache_dir=tmp_path / "cache"))
    merged = make_backend(LLMOptions(model=str(out)))
    params = SamplingParams(max_tokens=12)
    answers = [(lora.complete(s.messages, None, params).text, merged.complete(s.messages, None, params).text)
               for s in samples()]
    assert [a for a, _ in answers] == [b for _, b in answers]
    assert orjson.loads(answers[0][0]) == {"colour": "blue"}
    assert len(list((tmp_path / "cache").glob("merged-*.gguf"))) == 1  # merged once, reused by model id


def test_sft_from_a_gguf_writes_an_adapter_gguf_served_without_export(embedded_hf: Path, tmp_path: Path) -> None:
    from recgpt_cli.llm.base import SamplingParams
    from recgpt_cli.llm.embedded import embedded_model_path
    from recgpt_cli.llm.factory import make_backend
    from recgpt_cli.llm.fingerprint import file_sha256
    from recgpt_cli.llm.options import LLMOptions

    gguf = embedded_model_path()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"hf-{file_sha256(gguf)[:16]}").symlink_to(embedded_hf)  # the conversion align sft would make
    out = tmp_path / "run"
    train_sft(samples(), out, cfg(max_steps=12), base=str(gguf), cache_dir=cache, export=False)
    assert (out / "adapter.gguf").is_file() and not (out / "model.gguf").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["adapter_base"] == str(gguf.resolve()) and manifest["adapter_base_sha256"] == file_sha256(gguf)
    backend = make_backend(LLMOptions(model=str(out), cache_dir=cache))
    assert backend.adapter == out / "adapter.gguf"  # type: ignore[attr-defined]
    text = backend.complete(samples()[0].messages, None, SamplingParams(max_tokens=12)).text
    assert orjson.loads(text) == {"colour": "blue"}


def assert_resumed_like(whole: Any, cut: Path, base: Path, step: int) -> None:
    """Rerun the interrupted run in `cut`: it resumes at `step`, its losses and final weights are `whole`'s."""
    import torch

    resumed = train_sft(samples(), cut, cfg(), base=base, export=False)
    assert resumed.resumed_from == step and resumed.losses == pytest.approx(whole.losses[step:], abs=1e-5)
    a = torch.load(whole.out / "checkpoint" / "state.pt", weights_only=True)["weights"]
    b = torch.load(cut / "checkpoint" / "state.pt", weights_only=True)["weights"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_interrupted_run_resumes_to_the_same_weights(embedded_hf: Path, tmp_path: Path) -> None:

    whole = train_sft(samples(), tmp_path / "whole", cfg(), base=embedded_hf, export=False)

    def stop_at_3(entry: dict) -> None:
        if entry["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sft(samples(), tmp_path / "cut", cfg(), base=embedded_hf, export=False, progress=stop_at_3)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "progress.json").read_text())["step"] == 3
    assert_resumed_like(whole, tmp_path / "cut", embedded_hf, 3)
    # other data in the same folder is refused, not mixed in
    with pytest.raises(BadInput, match="other data or settings"):
        train_sft(samples()[:4], tmp_path / "cut", cfg(), base=embedded_hf, export=False)


def test_kill_9_loses_at_most_save_every_steps(embedded_hf: Path, tmp_path: Path) -> None:
    data = tmp_path / "s.jsonl"
    data.write_bytes(b"".join(orjson.dumps(s.to_json()) + b"\n" for s in samples()))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recgpt_cli", "align", "sft", "--samples", str(data), "--out", str(out), "--from",
           str(embedded_hf), "--max-steps", "10", "--save-every", "2", "--max-length", "128", "--lr", "3e-3",
           "--no-export", "--threads", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    progress = out / "checkpoint" / "progress.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (progress.exists() and json.loads(progress.read_text())["step"] >= 4):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = json.loads(progress.read_text())["step"]
    assert 4 <= saved < 10
    logged = len((out / "train_log.jsonl").read_text().splitlines())
    assert logged - saved < 2 + 1  # at most save_every steps (plus the one in flight) are lost
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"resumed at step {saved}" in " ".join(r.stderr.split())
    assert json.loads((out / "manifest.json").read_text())["steps"] == 10


def sample_db(tmp_path: Path) -> Path:
    """sample_data imported with `recgpt import jsonl`, as the README does."""
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    sample = Path(__file__).resolve().parents[1] / "sample_data"
    db = tmp_path / "s.duckdb"
    files = [f"--{name}={sample / name}.jsonl" for name in ("users", "items", "behaviors")]
    r = CliRunner().invoke(app, ["import", "jsonl", "--db", str(db), *files])
    assert r.exit_code == 0, r.output
    return db


def test_readme_align_commands_end_to_end(embedded_hf: Path, tmp_path: Path) -> None:
    """`align data` on sample_data -> `align sft` (2 steps) -> a stage served by the aligned dir's GGUF."""
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    db, samples, out = sample_db(tmp_path), tmp_path / "samples.duckdb", tmp_path / "aligned"
    run = CliRunner().invoke
    r = run(app, ["align", "data", "--db", str(db), "--samples", str(samples), "--max-users", "6", "--task", "tags"])
    assert r.exit_code == 0, r.output
    r = run(app, ["align", "sft", "--samples", str(samples), "--out", str(out), "--from", str(embedded_hf),
                  "--max-steps", "2", "--batch-size", "1", "--threads", "2"])
    assert r.exit_code == 0, r.output
    assert (out / "model.gguf").exists() and "2 steps" in " ".join(r.output.split())
    compressed = tmp_path / "c.jsonl"
    r = run(app, ["compress", "--db", str(db), "--out", str(compressed), "--split", "loo", "--phase", "test",
                  "--users", "u001"])
    assert r.exit_code == 0, r.output
    r = run(app, ["mine-interests", str(compressed), "--model", str(out), "--max-interests", "2", "--no-cache"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[0])["user_id"] == "u001"


def test_curriculum_file_trains_its_stages_in_order(embedded_hf: Path, tmp_path: Path) -> None:
    """`align data --source curriculum` on sample_data -> `align sft --curriculum appendix-c` with the real model:
    the foundation samples are trained first, the advanced ones after; stages without samples take no steps."""
    from typer.testing import CliRunner

    from recgpt_cli.cli import app

    db, samples_db, out = sample_db(tmp_path), tmp_path / "samples.duckdb", tmp_path / "cur"
    run = CliRunner().invoke
    r = run(app, ["align", "data", "--db", str(db), "--source", "curriculum", "--task", "query_category",
                  "--task", "advanced", "--max-per-category", "1", "--samples", str(samples_db)])
    assert r.exit_code == 0, r.output
    r = run(app, ["align", "sft", "--samples", str(samples_db), "--out", str(out), "--from", str(embedded_hf),
                  "--curriculum", "appendix-c", "--max-steps", "4", "--batch-size", "2", "--threads", "2",
                  "--no-export"])
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in log] == [0, 0, 2, 2]  # foundation, then advanced (intermediate has no samples)
    assert all(e["loss"] > 0 for e in log)


def test_rerunning_a_finished_run_keeps_its_measurements(trained: tuple[Path, object], embedded_hf: Path) -> None:
    """A rerun trains nothing and must not overwrite the run's loss, time and speed with NaN and zeros (JSON has
    no NaN: the manifest stays readable)."""
    out, r = trained
    before = json.loads((out / "manifest.json").read_text())
    again = train_sft(samples(), out, cfg(max_steps=12), base=embedded_hf)
    after = json.loads((out / "manifest.json").read_text())  # strict: NaN would not parse with orjson below
    orjson.loads((out / "manifest.json").read_bytes())
    assert again.losses == [] and again.first_loss == r.first_loss  # type: ignore[attr-defined]
    for key in ("first_loss", "last_loss", "train_s", "tokens_per_s", "steps"):
        assert after[key] == before[key], key


def test_a_real_sigint_stops_between_steps_and_resumes_to_the_same_weights(embedded_hf: Path,
                                                                            tmp_path: Path) -> None:
    """Ctrl-C is taken at the end of the running step (never between its update and its count), saved, and the
    resumed run ends with the uninterrupted run's weights."""

    whole = train_sft(samples(), tmp_path / "whole", cfg(), base=embedded_hf, export=False)

    def ctrl_c_at_2(entry: dict) -> None:
        if entry["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train_sft(samples(), tmp_path / "cut", cfg(), base=embedded_hf, export=False, progress=ctrl_c_at_2)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "progress.json").read_text())["step"] == 2
    assert_resumed_like(whole, tmp_path / "cut", embedded_hf, 2)
