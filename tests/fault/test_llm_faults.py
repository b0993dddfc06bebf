"""Fault injection on the LLM stages (issue 12, cases 1-3 and 6): a server that hangs, answers junk or HTTP 500,
Ctrl-C, a shared cache, unbounded prompts. Each test names the case it covers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import FakeServer, child_env, compressed_users, recgpt

from recgpt_cli.interests import InterestMiner
from recgpt_cli.llm.base import FakeBackend, SamplingParams
from recgpt_cli.llm.cache import DuckDBCache
from recgpt_cli.llm.prompts import parse_prompt
from recgpt_cli.llm.structured import StructuredLLM

pytestmark = pytest.mark.fault


def llm_args(server: FakeServer, cache: Path, *extra: str) -> list[str]:
    return ["--backend", "openai", "--base-url", server.url, "--model", "fake", "--cache-dir", str(cache),
            "--quiet", *extra]


def rows(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def _foreground_sigint() -> None:
    """The child starts as a command typed at a terminal does. A test runner started in the background of a script
    (`cmd &` without job control) ignores SIGINT, children inherit that and Python then installs no
    KeyboardInterrupt handler, so the Ctrl-C below never arrived (fresh-clone CI runs launched so failed here)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_case1_ctrl_c_with_hung_server_exits_130_within_2s(fake_server: FakeServer, tmp_path: Path) -> None:
    """Case 1: Ctrl-C while every call hangs, default --concurrency 4: exit 130 within 2 s (was: still running
    300 s later)."""
    fake_server.mode = "hang"
    src = compressed_users(tmp_path / "c.jsonl", n=6)
    proc = subprocess.Popen([sys.executable, "-m", "recgpt_cli", "mine-interests", str(src), "--out",
                             str(tmp_path / "i.jsonl"), *llm_args(fake_server, tmp_path / "cache")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                            preexec_fn=_foreground_sigint)
    deadline = time.monotonic() + 30
    while fake_server.in_flight < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_server.in_flight == 4, "four calls should hang on the server at once"
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()
    assert time.monotonic() - t0 < 2.0
    assert b"interrupted" in err and b"Traceback" not in err


def test_case1_timeout_bounds_a_hung_call(fake_server: FakeServer, tmp_path: Path) -> None:
    """Case 1: --timeout/--retries bound a hung server: each record fails after (retries+1) x timeout and is
    written with its error (was: 120 s x 5 tries per call, no --timeout)."""
    fake_server.mode = "hang"
    src = compressed_users(tmp_path / "c.jsonl", n=2)
    out = tmp_path / "i.jsonl"
    t0 = time.monotonic()
    res = recgpt("mine-interests", str(src), "--out", str(out),
                 *llm_args(fake_server, tmp_path / "cache", "--timeout", "0.3", "--retries", "1"))
    assert time.monotonic() - t0 < 15
    assert res.returncode == 3, res.stderr.decode()
    assert [("error" in r, r["user_id"]) for r in rows(out)] == [(True, "u1"), (True, "u2")]
    assert "--timeout 0.3s" in rows(out)[0]["error"]
    assert fake_server.requests == 4  # 2 records x (1 + 1 retry)


def test_case2_failures_are_not_cached(fake_server: FakeServer, tmp_path: Path) -> None:
    """Case 2: junk answers fail the records; once the server is fixed a rerun asks again and succeeds (was: 0
    requests, "2 failed (2 cached)")."""
    fake_server.mode = "junk"
    src = compressed_users(tmp_path / "c.jsonl", n=2)
    out = tmp_path / "i.jsonl"
    res = recgpt("mine-interests", str(src), "--out", str(out), *llm_args(fake_server, tmp_path / "cache"))
    assert res.returncode == 3 and b"2 of 2 users failed" in res.stderr
    assert all("error" in r for r in rows(out))
    fake_server.mode, before = "ok", fake_server.requests
    res = recgpt("mine-interests", str(src), "--out", str(out), *llm_args(fake_server, tmp_path / "cache"))
    assert res.returncode == 0, res.stderr.decode()
    assert fake_server.requests - before == 2
    assert [r["interests"][0]["interest"] for r in rows(out)] == ["tennis racket strings"] * 2
    before = fake_server.requests  # valid completions are cached: a third run asks nothing
    assert recgpt("mine-interests", str(src), "--out", str(out),
                  *llm_args(fake_server, tmp_path / "cache")).returncode == 0
    assert fake_server.requests == before


def test_case3_one_http_500_record_does_not_kill_the_stage(fake_server: FakeServer, tmp_path: Path) -> None:
    """Case 3: the record the server answers 500 for is written with its error, the others are done, exit 3
    (was: exit 1 with 1 of 3 users written, on every rerun)."""
    fake_server.fail_marker = "POISON"
    src = compressed_users(tmp_path / "c.jsonl", n=3, marker_for=2)
    out = tmp_path / "i.jsonl"
    res = recgpt("mine-interests", str(src), "--out", str(out), *llm_args(fake_server, tmp_path / "cache"))
    assert res.returncode == 3, res.stderr.decode()
    assert b"1 of 3 users failed" in res.stderr
    got = rows(out)
    assert [r["user_id"] for r in got] == ["u1", "u2", "u3"]
    assert ["error" in r for r in got] == [False, True, False]
    assert "HTTP 500" in got[1]["error"] and got[1]["interests"] == []
    tags = tmp_path / "t.jsonl"  # the next stage passes the failed user through without a call
    res = recgpt("predict-tags", str(out), "--out", str(tags), *llm_args(fake_server, tmp_path / "cache"))
    assert res.returncode == 0, res.stderr.decode()
    assert [len(r["tags"]) > 0 for r in rows(tags)] == [True, False, True]


def test_case6_concurrency_is_honoured_by_explain(fake_server: FakeServer, shop_db: Path, tmp_path: Path) -> None:
    """Case 6 (`explain --concurrency 8` ran one call at a time): explain --mode llm keeps several calls in flight."""
    fake_server.delay_s = 0.3
    interests = tmp_path / "interests.jsonl"
    interests.write_bytes(orjson.dumps({"kind": "interests", "user_id": "u1", "compressed": "x",
                                        "interests": [{"interest_id": "I1", "interest": "tennis"}]}) + b"\n")
    con = duckdb.connect(str(shop_db), read_only=True)
    items = [r[0] for r in con.execute("SELECT item_id FROM items").fetchall()]
    con.close()
    recs = tmp_path / "recs.jsonl"
    recs.write_bytes(b"".join(orjson.dumps({"kind": "recommendation", "user_id": "u1", "item_id": i, "rank": n})
                              + b"\n" for n, i in enumerate(items * 2, start=1)))
    out = tmp_path / "e.jsonl"
    res = recgpt("explain", str(recs), "--db", str(shop_db), "--interests", str(interests), "--mode", "llm",
                 "--out", str(out), "--concurrency", "4", "--no-cache", *llm_args(fake_server, tmp_path / "c")[:6])
    assert res.returncode == 0, res.stderr.decode()
    assert fake_server.max_in_flight >= 3
    assert len(rows(out)) == 2 * len(items) and rows(out)[0]["kind"] == "explanation"


def test_case6_prompts_are_bounded_and_clean() -> None:
    """Case 6: 1 MB of text, NUL/ESC and a 3,000-character search query never reach a prompt verbatim."""
    from recgpt_cli.llm.prompts import LONG_FIELD_CHARS, MAX_LINE_CHARS

    seen: list[str] = []

    def responder(messages, schema, params):  # noqa: ANN001, ANN202
        seen.append("\n".join(m["content"] for m in messages))
        return '{"interests": [{"interest": "tennis", "stage": "long-term", "reason": "bought rackets"}]}'

    query = "q" * 3000
    record = {"user_id": "u1", "date": "2025-07-01", "attributes": {"note": "a\x00b\x1b[31mc"},
              "compressed": f'2025-06-01(search) | search:"{query}"\n' + "tennis racket, " * 70_000}
    miner = InterestMiner(StructuredLLM(FakeBackend(responder)), None, max_interests=2)
    row, _ = miner(record)
    assert row["interests"][0]["interest"] == "tennis"
    prompt = seen[0]
    assert len(record["compressed"]) > 1_000_000 and len(prompt) < LONG_FIELD_CHARS + 5_000
    assert "\x00" not in prompt and "\x1b" not in prompt and "note: ab[31mc" in prompt
    assert query not in prompt and "q" * (MAX_LINE_CHARS - 40) in prompt


def test_case6_second_process_sharing_the_cache_still_caches(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 6: a second process on a busy cache caches into a side file that the next run merges (was: no cache)."""
    monkeypatch.setattr("recgpt_cli.llm.cache.LOCK_WAIT_S", 0.3)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('ready', flush=True); time.sleep(60)", str(cache_dir / "t.duckdb")],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        prompt = parse_prompt("---\ntask: t\nversion: 1\noutput: X\n---\nhello {{x}}", "t.md")
        backend = FakeBackend(lambda m, s, p: '{"ok": true}')
        llm = StructuredLLM(backend, cache=DuckDBCache(cache_dir, task="t", warn=lambda s: None))
        from pydantic import BaseModel

        class Out(BaseModel):
            ok: bool

        assert llm.generate(prompt, {"x": "1"}, Out, SamplingParams()).ok
        llm.cache.close()  # type: ignore[union-attr]
        assert len(list(cache_dir.glob("t.*.duckdb"))) == 1
    finally:
        holder.kill()
        holder.wait()
    again = StructuredLLM(backend, cache=DuckDBCache(cache_dir, task="t"))
    gen = again.generate(prompt, {"x": "1"}, Out, SamplingParams())
    assert gen.ok and gen.cached and len(backend.calls) == 1
    assert list(cache_dir.glob("t.*.duckdb")) == []


def test_case7_a_failed_run_keeps_the_previous_output(fake_server: FakeServer, tmp_path: Path) -> None:
    """Case 7: a mistyped or bad input leaves the earlier --out whole (was: truncated to 0 bytes before the input
    was read); the output may be the input file itself; a folder as --out is bad input before any LLM call."""
    src = compressed_users(tmp_path / "c.jsonl", n=2)
    out = tmp_path / "i.jsonl"
    assert recgpt("mine-interests", str(src), "--out", str(out), *llm_args(fake_server, tmp_path / "cache")
                  ).returncode == 0
    before = out.read_bytes()
    assert len(rows(out)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(src.read_bytes().splitlines(keepends=True)[0] + b"{not json\n")
    for given in (bad, tmp_path / "missing.jsonl"):
        res = recgpt("mine-interests", str(given), "--out", str(out), *llm_args(fake_server, tmp_path / "cache"))
        assert res.returncode == 2 and b"Traceback" not in res.stderr, res.stderr.decode()
        assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".part")) == []
    requests = fake_server.requests
    res = recgpt("mine-interests", str(tmp_path), "--out", str(tmp_path), *llm_args(fake_server, tmp_path / "cache"))
    assert res.returncode == 2 and b"is a directory" in res.stderr and fake_server.requests == requests
    inplace = tmp_path / "inplace.jsonl"
    inplace.write_bytes(src.read_bytes())
    res = recgpt("mine-interests", str(inplace), "--out", str(inplace), *llm_args(fake_server, tmp_path / "cache"))
    assert res.returncode == 0, res.stderr.decode()
    assert inplace.read_bytes() == before


def test_case8_a_bad_line_in_a_file_stops_before_the_first_call(fake_server: FakeServer, tmp_path: Path) -> None:
    """Case 8: the LLM stages check every line of an input file before the first call (was: a bad last line
    was found after every call before it had been paid for); a pipe is checked as it streams, --skip-bad sets
    the line aside and calls for the rest."""
    src = compressed_users(tmp_path / "c.jsonl", n=3)
    src.write_bytes(src.read_bytes() + b'{"user_id": "u9", "kind": "compressed"}\n')
    out = tmp_path / "i.jsonl"
    before = fake_server.requests
    res = recgpt("mine-interests", str(src), "--out", str(out), *llm_args(fake_server, tmp_path / "cache"))
    assert res.returncode == 2 and f"{src.name}:4:".encode() in res.stderr, res.stderr.decode()
    assert fake_server.requests == before and not out.exists()
    res = subprocess.run(["bash", "-c", f"cat {src} | {sys.executable} -m recgpt_cli mine-interests - --out {out} "
                          + " ".join(llm_args(fake_server, tmp_path / "cache"))], capture_output=True,
                         env=child_env(), timeout=120)
    assert res.returncode == 2 and b"<stdin>:4:" in res.stderr, res.stderr.decode()
    res = recgpt("mine-interests", str(src), "--out", str(out), "--skip-bad",
                 *llm_args(fake_server, tmp_path / "cache"))
    assert res.returncode == 0, res.stderr.decode()
    assert [r["user_id"] for r in rows(out)] == ["u1", "u2", "u3"]


def test_case3_run_exits_3_when_a_stage_had_failed_records(fake_server: FakeServer, tmp_path: Path) -> None:
    """Case 3: `recgpt run` goes on past a stage whose records failed, then exits 3 and names the stages (was: exit
    0, so a script read a run whose every LLM call failed as a pass)."""
    from conftest import FIXTURES

    fake_server.mode = "500"
    res = recgpt("run", "--data", str(FIXTURES), "--db", str(tmp_path / "r.duckdb"), "--out", str(tmp_path / "out"),
                 "--epochs", "1", "--llm-users", "1", "--retries", "0",
                 *llm_args(fake_server, tmp_path / "cache"), timeout=300)
    err = res.stderr.decode()
    assert res.returncode == 3, err
    assert "stages had records that failed" in err and "mine-interests" in err and "Traceback" not in err
    assert (tmp_path / "out" / "evaluate.json").exists()  # the stages after the failed one still ran
