"""OpenAI-compatible backend (`/v1/chat/completions`): vLLM, llama-server, ollama, llama_cpp.server (issue 3).

The scale-out path: stdlib HTTP only (no `openai` package), JSON constrained with `response_format`
(`json_schema`, falling back to `json_object` + schema for servers that only know that form), bounded
concurrency (`concurrency` requests in flight; `complete_many` or `run_batch(concurrency=llm.concurrency)`),
a timeout per HTTP answer (`--timeout`), and bounded retries with backoff (`--retries`) on timeouts, 5xx and 429.
A call that still fails is a BackendError: that record is written with its `error` and the stage goes on. Only
a server that cannot be reached (connection refused, unknown host), or that lets many calls in a row time out,
stops the stage. The API key comes from $RECGPT_API_KEY or
$OPENAI_API_KEY. The cache key's `model_id` is `<base-url>#<model>` (the weights behind a URL cannot be hashed).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from recgpt_cli.errors import BadInput, RecgptError
from recgpt_cli.llm.base import BackendError, Completion, Message, SamplingParams

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 8.0


class OpenAIBackend:
    """Chat completions over HTTP. Thread-safe: each call opens its own connection."""

    name = "openai"

    def __init__(self, base_url: str, *, model: str | None = None, concurrency: int = 4, timeout_s: float = 60.0,
                 retries: int = 2, api_key: str | None = None) -> None:
        if not base_url:
            raise BadInput("--backend openai needs --base-url URL")
        url = base_url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"--base-url {base_url}: expected an http:// or https:// URL",
                           "e.g. --base-url http://localhost:8000/v1")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.model = model or "default"
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.retries = retries
        self.api_key = api_key or os.environ.get("RECGPT_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        self._schema_form = "json_schema"  # switched to "json_object" once if the server rejects json_schema
        # Calls in a row that timed out on every try: past `2 * concurrency` the server is hung, stop the stage.
        self._timed_out_in_row = 0
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"{self.base_url}#{self.model}"

    def complete(self, messages: list[Message], schema: dict[str, Any] | None, params: SamplingParams) -> Completion:
        body: dict[str, Any] = {
            "model": self.model, "messages": messages, "temperature": params.temperature, "top_p": params.top_p,
            "max_tokens": params.max_tokens, "seed": params.seed,
        }
        t0 = time.perf_counter()
        if schema is None:
            out = self._post(body)
        elif self._schema_form == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": schema, "strict": True}}
            try:
                out = self._post(body)
            except BackendError as exc:
                if "response_format" not in str(exc) and "json_schema" not in str(exc):
                    raise
                self._schema_form = "json_object"
                return self.complete(messages, schema, params)
        else:
            body["response_format"] = {"type": "json_object", "schema": schema}
            out = self._post(body)
        try:
            choice = out["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise BackendError(f"{self.base_url}: unexpected response shape: {str(out)[:200]}") from exc
        usage = out.get("usage") or {}
        return Completion(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0),
                          latency_s=time.perf_counter() - t0, finish_reason=choice.get("finish_reason") or "stop")

    def complete_many(self, requests: Sequence[tuple[list[Message], dict[str, Any] | None, SamplingParams]]
                      ) -> list[Completion]:
        """Several calls with at most `concurrency` in flight; results in request order."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda r: self.complete(*r), requests))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = orjson.dumps(body)
        last = ""
        timed_out = unreachable = False
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1)))
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    out = orjson.loads(resp.read())
                with self._lock:
                    self._timed_out_in_row = 0
                if not isinstance(out, dict):
                    raise BackendError(f"{url}: response is not a JSON object: {str(out)[:200]}")
                return out
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:500].decode("utf-8", "replace")
                # Some servers (llama_cpp.server) answer an unknown response_format with a 500: not transient.
                if exc.code in RETRY_STATUS and "response_format" not in detail:
                    last, timed_out, unreachable = f"HTTP {exc.code}: {detail}", False, False
                    continue
                # 4xx: the request itself is wrong (too long, bad schema) — retrying cannot help.
                raise BackendError(f"{url}: HTTP {exc.code}: {detail}") from None
            except TimeoutError as exc:
                last, timed_out, unreachable = f"no answer within --timeout {self.timeout_s:g}s ({exc})", True, False
            except urllib.error.URLError as exc:
                reason = exc.reason
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    last, timed_out, unreachable = f"no answer within --timeout {self.timeout_s:g}s", True, False
                    continue
                last, timed_out, unreachable = f"{type(reason).__name__}: {reason}", False, True
            except (ConnectionError, OSError) as exc:
                last, timed_out, unreachable = f"{type(exc).__name__}: {exc}", False, False
            except orjson.JSONDecodeError as exc:
                last, timed_out, unreachable = f"response is not JSON: {exc}", False, False
        if unreachable:
            # Refused, unknown host: nothing is listening there, every record would fail the same way.
            raise RecgptError(f"{url}: no answer after {self.retries + 1} tries ({last})",
                              "is the server running? check --base-url")
        if timed_out:
            with self._lock:
                self._timed_out_in_row += 1
                hung = self._timed_out_in_row >= 2 * self.concurrency
            if hung:
                raise RecgptError(f"{url}: {self._timed_out_in_row} calls in a row got no answer within --timeout "
                                  f"{self.timeout_s:g}s", "is the server hung? finished records are cached")
        # This record's call failed every try: it is written with its error and the stage goes on.
        raise BackendError(f"{url}: no valid answer after {self.retries + 1} tries ({last})")
