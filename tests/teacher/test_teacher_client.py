"""The OpenAI-compatible teacher client and the completion cache, against a loopback
server that injects faults (tests/fakes/fault_server.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fakes.fault_server import FaultServer, expected_answer

from undo.config import OpenAIConfig, TeacherConfig
from undo.errors import UserError
from undo.teacher.base import BACKENDS, Completion, Request, SamplingParams, TeacherError, Usage
from undo.teacher.cache import CachedTeacher, CompletionCache, cache_key, default_cache_dir
from undo.teacher.openai_backend import OpenAIBackend

SECRET = "sk-test-5ecret-value-never-shown"


def make_backend(url: str | list[str], **cfg: object) -> OpenAIBackend:
    http: dict[str, object] = dict(base_url=url, concurrency=4, timeout=2.0, max_retries=3)
    http.update({k: v for k, v in cfg.items() if k in OpenAIConfig.model_fields})
    rest = {k: v for k, v in cfg.items() if k not in OpenAIConfig.model_fields}
    teacher = TeacherConfig(**{"backend": "openai", "model": "test-model", **rest}, openai=OpenAIConfig(**http))
    return OpenAIBackend(teacher, backoff_base=0.001, backoff_max=0.01, retry_after_max=2.0)


def make_requests(n: int, prefix: str = "question") -> list[Request]:
    sp = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=64)
    return [Request([{"role": "user", "content": f"{prefix} {i}"}], sp) for i in range(n)]


def assert_correct(requests: list[Request], results: list[Completion]) -> None:
    assert len(results) == len(requests)
    for req, res in zip(requests, results, strict=True):
        assert res.text == expected_answer(req.messages)


@pytest.fixture
def server():
    with FaultServer() as srv:
        yield srv


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused at once
    return f"http://127.0.0.1:{port}/v1"


# --- the client -------------------------------------------------------------


def test_registered_as_openai():
    assert BACKENDS["openai"] is OpenAIBackend


def test_job_survives_every_fault_in_order_nothing_lost_or_duplicated():
    faults = {2: "429", 4: "500", 5: "502", 7: "503", 9: "bad_json", 11: "empty", 13: "slow",
              15: "close"}
    with FaultServer(faults, slow_seconds=1.0) as srv:
        # Faults go by arrival order, and which request a given arrival belongs to depends
        # on thread scheduling: on a busy machine one request's retries can meet several
        # faults in a row. A retry budget as large as the fault count cannot run out, so the
        # outcome (every fault retried once, nothing lost) does not depend on scheduling.
        backend = make_backend(srv.url, timeout=0.4, concurrency=4, max_retries=len(faults))
        reqs = make_requests(24)
        usage = Usage()
        done: list[int] = []
        seen: list[int] = []
        try:
            results = backend.complete(
                reqs, usage, progress=done.append, on_result=lambda i, c: seen.append(i)
            )
        except Exception as e:
            raise AssertionError(f"{e}\nserver-side errors:\n" + "\n".join(srv.errors)) from e
    assert_correct(reqs, results)
    assert usage.retry_reasons == {
        "429": 1, "500": 1, "502": 1, "503": 1, "bad_json": 1, "empty": 1, "timeout": 1,
        "connection": 1,
    }
    assert usage.retries == 8
    assert usage.requests == 24 and usage.failures == 0
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert sum(done) == 24 and sorted(seen) == list(range(24))
    # Server-side truth: each question was answered exactly once.
    assert Counter(srv.successes) == Counter(r.messages[-1]["content"] for r in reqs)


def test_a_prompt_answered_empty_every_time_is_recorded_not_fatal():
    reqs = make_requests(6)
    target = reqs[3].messages[-1]["content"]
    with FaultServer(lambda n, body: "empty" if body["messages"][-1]["content"] == target else None) as srv:
        usage = Usage()
        results = make_backend(srv.url, concurrency=2).complete(reqs, usage)
    assert results[3].text == "" and results[3].finish_reason == "empty"
    assert_correct(reqs[:3] + reqs[4:], results[:3] + results[4:])
    assert usage.retry_reasons == {"empty": 1} and usage.failures == 0  # one more try, then recorded


def test_a_redirect_is_a_failure_naming_where_it_points():
    with FaultServer({1: "302"}) as srv:
        with pytest.raises(UserError, match="redirects to https://elsewhere/v1/chat/completions"):
            make_backend(srv.url).complete(make_requests(1), Usage())
        assert srv.chat_calls == 1  # not retried, not followed


def test_empty_content_cut_by_length_is_a_completion_not_a_retry():
    with FaultServer({1: "length_empty"}) as srv:
        usage = Usage()
        [c] = make_backend(srv.url).complete(make_requests(1), usage)
    assert c.text == "" and c.finish_reason == "length"
    assert usage.retries == 0


def test_retry_after_is_honoured():
    with FaultServer({1: "429:1"}) as srv:
        usage = Usage()
        t0 = time.monotonic()
        make_backend(srv.url).complete(make_requests(1), usage)
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.95
    assert usage.retry_reasons == {"429": 1}


def test_repeated_calls_and_a_running_event_loop():
    with FaultServer() as srv:
        backend = make_backend(srv.url)
        for _ in range(2):  # each call runs its own event loop
            reqs = make_requests(5)
            assert_correct(reqs, backend.complete(reqs, Usage()))

        async def from_async_code() -> list[Completion]:
            return backend.complete(make_requests(3), Usage())

        assert_correct(make_requests(3), asyncio.run(from_async_code()))


def test_two_endpoints_share_the_load():
    with FaultServer(latency=0.02) as a, FaultServer(latency=0.02) as b:
        backend = make_backend([a.url, b.url + "/"], concurrency=8)
        reqs = make_requests(40)
        assert_correct(reqs, backend.complete(reqs, Usage()))
    assert a.chat_calls + b.chat_calls == 40
    assert min(a.chat_calls, b.chat_calls) >= 12


def test_dead_endpoint_retries_go_to_the_live_one():
    with FaultServer() as live:
        backend = make_backend([closed_port_url(), live.url], concurrency=4)
        reqs = make_requests(20)
        usage = Usage()
        assert_correct(reqs, backend.complete(reqs, usage))
    assert live.chat_calls == 20
    assert set(usage.retry_reasons) == {"connection"}


def test_request_failing_beyond_max_retries_raises_teacher_error_after_in_flight_work():
    def poison(count: int, body: dict) -> str | None:
        return "500" if body["messages"][-1]["content"] == "question 5" else None

    with FaultServer(poison, latency=0.01) as srv:
        backend = make_backend(srv.url, max_retries=2, concurrency=3)
        usage = Usage()
        seen: list[int] = []
        with pytest.raises(TeacherError, match="after 3 attempts.*500"):
            backend.complete(make_requests(30), usage, on_result=lambda i, c: seen.append(i))
    assert usage.failures == 1 and usage.retry_reasons == {"500": 2}
    # Everything the server answered reached the caller; the job stopped early.
    assert len(seen) == len(srv.successes) and set(range(5)) <= set(seen)
    assert len(seen) < 29


def test_other_client_errors_fail_at_once_without_retries():
    with FaultServer({1: "400"}) as srv:
        usage = Usage()
        with pytest.raises(TeacherError, match="HTTP 400: Invalid value for 'top_p'"):
            make_backend(srv.url, concurrency=1).complete(make_requests(3), usage)
        assert srv.chat_calls == 1
    assert usage.retries == 0


def test_a_prompt_longer_than_the_context_is_a_recorded_answer_not_a_failure():
    reqs = make_requests(3)
    with FaultServer({2: "400ctx"}) as srv:
        usage = Usage()
        results = make_backend(srv.url, concurrency=1).complete(reqs, usage)
    assert [c.finish_reason for c in results].count("context_length") == 1
    assert usage.retries == 0 and usage.failures == 0


def test_unreachable_endpoint_fails_health_check_quickly():
    url = closed_port_url()
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"is unreachable: .*\(is the server running\?\)") as e:
        make_backend(url).health_check()
    assert url in str(e.value)
    assert time.monotonic() - t0 < 3


def test_wrong_model_lists_served_models():
    with FaultServer(models=("llama-3-8b", "qwen-72b")) as srv:
        with pytest.raises(UserError, match="not served.*llama-3-8b, qwen-72b"):
            make_backend(srv.url, model="gpt-9").health_check()
        make_backend(srv.url, model="qwen-72b").health_check()


def test_no_model_list_falls_back_to_a_one_token_chat():
    with FaultServer(models_404=True) as srv:
        make_backend(srv.url).health_check()
        assert srv.chat_calls == 1
        with pytest.raises(UserError, match="no model 'other'"):
            make_backend(srv.url, model="other").health_check()


def test_rejected_key_is_a_user_error(monkeypatch):
    monkeypatch.setenv("UNDO_TEST_KEY", "wrong")
    with FaultServer(api_key=SECRET) as srv:
        backend = make_backend(srv.url, api_key_env="UNDO_TEST_KEY")
        with pytest.raises(UserError, match=r"rejected the API key \(HTTP 401\); set \$UNDO_TEST"):
            backend.health_check()
        with pytest.raises(UserError, match="HTTP 401"):
            backend.complete(make_requests(3), Usage())


class RawServer:
    """Answers each request on a connection with the next scripted raw response: the HTTP/1.1
    shapes real servers use that the fault server does not (chunked, no length, close, 1.0)."""

    def __init__(self, responses: list[bytes]) -> None:
        self.responses = list(responses)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://user:p%40ss@127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.responses:
            conn, _ = self.sock.accept()
            self.connections += 1
            with conn:
                buf = b""
                while self.responses:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    if b"\r\n\r\n" not in buf:
                        break  # the client closed this connection
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                    while len(rest) < length:
                        rest += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                    buf = rest[length:]
                    answer = self.responses.pop(0)
                    conn.sendall(answer)
                    framed = b"Content-Length" in answer or b"chunked" in answer
                    if not framed or b"Connection: close" in answer or answer.startswith(b"HTTP/1.0"):
                        break  # the server ends this connection


def _answer(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()


def test_every_http_answer_shape_is_read_and_the_connection_reused_when_it_may():
    bodies = [_answer(f"answer {i}") for i in range(6)]
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in (bodies[1][:10], bodies[1][10:])) + \
        b"0\r\nX-Trailer: t\r\n\r\n"
    responses = [
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(bodies[0]), bodies[0]),
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked,
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(bodies[2]), bodies[2]),
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + bodies[3],  # to close
        b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(bodies[4]), bodies[4]),
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(bodies[5]), bodies[5]),
    ]
    srv = RawServer(responses)
    usage = Usage()
    backend = make_backend(srv.url, concurrency=1)
    assert "p%40ss" not in repr(backend) and "p@ss" not in repr(backend) and "user" not in repr(backend)
    assert "p@ss" not in repr(backend.__dict__)  # the password lives only in a SecretStr
    results = backend.complete(make_requests(6), usage)
    assert [r.text for r in results] == [f"answer {i}" for i in range(6)]
    assert usage.retries == 0 and usage.completion_tokens == 12
    # one connection for the first three answers, then a new one after each that ended its own
    assert srv.connections == 4
    head = srv.requests[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{srv.sock.getsockname()[1]}\r\n" in head  # no credentials in Host
    assert "Authorization: Basic " + base64.b64encode(b"user:p@ss").decode() in head


def test_unset_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("UNDO_MISSING_KEY", raising=False)
    with pytest.raises(UserError, match="UNDO_MISSING_KEY"):
        make_backend("http://127.0.0.1:1/v1", api_key_env="UNDO_MISSING_KEY")


def test_missing_or_bad_base_url_is_a_user_error():
    with pytest.raises(UserError, match="teacher.openai.base_url is required"):
        make_backend(None)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="not an http"):
        make_backend("localhost:8000/v1")


def test_proxy_comes_from_the_environment(monkeypatch):
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    # the loopback server plays the proxy: an http endpoint's request reaches it in absolute form
    proxy = RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(_answer("via proxy")),
                                                                         _answer("via proxy"))])
    monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/v1"))  # with user:p%40ss
    [answer] = make_backend("http://teacher.invalid:8000/v1", concurrency=1).complete(make_requests(1), Usage())
    assert answer.text == "via proxy"
    head = proxy.requests[0].decode()
    assert head.startswith("POST http://teacher.invalid:8000/v1/chat/completions HTTP/1.1\r\n")
    assert "Proxy-Authorization: Basic " + base64.b64encode(b"user:p@ss").decode() in head
    # NO_PROXY: the proxy (now a closed port) is bypassed for the endpoint it names
    monkeypatch.setenv("HTTP_PROXY", closed_port_url().removesuffix("/v1"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with FaultServer() as srv:
        requests = make_requests(3)
        assert_correct(requests, make_backend(srv.url).complete(requests, Usage()))


def test_api_key_sent_as_bearer_but_never_shown(monkeypatch, caplog):
    monkeypatch.setenv("UNDO_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with FaultServer({1: "500", 2: "429"}, api_key=SECRET) as srv:
        backend = make_backend(srv.url, api_key_env="UNDO_TEST_KEY")
        backend.health_check()
        backend.complete(make_requests(4), Usage())
        assert srv.auth_headers and set(srv.auth_headers) == {f"Bearer {SECRET}"}
        with pytest.raises(UserError) as e:
            make_backend(srv.url, model="nope", api_key_env="UNDO_TEST_KEY").health_check()
    shown = [repr(backend), str(backend), repr(vars(backend)), caplog.text, str(e.value)]
    assert "retry" in caplog.text  # the retries were logged ...
    assert not any(SECRET in s for s in shown)  # ... without the key


# --- the cache --------------------------------------------------------------


@pytest.fixture
def cache(tmp_path):
    with CompletionCache(tmp_path) as c:
        yield c


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("UNDO_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("UNDO_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "x" / "undo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "undo"
    monkeypatch.setenv("UNDO_CACHE_DIR", str(tmp_path / "a"))
    with CompletionCache() as c:
        assert c.path == tmp_path / "a" / "completions.sqlite"


def test_cache_keys_distinguish_everything_that_changes_the_answer():
    msgs = [{"role": "user", "content": "q"}]
    base = Request(msgs, SamplingParams(0.7, 0.95, 64), 0)
    variants = [
        Request(msgs, SamplingParams(0.7, 0.95, 64), 1),
        Request(msgs, SamplingParams(0.0, 0.95, 64), 0),
        Request(msgs, SamplingParams(0.7, 1.0, 64), 0),
        Request(msgs, SamplingParams(0.7, 0.95, 65), 0),
        Request([{"role": "user", "content": "q "}], SamplingParams(0.7, 0.95, 64), 0),
    ]
    keys = {cache_key("openai", "m", r) for r in [base, *variants]}
    keys |= {cache_key("vllm", "m", base), cache_key("openai", "m2", base)}
    assert len(keys) == 8
    same = Request([{"content": "q", "role": "user"}], SamplingParams(0.7, 0.95, 64), 0)
    assert cache_key("openai", "m", same) == cache_key("openai", "m", base)


def test_cache_put_get_stats_clear(cache):
    reqs = make_requests(3)
    assert cache.get("openai", "m1", reqs[0]) is None
    for r in reqs:
        cache.put("openai", "m1", r, Completion("a", 3, 4, "stop"))
    cache.put("openai", "m2", reqs[0], Completion("b"))
    cache.put("openai", "m2", reqs[0], Completion("second answer is ignored"))
    got = cache.get("openai", "m1", reqs[0])
    assert got == Completion("a", 3, 4, "stop", cached=True)
    assert cache.get("openai", "m2", reqs[0]).text == "b"
    stats = cache.stats()
    assert stats["entries"] == 4 and stats["models"] == {"m1": 3, "m2": 1}
    assert stats["size_bytes"] > 0
    assert cache.clear("m1") == 3
    assert cache.clear() == 1
    assert cache.stats()["entries"] == 0


def test_repeated_job_makes_zero_server_calls(cache):
    with FaultServer() as srv:
        teacher = CachedTeacher(make_backend(srv.url), cache)
        reqs = make_requests(12)
        first = teacher.complete(reqs, Usage())
        assert srv.chat_calls == 12
        usage = Usage()
        done: list[int] = []
        again = teacher.complete(reqs, usage, progress=done.append)
        assert srv.chat_calls == 12
    assert_correct(reqs, again)
    assert [c.text for c in first] == [c.text for c in again]
    assert all(c.cached for c in again) and not any(c.cached for c in first)
    assert usage.cached == 12 and usage.requests == 0 and sum(done) == 12


def test_duplicate_requests_in_one_job_are_sent_once(cache):
    with FaultServer() as srv:
        reqs = make_requests(3) + make_requests(3)
        usage = Usage()
        results = CachedTeacher(make_backend(srv.url), cache).complete(reqs, usage)
        assert srv.chat_calls == 3
    assert_correct(reqs, results)
    assert usage.requests == 3 and usage.cached == 3


def test_killed_job_resumes_with_only_the_missing_requests(cache):
    def poison(count: int, body: dict) -> str | None:
        return "503" if body["messages"][-1]["content"] == "question 7" else None

    reqs = make_requests(20)
    with FaultServer(poison, latency=0.01) as srv:
        teacher = CachedTeacher(make_backend(srv.url, max_retries=1, concurrency=3), cache)
        with pytest.raises(TeacherError):
            teacher.complete(reqs, Usage())
        saved = cache.stats()["entries"]
        # Every answer the server gave was cached the moment it arrived.
        assert saved == len(srv.successes) and 7 <= saved < 20
        srv.faults = None
        calls = srv.chat_calls
        usage = Usage()
        results = teacher.complete(reqs, usage)
        assert srv.chat_calls - calls == 20 - saved
    assert_correct(reqs, results)
    assert usage.cached == saved and usage.requests == 20 - saved


def test_sample_index_and_sampling_are_separate_cache_entries(cache):
    msgs = [{"role": "user", "content": "same question"}]
    reqs = [
        Request(msgs, SamplingParams(0.7, 0.95, 64), 0),
        Request(msgs, SamplingParams(0.7, 0.95, 64), 1),
        Request(msgs, SamplingParams(0.0, 1.0, 64), 0),
    ]
    with FaultServer() as srv:
        CachedTeacher(make_backend(srv.url), cache).complete(reqs, Usage())
        assert srv.chat_calls == 3
    assert cache.stats()["entries"] == 3


_WRITER = textwrap.dedent(
    """
    import sys
    from undo.teacher.base import Completion, Request, SamplingParams
    from undo.teacher.cache import CompletionCache

    cache = CompletionCache(sys.argv[1])
    start = int(sys.argv[2])
    for i in range(start, start + 300):
        req = Request([{"role": "user", "content": f"q{i}"}], SamplingParams())
        cache.put("openai", "m", req, Completion(f"a{i}"))
        assert cache.get("openai", "m", req).text == f"a{i}"
    cache.close()
    """
)


def test_two_processes_write_one_cache_at_once(tmp_path):
    # Fresh file: both processes also race to create the table and switch to WAL.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(start)],
            stderr=subprocess.PIPE, text=True,
        )
        for start in (0, 150)  # overlapping keys exercise INSERT OR IGNORE
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    with CompletionCache(tmp_path) as c:
        assert c.stats()["entries"] == 450
