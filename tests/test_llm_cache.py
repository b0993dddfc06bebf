"""DuckDB completion cache: hits, key changes, per-call durability, resume after a crash, call log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import BaseModel

from recgpt_cli.llm.base import FakeBackend, SamplingParams
from recgpt_cli.llm.cache import DuckDBCache
from recgpt_cli.llm.prompts import parse_prompt
from recgpt_cli.llm.structured import StructuredLLM

TEXT = "---\ntask: mining\nversion: {v}\noutput: Out\n---\nUser {{{{u}}}}.\n"


class Out(BaseModel):
    user: str


def reply(messages: Any) -> str:
    return '{"user": "' + messages[-1]["content"] + '"}'


def echo() -> FakeBackend:
    return FakeBackend(lambda messages, schema, params: reply(messages))


def prompt(version: str = "1") -> Any:
    return parse_prompt(TEXT.format(v=version), "mining.md")


def test_hit_after_miss_and_rows_logged(tmp_path: Path) -> None:
    fake = echo()
    llm = StructuredLLM(fake, cache=DuckDBCache(tmp_path))
    first = llm.generate(prompt(), {"u": "u1"}, Out)
    second = llm.generate(prompt(), {"u": "u1"}, Out)
    assert (first.cached, second.cached) == (False, True)
    assert first.value == second.value == Out(user="User u1.")
    assert len(fake.calls) == 1
    assert second.prompt_tokens == 0  # a hit costs nothing
    # ... but still says what the answer cost when it was made (benchmarks report cost per user from it)
    assert second.origin is not None and first.origin is not None
    assert second.origin.prompt_tokens == first.origin.prompt_tokens == first.prompt_tokens > 0
    llm.cache.close()  # type: ignore[union-attr]
    con = duckdb.connect(str(tmp_path / "mining.duckdb"))
    rows = con.execute("SELECT task, prompt_version, backend, model_id, cached, output, messages IS NULL "
                       "FROM llm_calls ORDER BY cached").fetchall()
    assert rows == [("mining", "1", "fake", "fake-model", False, '{"user": "User u1."}', False),
                    ("mining", "1", "fake", "fake-model", True, None, True)]


def test_rejected_answers_are_logged_but_not_cached(tmp_path: Path) -> None:
    """Every call is in the audit log, the rejected ones too (finish_reason `rejected: ...`); none is cached,
    so the next run asks again."""
    junk = FakeBackend(lambda messages, schema, params: "not json")
    llm = StructuredLLM(junk, cache=DuckDBCache(tmp_path), retries=1)
    gen = llm.generate(prompt(), {"u": "u1"}, Out)
    assert gen.value is None and len(junk.calls) == 2
    llm.cache.close()  # type: ignore[union-attr]
    con = duckdb.connect(str(tmp_path / "mining.duckdb"))
    rows = con.execute("SELECT output, cached, finish_reason FROM llm_calls").fetchall()
    assert [(o, c, f.split(":")[0]) for o, c, f in rows] == [("not json", False, "rejected")] * 2
    assert "JSONDecodeError" in rows[0][2]
    assert con.execute("SELECT count(*) FROM completions").fetchone() == (0,)
    con.close()


def test_key_changes_with_version_params_model_and_schema(tmp_path: Path) -> None:
    cache = DuckDBCache(tmp_path)
    fake = echo()
    msgs = [{"role": "user", "content": "x"}]
    base = cache.key(fake, prompt("1"), msgs, {"type": "object"}, SamplingParams())
    assert base == cache.key(fake, prompt("1"), msgs, {"type": "object"}, SamplingParams())
    other_model = FakeBackend(fake.responder, model_id="other")
    variants = [
        cache.key(fake, prompt("2"), msgs, {"type": "object"}, SamplingParams()),
        cache.key(fake, prompt("1"), msgs, {"type": "object"}, SamplingParams(temperature=0.5)),
        cache.key(fake, prompt("1"), msgs, {"type": "object"}, SamplingParams(max_tokens=10)),
        cache.key(fake, prompt("1"), msgs, {"type": "object"}, SamplingParams(seed=1)),
        cache.key(fake, prompt("1"), msgs, {"type": "array"}, SamplingParams()),
        cache.key(fake, prompt("1"), [{"role": "user", "content": "y"}], {"type": "object"}, SamplingParams()),
        cache.key(other_model, prompt("1"), msgs, {"type": "object"}, SamplingParams()),
    ]
    assert len({base, *variants}) == 1 + len(variants)


def test_killed_batch_resumes_without_repeating_calls(tmp_path: Path) -> None:
    users = [f"u{i}" for i in range(6)]
    calls: list[str] = []

    def crashing_after(n: int) -> FakeBackend:
        def respond(messages: Any, schema: Any, params: SamplingParams) -> str:
            if len(calls) == n:
                raise KeyboardInterrupt  # the stage is killed mid-batch
            calls.append(messages[-1]["content"])
            return reply(messages)

        return FakeBackend(respond)

    llm = StructuredLLM(crashing_after(4), cache=DuckDBCache(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        for u in users:
            llm.generate(prompt(), {"u": u}, Out)
    assert len(calls) == 4
    llm.cache.close()  # type: ignore[union-attr]  # the process dies; only committed rows survive

    calls.clear()
    rerun = StructuredLLM(crashing_after(99), cache=DuckDBCache(tmp_path))
    gens = [rerun.generate(prompt(), {"u": u}, Out) for u in users]
    assert calls == ["User u4.", "User u5."]
    assert [g.cached for g in gens] == [True] * 4 + [False] * 2
    con = rerun.cache._con("mining")  # type: ignore[union-attr]
    assert con.execute("SELECT count(*) FROM completions").fetchone() == (6,)


def test_one_file_per_task_and_fixed_task_override(tmp_path: Path) -> None:
    cache = DuckDBCache(tmp_path)
    StructuredLLM(echo(), cache=cache).generate(prompt(), {"u": "a"}, Out)
    judge = parse_prompt("---\ntask: judge_tags\nversion: 3\noutput: Out\n---\n{{u}}", "j.md")
    StructuredLLM(echo(), cache=cache).generate(judge, {"u": "a"}, Out)
    assert sorted(p.name for p in tmp_path.glob("*.duckdb")) == ["judge_tags.duckdb", "mining.duckdb"]
    assert DuckDBCache(tmp_path, task="judge").path_for("judge_tags") == tmp_path / "judge.duckdb"


def test_locked_file_falls_back_to_uncached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recgpt_cli.llm.cache as cache_mod

    monkeypatch.setattr(cache_mod, "LOCK_WAIT_S", 0.0)

    def locked(path: str) -> Any:
        raise duckdb.IOException(f'IO Error: Could not set lock on file "{path}": Conflicting lock is held')

    monkeypatch.setattr(cache_mod.duckdb, "connect", locked)
    warnings: list[str] = []
    fake = echo()
    llm = StructuredLLM(fake, cache=DuckDBCache(tmp_path, warn=warnings.append))
    assert llm.generate(prompt(), {"u": "a"}, Out).ok
    assert llm.generate(prompt(), {"u": "a"}, Out).cached is False
    assert len(fake.calls) == 2
    # The shared file is busy, so a side file is tried; that is refused too here, so the run goes uncached.
    assert len(warnings) == 2 and "in use by another process" in warnings[0]
    assert "running without cache" in warnings[1]


def test_key_depends_on_schema_property_order(tmp_path: Path) -> None:
    cache, fake, msgs = DuckDBCache(tmp_path), echo(), [{"role": "user", "content": "x"}]
    ab = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    ba = {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "string"}}}
    p = SamplingParams()
    assert cache.key(fake, prompt(), msgs, ab, p) != cache.key(fake, prompt(), msgs, ba, p)


CHILD = r"""
import sys, time
from pydantic import BaseModel
from recgpt_cli.llm.base import FakeBackend
from recgpt_cli.llm.cache import DuckDBCache
from recgpt_cli.llm.prompts import parse_prompt
from recgpt_cli.llm.structured import StructuredLLM

class Out(BaseModel):
    user: str

def slow(messages, schema, params):
    time.sleep(0.05)
    return '{"user": "' + messages[-1]["content"] + '"}'

p = parse_prompt("---\ntask: mining\nversion: 1\noutput: Out\n---\nUser {{u}}.\n", "m.md")
llm = StructuredLLM(FakeBackend(slow), cache=DuckDBCache(sys.argv[1]))
for i in range(1000):
    llm.generate(p, {"u": f"u{i}"}, Out)
    print(i, flush=True)
"""


def test_sigkill_mid_batch_keeps_every_finished_call(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    done = [child.stdout.readline() for _ in range(5)]
    child.send_signal(signal.SIGKILL)  # no cleanup, no close: only per-call commits survive
    child.wait()
    assert done[-1].strip() == "4"
    con = duckdb.connect(str(tmp_path / "mining.duckdb"))
    n = con.execute("SELECT count(*) FROM completions").fetchone()[0]  # type: ignore[index]
    assert 5 <= n <= 6  # every reported call, plus at most the one in flight when killed
    assert con.execute("SELECT count(*) FROM llm_calls").fetchone() == (n,)
