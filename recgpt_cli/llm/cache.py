"""Content-addressed LLM cache + call log in DuckDB: reruns are nearly free, killed runs resume (issue 3).

One DuckDB file per task, `<cache-dir>/<task>.duckdb`, never the main `--db`: pipe stages are concurrent
processes and DuckDB allows one writer process per file. Tables:

- `completions(key PRIMARY KEY, text, prompt_tokens, completion_tokens, latency_s, finish_reason, created)`
- `llm_calls(ts, task, prompt_version, backend, model_id, key, messages JSON, output, prompt_tokens,
  completion_tokens, latency_s, finish_reason, cached)` — one row per call, hit or miss, for auditing;
  a hit stores no messages/output (join `completions` on `key`); a rejected answer (invalid, truncated) or a
  failed call is logged with finish_reason `rejected: <why>` and never enters `completions`.

Each `put` commits before returning, so a stage killed mid-batch keeps every finished call and a rerun asks the
backend only for the rest. DuckDB lets one process write a file: a second process running the same task at the
same time caches into a side file `<task>.<pid>.duckdb` instead (it reads only its own calls), and the next
process that opens the shared file merges finished side files into it. Audit with e.g.
`duckdb .recgpt-cache/interest_mining.duckdb "select ts, cached, latency_s, output from llm_calls"`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import orjson

from recgpt_cli.io import pid_alive
from recgpt_cli.llm.base import Backend, Completion, Message, SamplingParams
from recgpt_cli.llm.prompts import Prompt

_DDL = """
CREATE TABLE IF NOT EXISTS completions(
    key VARCHAR PRIMARY KEY, text VARCHAR, prompt_tokens INTEGER, completion_tokens INTEGER,
    latency_s DOUBLE, finish_reason VARCHAR, created TIMESTAMP);
CREATE TABLE IF NOT EXISTS llm_calls(
    ts TIMESTAMP, task VARCHAR, prompt_version VARCHAR, backend VARCHAR, model_id VARCHAR, key VARCHAR,
    messages JSON, output VARCHAR, prompt_tokens INTEGER, completion_tokens INTEGER, latency_s DOUBLE,
    finish_reason VARCHAR, cached BOOLEAN);
"""

# How long to wait for another process holding the same task's cache file before using a side file.
LOCK_WAIT_S = 5.0


def cache_key(backend: Backend, prompt: Prompt, messages: list[Message], schema: dict[str, Any] | None,
              params: SamplingParams) -> str:
    """sha256 over everything that can change a completion: backend, weights hash, prompt task+version,
    rendered messages, output schema, sampling params."""
    payload = {
        "backend": backend.name,
        "model_id": backend.model_id,
        "task": prompt.task,
        "prompt_version": prompt.version,
        "messages": messages,
        "schema": schema,
        "params": [params.temperature, params.top_p, params.max_tokens, params.seed],
    }
    # Not OPT_SORT_KEYS: property order in the schema changes the output, so it must change the key too.
    return hashlib.sha256(orjson.dumps(payload)).hexdigest()


class DuckDBCache:
    """CompletionCache over per-task DuckDB files. Thread-safe (one lock per process)."""

    def __init__(self, cache_dir: Path | str, *, task: str | None = None, warn: Any = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.task = task
        self._cons: dict[str, duckdb.DuckDBPyConnection | None] = {}
        self._lock = threading.RLock()
        self._warn = warn
        self._ident = ("", "")  # (backend name, model_id) of the last key: written into log rows

    # -- CompletionCache protocol ------------------------------------------------------------------
    def key(self, backend: Backend, prompt: Prompt, messages: list[Message], schema: dict[str, Any] | None,
            params: SamplingParams) -> str:
        self._ident = (backend.name, backend.model_id)
        return cache_key(backend, prompt, messages, schema, params)

    def get(self, key: str, *, prompt: Prompt | None = None, messages: list[Message] | None = None
            ) -> Completion | None:
        with self._lock:
            con = self._con(prompt.task if prompt else None)
            if con is None:
                return None
            row = con.execute("SELECT text, prompt_tokens, completion_tokens, latency_s, finish_reason "
                              "FROM completions WHERE key = ?", [key]).fetchone()
            if row is None:
                return None
            hit = Completion(text=row[0], prompt_tokens=row[1], completion_tokens=row[2], latency_s=row[3],
                             finish_reason=row[4])
            if prompt is not None:
                self._log(con, key, prompt, None, hit, cached=True)
            return hit

    def put(self, key: str, completion: Completion, *, prompt: Prompt, messages: list[Message]) -> None:
        with self._lock:
            con = self._con(prompt.task)
            if con is None:
                return
            con.execute("BEGIN TRANSACTION")
            try:
                # OR REPLACE: a stored completion that stopped validating is overwritten by the new valid one.
                con.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [key, completion.text, completion.prompt_tokens, completion.completion_tokens,
                             completion.latency_s, completion.finish_reason, _now()])
                self._log(con, key, prompt, messages, completion, cached=False)
                con.execute("COMMIT")  # durable per call: a kill after this loses nothing
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def log_failure(self, key: str, completion: Completion | None, *, prompt: Prompt, messages: list[Message],
                    error: str) -> None:
        """Log a call whose answer was rejected (or that got none) without caching it: finish_reason
        `rejected: <why>`, so a rerun asks again and the audit still sees every call."""
        with self._lock:
            con = self._con(prompt.task)
            if con is None:
                return
            c = completion or Completion(text="", prompt_tokens=0, completion_tokens=0, latency_s=0.0)
            self._log(con, key, prompt, messages, c, cached=False, finish_reason=f"rejected: {error}"[:300])

    # -- helpers -----------------------------------------------------------------------------------
    def path_for(self, task: str | None) -> Path:
        name = self.task or task or "llm"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.cache_dir / f"{safe}.duckdb"

    def close(self) -> None:
        with self._lock:
            for con in self._cons.values():
                if con is not None:
                    con.close()
            self._cons.clear()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _con(self, task: str | None) -> duckdb.DuckDBPyConnection | None:
        path = self.path_for(task)
        key = str(path)
        if key not in self._cons:
            self._cons[key] = self._open(path)
        return self._cons[key]

    def _open(self, path: Path) -> duckdb.DuckDBPyConnection | None:
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                con = duckdb.connect(str(path))
                con.execute(_DDL)
                _merge_side_files(con, path)
                return con
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    self._say(f"LLM cache {path} unavailable ({str(exc).splitlines()[0]}); running without cache")
                    return None
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        # Another process (same task, run twice at once) holds the file: cache into our own side file.
        side = path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")
        self._say(f"LLM cache {path} is in use by another process; this run caches into {side.name} "
                  "(merged into the shared cache by the next run)")
        try:
            con = duckdb.connect(str(side))
            con.execute(_DDL)
            return con
        except duckdb.Error as exc:
            self._say(f"LLM cache {side} unavailable ({str(exc).splitlines()[0]}); running without cache")
            return None

    def _say(self, text: str) -> None:
        if self._warn is not None:
            self._warn(text)
        else:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)

    def _log(self, con: duckdb.DuckDBPyConnection, key: str, prompt: Prompt, messages: list[Message] | None,
             c: Completion, *, cached: bool, finish_reason: str | None = None) -> None:
        backend, model_id = self._ident
        con.execute(
            "INSERT INTO llm_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_now(), prompt.task, prompt.version, backend, model_id, key,
             orjson.dumps(messages).decode() if messages is not None else None,
             None if cached else c.text, 0 if cached else c.prompt_tokens, 0 if cached else c.completion_tokens,
             0.0 if cached else c.latency_s, finish_reason or c.finish_reason, cached],
        )


def _now() -> datetime:
    # Audit timestamps only; never feeds a stage's output (determinism).
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _merge_side_files(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Fold `<task>.<pid>.duckdb` side files of processes that have ended into the shared cache, then delete them."""
    for side in sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")):
        pid = side.name[len(path.stem) + 1 : -len(path.suffix)]
        if not pid.isdigit() or (int(pid) != os.getpid() and pid_alive(int(pid))):
            continue  # still running: its side file is in use
        try:
            con.execute(f"ATTACH '{side.as_posix().replace(chr(39), chr(39) * 2)}' AS side (READ_ONLY)")
        except duckdb.Error:
            continue
        try:
            con.execute("INSERT OR IGNORE INTO completions SELECT * FROM side.completions")
            con.execute("INSERT INTO llm_calls SELECT * FROM side.llm_calls")
        finally:
            con.execute("DETACH side")
        side.unlink(missing_ok=True)
        side.with_name(side.name + ".wal").unlink(missing_ok=True)

