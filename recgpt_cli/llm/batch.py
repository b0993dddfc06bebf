"""`run_batch`: the one loop every LLM stage runs, with a rich progress bar (items/s, tokens/s) on stderr.

    from recgpt_cli.llm.batch import run_batch

    def one(record):                       # may return a Generation, a list of them, or (row, generations)
        gen = llm.generate(tmpl, variables_for(record), InterestList, params)
        return to_row(record, gen), [gen]

    batch = run_batch(records, one, desc="mine-interests", quiet=quiet, concurrency=llm.concurrency)
    for row, _gens in batch:               # results come back in input order
        writer.write(row)
    batch.stats  # BatchStats(items, prompt_tokens, completion_tokens, cached, failed, seconds)

Tokens are summed from whatever `fn` returns: a Generation, or any (nested) list/tuple holding Generations;
or, with `llm=` given, read from `llm.usage` (so `fn` may return plain rows).

A stage written as a generator (one output row per input record) can be wrapped instead of restructured:

    for row in track(mine_interests(records, llm, ...), desc="mine-interests", quiet=quiet, llm=llm):
        writer.write(row)
With `concurrency > 1` (the openai backend), `fn` runs in a thread pool with a bounded window, so results stay
in input order and memory stays bounded on long inputs; the cache is thread-safe. The pool's threads are daemons
and are never joined on an interrupt: Ctrl-C stops the stage at once even while every call hangs on a server.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recgpt_cli.llm.structured import Generation, StructuredLLM

R = TypeVar("R")
O = TypeVar("O")  # noqa: E741 - output type


@dataclass
class BatchStats:
    items: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls_cached: int = 0
    calls_failed: int = 0
    calls: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.seconds if self.seconds else 0.0

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0

    def add(self, result: Any) -> None:
        for gen in generations_in(result):
            self.calls += 1
            self.prompt_tokens += gen.prompt_tokens
            self.completion_tokens += gen.completion_tokens
            self.calls_cached += gen.cached
            self.calls_failed += not gen.ok

    def summary(self) -> str:
        return (f"{self.items} items, {self.calls} LLM calls ({self.calls_cached} cached, {self.calls_failed} failed), "
                f"{self.prompt_tokens}+{self.completion_tokens} tokens, {self.seconds:.1f}s, "
                f"{self.completion_tokens_per_s:.1f} generated tok/s")


def generations_in(result: Any) -> Iterator[Generation[Any]]:
    """Every Generation inside `result` (itself, or nested in lists/tuples)."""
    if isinstance(result, Generation):
        yield result
    elif isinstance(result, (list, tuple)):
        for part in result:
            yield from generations_in(part)


class BatchRun(Generic[O]):
    """Iterator over `fn(record)` results in input order; `stats` is filled as it goes."""

    def __init__(self, records: Iterable[R], fn: Callable[[R], O], *, desc: str, quiet: bool, total: int | None,
                 concurrency: int, console: Console | None, llm: StructuredLLM | None = None) -> None:
        self._records = records
        self._fn = fn
        self._desc = desc
        self._quiet = quiet
        self._total = total if total is not None else _len_or_none(records)
        self._concurrency = max(1, concurrency)
        self._console = console or Console(stderr=True)
        self.stats = BatchStats()
        self._llm = llm
        self._usage0 = (0, 0, 0, 0, 0)
        self._it = self._run()

    def __iter__(self) -> BatchRun[O]:
        return self

    def __next__(self) -> O:
        return next(self._it)

    def _results(self) -> Iterator[O]:
        if self._concurrency == 1:
            for record in self._records:
                yield self._fn(record)
            return
        # A bounded window of futures: input order is kept and a huge stdin is never read all at once.
        pool = DaemonPool(self._concurrency)
        finished, grace = False, 0.0
        try:
            window: deque[Future[O]] = deque()
            for record in self._records:
                window.append(pool.submit(self._fn, record))
                if len(window) >= 2 * self._concurrency:
                    yield _result(window.popleft())
            while window:
                yield _result(window.popleft())
            finished = True
        except Exception:
            # An error (not Ctrl-C): give in-flight calls a moment to end, so no worker is still inside native code
            # (the cache's DuckDB) when the interpreter exits — that aborts the process instead of exit 1.
            grace = ERROR_GRACE_S
            raise
        finally:
            pool.close(wait=True if finished else grace)  # idle workers are joined; on Ctrl-C nobody waits

    def _run(self) -> Iterator[O]:
        t0 = time.perf_counter()
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            console=self._console, disable=self._quiet, transient=False,
        )
        with progress:
            task = progress.add_task(self._desc, total=self._total, rate="")
            if self._llm is not None:
                self._usage0 = self._usage_now()
            for result in self._results():
                self.stats.items += 1
                self._count(result)
                self.stats.seconds = time.perf_counter() - t0
                s = self.stats
                progress.update(task, advance=1, rate=f"{s.items / s.seconds:.2f} items/s · "
                                f"{s.completion_tokens_per_s:.1f} tok/s · {s.calls_cached} cached")
                yield result
        self.stats.seconds = time.perf_counter() - t0


    def _usage_now(self) -> tuple[int, int, int, int, int]:
        u = self._llm.usage  # type: ignore[union-attr]
        return (u.generations, u.prompt_tokens, u.completion_tokens, u.cache_hits, u.failed)

    def _count(self, result: Any) -> None:
        if self._llm is None:
            self.stats.add(result)
            return
        now = self._usage_now()
        s = self.stats
        s.calls, s.prompt_tokens, s.completion_tokens, s.calls_cached, s.calls_failed = (
            a - b for a, b in zip(now, self._usage0, strict=True))


def _result(fut: Future[O]) -> O:
    """fut.result(), waking every 0.2 s: Ctrl-C is delivered to whichever thread the kernel picks (a worker inside
    a socket read, a DuckDB thread); a main thread blocked in an untimed wait would not see it until a call
    returns, and with a hung server none does."""
    while not fut.done():  # not result(timeout=): a call that itself raised TimeoutError would spin here
        wait([fut], timeout=0.2)
    return fut.result()


ERROR_GRACE_S = 5.0  # after an error, how long in-flight calls may take to finish before the stage exits


class DaemonPool:
    """`concurrency` daemon worker threads. Unlike ThreadPoolExecutor, nothing joins them: on Ctrl-C (or any
    error) `close` cancels the queued work and returns, and the interpreter exits without waiting for calls
    still hanging on a server (finished calls are already in the cache)."""

    def __init__(self, workers: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[Any], Any], Any] | None] = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, daemon=True, name=f"recgpt-llm-{i}")
                         for i in range(max(1, workers))]
        for t in self._workers:
            t.start()

    def submit(self, fn: Callable[[Any], O], arg: Any) -> Future[O]:
        fut: Future[O] = Future()
        self._jobs.put((fut, fn, arg))
        return fut

    def close(self, wait: bool | float = False) -> None:
        """Cancel queued work and stop the workers; `wait` True joins them, a number joins for at most that many
        seconds in all, False returns at once."""
        while True:  # cancel what has not started
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._workers:
            self._jobs.put(None)
        if wait is True:
            for t in self._workers:
                t.join()
        elif wait:
            deadline = time.monotonic() + float(wait)
            for t in self._workers:
                t.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, arg = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(arg))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
                fut.set_exception(exc)


def _len_or_none(records: Iterable[Any]) -> int | None:
    try:
        return len(records)  # type: ignore[arg-type]
    except TypeError:
        return None


def run_batch(
    records: Iterable[R],
    fn: Callable[[R], O],
    *,
    desc: str,
    quiet: bool = False,
    total: int | None = None,
    concurrency: int = 1,
    console: Console | None = None,
    llm: StructuredLLM | None = None,
) -> BatchRun[O]:
    """Apply `fn` to each record, yielding results in order, with progress on stderr unless `quiet` (STYLE §9)."""
    return BatchRun(records, fn, desc=desc, quiet=quiet, total=total, concurrency=concurrency, console=console,
                    llm=llm)


def track(
    rows: Iterable[O],
    *,
    desc: str,
    quiet: bool = False,
    total: int | None = None,
    llm: StructuredLLM | None = None,
    console: Console | None = None,
) -> BatchRun[O]:
    """Progress over an existing row iterator (a stage generator); tokens come from `llm.usage` when given."""
    return BatchRun(rows, lambda row: row, desc=desc, quiet=quiet, total=total, concurrency=1, console=console,
                    llm=llm)
