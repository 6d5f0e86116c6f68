"""A loopback OpenAI-compatible server that injects faults, for tests only.

Answers are a pure function of the request (`expected_answer`), so a test can
check every result without a model. Faults are chosen per chat request by its
1-based arrival count (or by a function of count and body), and the server logs
each successful completion so tests can prove nothing was lost or duplicated.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Fault names: "429" (Retry-After: 0), "429:<s>" (Retry-After: s), "500", "502",
# "503", "302" (a redirect), "400", "400ctx" (prompt longer than the context), "401",
# "404", "slow" (answers after `slow_seconds`), "bad_json",
# "empty" (content "" with finish_reason "stop"), "length_empty" (content "",
# finish_reason "length": a legitimate completion), "close" (drops the connection).
FaultFn = Callable[[int, dict[str, Any]], str | None]


def expected_answer(messages: list[dict[str, str]]) -> str:
    last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    n = int(hashlib.sha256(last.encode()).hexdigest()[:6], 16) % 1000
    return f"{last}\nThe answer is {n}."


class FaultServer:
    def __init__(
        self,
        faults: dict[int, str] | FaultFn | None = None,
        *,
        models: tuple[str, ...] = ("test-model",),
        api_key: str | None = None,
        models_404: bool = False,
        latency: float = 0.0,
        slow_seconds: float = 1.0,
        max_lifetime: float = 120.0,
    ) -> None:
        self.faults = faults
        self.models = models
        self.api_key = api_key
        self.models_404 = models_404
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.max_lifetime = max_lifetime
        self.lock = threading.Lock()
        self.chat_calls = 0
        self.model_calls = 0
        self.successes: list[str] = []  # last user message of each completion served
        self.auth_headers: list[str | None] = []
        self.errors: list[str] = []  # exceptions in handler threads, for a failing test's message
        self._httpd: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def fault_for(self, count: int, body: dict[str, Any]) -> str | None:
        if self.faults is None:
            return None
        if callable(self.faults):
            return self.faults(count, body)
        return self.faults.get(count)

    def start(self) -> FaultServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.errors = self.errors
        serve = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        # Bounded: a test that forgets to stop the server does not leave it running.
        watchdog = threading.Timer(self.max_lifetime, self.stop)
        watchdog.daemon = True
        watchdog.start()
        self._threads = [serve]
        self._watchdog = watchdog
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    errors: list[str]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # kept, not printed: a client hanging up on a slow answer is expected; a test that
        # fails shows them
        import traceback

        self.errors.append(traceback.format_exc(limit=3))


class _Handler(BaseHTTPRequestHandler):
    owner: FaultServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _authorized(self) -> bool:
        srv = self.owner
        auth = self.headers.get("Authorization")
        with srv.lock:
            srv.auth_headers.append(auth)
        if srv.api_key is not None and auth != f"Bearer {srv.api_key}":
            self._send(401, {"error": {"message": "Incorrect API key provided"}})
            return False
        return True

    def do_GET(self) -> None:
        srv = self.owner
        if self.path != "/v1/models":
            self._send(404, {"error": {"message": "not found"}})
            return
        with srv.lock:
            srv.model_calls += 1
        if not self._authorized():
            return
        if srv.models_404:
            self._send(404, {"error": {"message": "no such route"}})
            return
        self._send(200, {"object": "list", "data": [{"id": m} for m in srv.models]})

    def do_POST(self) -> None:
        srv = self.owner
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found"}})
            return
        with srv.lock:
            srv.chat_calls += 1
            count = srv.chat_calls
        if not self._authorized():
            return
        if body.get("model") not in srv.models:
            msg = f"The model `{body.get('model')}` does not exist."
            self._send(404, {"object": "error", "message": msg, "code": 404})
            return
        fault = srv.fault_for(count, body)
        if srv.latency:
            time.sleep(srv.latency)
        if fault is not None and self._inject(fault):
            return
        text = expected_answer(body["messages"])
        finish = "stop"
        if fault == "length_empty":
            text, finish = "", "length"
        else:
            with srv.lock:
                srv.successes.append(body["messages"][-1]["content"])
        self._send(
            200,
            {
                "id": f"chatcmpl-{count}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": len(json.dumps(body["messages"])) // 4,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": 0,
                },
            },
        )

    def _inject(self, fault: str) -> bool:
        """Send the fault's answer; False when the fault still ends in a normal answer."""
        code, _, arg = fault.partition(":")
        if code == "429":
            self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": arg or "0"})
        elif code == "302":
            self._send(302, {"error": {"message": "moved"}}, {"Location": "https://elsewhere/v1/chat/completions"})
        elif code in ("500", "502", "503"):
            self._send(int(code), {"error": {"message": f"injected {code}"}})
        elif code == "400":
            self._send(400, {"error": {"message": "Invalid value for 'top_p': must be <= 1"}})
        elif code == "400ctx":  # vLLM's wording
            self._send(400, {"error": {"message": "This model's maximum context length is 32768 tokens. "
                                                  "However, you requested 40000 tokens."}})
        elif code == "401":
            self._send(401, {"error": {"message": "Incorrect API key provided"}})
        elif code == "404":
            self._send(404, {"error": {"message": "The model does not exist."}})
        elif code == "slow":
            time.sleep(self.owner.slow_seconds)
            try:
                self._send(200, {"choices": [{"message": {"content": "too late"}}]})
            except OSError:
                pass
        elif code == "bad_json":
            self._send(200, b'{"choices": [{"message": {"content": "trunc')
        elif code == "empty":
            self._send(
                200,
                {"choices": [{"message": {"role": "assistant", "content": ""},
                              "finish_reason": "stop"}]},
            )
        elif code == "close":
            self.close_connection = True
            self.connection.shutdown(2)
        elif code == "length_empty":
            return False
        else:
            raise ValueError(f"unknown fault {fault!r}")
        return True
