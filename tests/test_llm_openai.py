"""OpenAI-compatible backend against a real local server (`python -m llama_cpp.server`, loopback only)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, Field

from recgpt_cli.errors import RecgptError
from recgpt_cli.llm.base import BackendError, SamplingParams
from recgpt_cli.llm.embedded import embedded_model_path
from recgpt_cli.llm.openai_backend import OpenAIBackend
from recgpt_cli.llm.prompts import parse_prompt
from recgpt_cli.llm.structured import StructuredLLM, output_schema

PROMPT = parse_prompt("---\ntask: t\nversion: 1\noutput: Colour\n---\nName a colour for {{thing}} as JSON.\n", "t.md")


class Colour(BaseModel):
    colour: str = Field(max_length=12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("srv") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "1024", "--n_threads", "1", "--verbose", "false"],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 45
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server did not start:\n{Path(log).read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.model
def test_real_server_schema_valid_json_with_concurrency(server: str) -> None:
    backend = OpenAIBackend(server, model="smollm2", concurrency=2, timeout_s=60)
    llm = StructuredLLM(backend)
    gen = llm.generate(PROMPT, {"thing": "the sky"}, Colour, SamplingParams(max_tokens=24))
    assert gen.ok, gen.error
    assert gen.completion_tokens > 0 and gen.prompt_tokens > 0
    reqs = [(PROMPT.render({"thing": t}), output_schema(Colour), SamplingParams(max_tokens=24))
            for t in ("grass", "snow")]
    outs = backend.complete_many(reqs)
    assert [Colour.model_validate_json(o.text).colour != "" for o in outs] == [True] * 2


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Fails with 503 twice, then answers; rejects json_schema so the json_object fallback is exercised."""

    hits: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Flaky.hits.append({"auth": self.headers.get("Authorization"), **body})
        if len(_Flaky.hits) <= 2:
            self.send_response(503)
            self.end_headers()
            return
        if body["response_format"]["type"] == "json_schema":
            self._reply(400, {"error": "unsupported response_format json_schema"})
            return
        if body["messages"][-1]["content"] == "too long":
            self._reply(400, {"error": "context length exceeded"})
            return
        self._reply(200, {"choices": [{"message": {"content": '{"colour": "red"}'}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 7, "completion_tokens": 5}})

    def _reply(self, code: int, obj: dict[str, Any]) -> None:
        data = orjson.dumps(obj)
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_retries_5xx_falls_back_to_json_object_and_sends_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECGPT_API_KEY", "k123")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend(f"http://127.0.0.1:{srv.server_port}", model="m", retries=3)
        monkeypatch.setattr("recgpt_cli.llm.openai_backend.time.sleep", lambda s: None)
        gen = StructuredLLM(backend).generate(PROMPT, {"thing": "x"}, Colour)
        assert gen.value == Colour(colour="red") and (gen.prompt_tokens, gen.completion_tokens) == (7, 5)
        assert [h["response_format"]["type"] for h in _Flaky.hits] == ["json_schema"] * 3 + ["json_object"]
        assert _Flaky.hits[-1]["auth"] == "Bearer k123" and _Flaky.hits[-1]["model"] == "m"
        bad = parse_prompt("---\ntask: t\nversion: 1\noutput: C\n---\ntoo long", "b.md")
        failed = StructuredLLM(backend).generate(bad, {}, Colour)
        assert failed.value is None and "HTTP 400" in (failed.error or "")
    finally:
        srv.shutdown()


def test_server_down_stops_the_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("recgpt_cli.llm.openai_backend.time.sleep", lambda s: None)
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", retries=1, timeout_s=2)
    with pytest.raises(RecgptError, match="no answer after 2 tries"):
        backend.complete([{"role": "user", "content": "hi"}], None, SamplingParams())
    assert not isinstance(RecgptError("x"), BackendError)
