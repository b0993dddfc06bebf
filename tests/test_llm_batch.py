"""run_batch / track: order, token sums, concurrency, stats from llm.usage."""

from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import BaseModel

from recgpt_cli.llm.base import FakeBackend
from recgpt_cli.llm.batch import generations_in, run_batch, track
from recgpt_cli.llm.prompts import parse_prompt
from recgpt_cli.llm.structured import Generation, StructuredLLM

PROMPT = parse_prompt("---\ntask: t\nversion: 1\noutput: Out\n---\nitem {{i}}\n", "t.md")


class Out(BaseModel):
    i: int


def test_sums_tokens_from_generations_in_results() -> None:
    def fn(i: int) -> tuple[str, list[Generation[Any]]]:
        gen: Generation[Any] = Generation(None, prompt_tokens=10, completion_tokens=i, cached=i == 0)
        return f"row{i}", [gen]

    batch = run_batch(range(3), fn, desc="t", quiet=True)
    assert [row for row, _ in batch] == ["row0", "row1", "row2"]
    s = batch.stats
    assert (s.items, s.calls, s.prompt_tokens, s.completion_tokens) == (3, 3, 30, 3)
    assert (s.calls_cached, s.calls_failed) == (1, 3)
    assert len(list(generations_in(("a", [Generation(None), (Generation(None),)])))) == 2


def test_concurrency_keeps_input_order_and_overlaps_calls() -> None:
    active, peak = [0], [0]
    lock = threading.Lock()

    def respond(messages: Any, schema: Any, params: Any) -> str:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02 * (3 - int(messages[-1]["content"].split()[1]) % 3))  # later items finish first
        with lock:
            active[0] -= 1
        return '{"i": ' + messages[-1]["content"].split()[1] + "}"

    llm = StructuredLLM(FakeBackend(respond))
    batch = run_batch(range(12), lambda i: llm.generate(PROMPT, {"i": i}, Out), desc="t", quiet=True, concurrency=4)
    assert [g.value.i for g in batch] == list(range(12))  # type: ignore[union-attr]
    assert 1 < peak[0] <= 4


def test_track_reads_tokens_from_llm_usage() -> None:
    llm = StructuredLLM(FakeBackend(lambda m, s, p: '{"i": 1}'))
    llm.generate(PROMPT, {"i": 0}, Out)  # before the batch: not counted
    rows = (llm.generate(PROMPT, {"i": i}, Out).value for i in range(3))
    t = track(rows, desc="t", quiet=True, llm=llm)
    assert len(list(t)) == 3
    assert (t.stats.items, t.stats.calls, t.stats.completion_tokens) == (3, 3, 6)
    assert "3 items, 3 LLM calls (0 cached, 0 failed)" in t.stats.summary()


def test_ctrl_c_delivered_to_a_worker_thread_still_interrupts_the_wait() -> None:
    """The kernel may hand SIGINT to any thread; sent straight to a worker blocked in a hung call, the main
    thread's wait must still raise KeyboardInterrupt (an untimed Future.result() waited for the call forever)."""
    import signal

    import pytest

    release, started = threading.Event(), threading.Event()
    workers: list[int] = []

    def hang(i: int) -> int:
        workers.append(threading.get_ident())
        started.set()
        release.wait(30)  # a server that never answers
        return i

    def kill_worker() -> None:
        started.wait(10)
        time.sleep(0.2)  # the main thread is inside the wait by now
        signal.pthread_kill(workers[0], signal.SIGINT)

    # Python's own Ctrl-C handler, whatever the runner inherited (a background launch ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=kill_worker, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            list(run_batch(range(2), hang, desc="t", quiet=True, concurrency=2))
        assert time.monotonic() - t0 < 5
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)


def test_a_call_that_raises_timeouterror_surfaces_instead_of_being_waited_on() -> None:
    """A socket timeout is a TimeoutError, the same class a timed Future.result() raises while waiting: the wait
    must tell the two apart (re-raise the call's error at once, not retry it forever)."""
    import pytest

    def times_out(i: int) -> int:
        raise TimeoutError(f"call {i} timed out")

    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="call 0"):
        list(run_batch(range(2), times_out, desc="t", quiet=True, concurrency=2))
    assert time.monotonic() - t0 < 5
