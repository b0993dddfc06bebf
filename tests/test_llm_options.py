"""Shared LLM options: parsing on a real typer command, validation, and make_llm wiring."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from recgpt_cli.commands.llm_options import LLMOptions, llm_options
from recgpt_cli.errors import BadInput
from recgpt_cli.llm.base import FakeBackend, SamplingParams
from recgpt_cli.llm.cache import DuckDBCache
from recgpt_cli.llm.factory import make_llm

seen: list[LLMOptions] = []
app = typer.Typer()


@app.command()
@llm_options()
def stage(seed: int = 0, llm_opts: LLMOptions = LLMOptions()) -> None:
    seen.append(llm_opts)


def invoke(*args: str) -> object:
    seen.clear()
    return CliRunner().invoke(app, list(args))


def test_defaults() -> None:
    assert invoke().exit_code == 0  # type: ignore[attr-defined]
    assert seen == [LLMOptions()]
    assert seen[0].sampling(SamplingParams(temperature=0.1, max_tokens=300), seed=5) == SamplingParams(
        temperature=0.1, max_tokens=300, seed=5)


def test_all_options_parse() -> None:
    args = ["--backend", "openai", "--model", "smol", "--base-url", "http://127.0.0.1:1/v1", "--concurrency", "8",
            "--timeout", "2.5", "--retries", "0", "--no-cache", "--cache-dir", "c", "--prompt", "p.md", "--date",
            "2025-07-01", "--temperature", "0.3", "--max-tokens", "64"]
    r = invoke(*args)
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    o = seen[0]
    assert (o.backend, o.model, o.base_url, o.concurrency, o.timeout, o.retries, o.no_cache, o.cache_dir,
            o.prompt) == ("openai", "smol", "http://127.0.0.1:1/v1", 8, 2.5, 0, True, Path("c"), "p.md")
    assert o.to_args() == args  # what `recgpt run` hands each stage: the same options back
    assert o.day().isoformat() == "2025-07-01"  # type: ignore[union-attr]
    assert o.sampling(SamplingParams(max_tokens=300)) == SamplingParams(temperature=0.3, max_tokens=64)


def test_fake_backend_is_not_a_cli_choice() -> None:
    r = invoke("--backend", "fake")
    assert r.exit_code == 2  # type: ignore[attr-defined]
    assert "is not one of llama-cpp, hf, openai" in r.output  # type: ignore[attr-defined]


def test_bad_date_and_missing_base_url() -> None:
    with pytest.raises(BadInput, match=r"--date '07/01/2025': expected YYYY-MM-DD"):
        LLMOptions(date="07/01/2025")
    with pytest.raises(BadInput, match="--backend openai needs --base-url"):
        LLMOptions(backend="openai")


def test_cache_dir_default_env_and_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECGPT_CACHE_DIR", raising=False)
    assert LLMOptions().resolved_cache_dir() == Path(".recgpt-cache")
    monkeypatch.setenv("RECGPT_CACHE_DIR", str(tmp_path))
    fake = FakeBackend(lambda m, s, p: "{}")
    llm = make_llm(task="interest_mining", backend=fake)
    assert isinstance(llm.cache, DuckDBCache)
    assert llm.cache.path_for(None) == tmp_path / "interest_mining.duckdb"
    assert make_llm(LLMOptions(no_cache=True), backend=fake).cache is None
    assert os.environ["RECGPT_CACHE_DIR"] == str(tmp_path)


def test_make_llm_rejects_unknown_options_and_needs_hf_dir() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        make_llm(modle="x")
    with pytest.raises(BadInput, match="--backend hf needs --model DIR"):
        make_llm(backend="hf", no_cache=True)


def test_load_prompt_prefers_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.md"
    f.write_text("---\ntask: custom\nversion: 9\noutput: O\n---\nhi\n", encoding="utf-8")
    assert LLMOptions(prompt=str(f)).load_prompt("interest_mining").task == "custom"
    assert LLMOptions().load_prompt("interest_mining").task == "interest_mining"


def test_every_llm_command_and_run_take_the_same_options() -> None:
    """One option set, declared once: the LLM commands, `judge check` and `run` list the same LLM options."""
    from recgpt_cli.cli import app as recgpt

    commands = dict(typer.main.get_command(recgpt).commands)  # type: ignore[attr-defined]
    judge = commands["judge"].commands  # the judge group: judging itself, and the milestone check
    commands.update({"judge": judge["run"], "judge check": judge["check"]})
    opts = {name: {o for p in commands[name].params for o in p.opts}
            for name in ("mine-interests", "predict-tags", "explain", "judge", "judge check", "run")}
    llm = {"--backend", "--model", "--base-url", "--concurrency", "--timeout", "--retries", "--no-cache",
           "--cache-dir", "--temperature", "--max-tokens"}
    for name, have in opts.items():
        assert llm <= have, (name, llm - have)
    assert "--date" in opts["mine-interests"] and "--date" not in opts["judge"]
    assert "--prompt" in opts["explain"] and "--prompt" not in opts["run"]
