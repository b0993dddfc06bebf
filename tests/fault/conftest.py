"""Fault injection fixtures: a fake OpenAI-compatible server on 127.0.0.1 that answers valid JSON, junk, HTTP 500
or nothing at all, and helpers to run recgpt as a real process (for Ctrl-C) or in-process (for speed)."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from recgpt_cli.importers import import_jsonl
from recgpt_cli.store import open_db

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "import" / "jsonl"


def instance_of(schema: dict[str, Any]) -> Any:
    """The smallest value valid for a (normalised, $ref-free) JSON schema: what a well-behaved server answers."""
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return instance_of(schema["anyOf"][0])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        # a reason that is a sentence of its own (issue 8's rules drop a reason that only repeats its subject)
        return {k: (_REASON[: props[k].get("maxLength", len(_REASON))] if k == "reason" else instance_of(props[k]))
                for k in schema.get("required", list(props))}
    if kind == "array":
        return [instance_of(schema.get("items", {})) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    text = "tennis racket strings"
    return text[: schema.get("maxLength", len(text))]


_REASON = "bought rackets and balls every month"


@dataclass
class FakeServer:
    """What the server does is set per test: mode `ok` | `junk` | `500` | `hang`; `fail_marker` makes requests
    whose prompt contains it answer HTTP 500 (one poisoned record)."""

    url: str = ""
    mode: str = "ok"
    fail_marker: str | None = None
    delay_s: float = 0.0
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    prompts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)


def _handler(state: FakeServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:  # noqa: N802
            body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = "\n".join(m["content"] for m in body["messages"])
            with state.lock:
                state.requests += 1
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                state.prompts.append(prompt)
            try:
                self._answer(body, prompt)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _answer(self, body: dict[str, Any], prompt: str) -> None:
            if state.mode == "hang":
                state.release.wait(60)  # until the test ends
                return
            if state.delay_s:
                time.sleep(state.delay_s)
            if state.mode == "500" or (state.fail_marker and state.fail_marker in prompt):
                self._reply(500, {"error": "internal server error"})
                return
            if state.mode == "junk":
                content = "Sure! Here are some interests: tennis, golf."
            else:
                fmt = body.get("response_format") or {}
                schema = fmt.get("json_schema", {}).get("schema") or fmt.get("schema") or {"type": "object"}
                content = orjson.dumps(instance_of(schema)).decode()
            self._reply(200, {"choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 10, "completion_tokens": 5}})

        def _reply(self, code: int, obj: dict[str, Any]) -> None:
            data = orjson.dumps(obj)
            try:
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (timeout, Ctrl-C)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """A fake OpenAI-compatible server on 127.0.0.1, new for each test."""
    state = FakeServer()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    srv.daemon_threads = True
    state.url = f"http://127.0.0.1:{srv.server_port}/v1"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        srv.shutdown()
        srv.server_close()


def compressed_users(path: Path, n: int = 3, marker_for: int | None = None) -> Path:
    """`n` compress records (u1..un); user `marker_for` mentions POISON, which the server can be told to 500 on."""
    rows = []
    for i in range(1, n + 1):
        text = f"2025-06-0{i}(purchase) | tennis racket {i}, tennis balls"
        if marker_for == i:
            text += ", POISON"
        rows.append({"kind": "compressed", "user_id": f"u{i}", "attributes": {}, "date": "2025-07-01",
                     "compressed": text, "categories": ["Tennis"]})
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def recgpt(*args: str, stdin: bytes | None = None, timeout: float = 60, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """`python -m recgpt_cli ARGS` as its own process, this checkout first on the path."""
    return subprocess.run([sys.executable, "-m", "recgpt_cli", *args], input=stdin, capture_output=True,
                          timeout=timeout, cwd=cwd, env=child_env(env))


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("RECGPT_DEBUG", None)
    env.update(extra or {})
    return env


@pytest.fixture
def shop_db(tmp_path: Path) -> Path:
    """The small JSONL fixture shop imported into a fresh database."""
    db = tmp_path / "shop.duckdb"
    con = open_db(db)
    import_jsonl(con, users=FIXTURES / "users.jsonl", items=FIXTURES / "items.jsonl",
                 behaviors=FIXTURES / "behaviors.jsonl")
    con.close()
    return db
