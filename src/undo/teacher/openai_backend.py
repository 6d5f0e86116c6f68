"""Any OpenAI-compatible chat endpoint: vLLM, SGLang, Ollama, llama.cpp, LiteLLM, APIs.

One job is a pool of `concurrency` async workers. Each worker keeps one
keep-alive connection per endpoint; several `base_url`s are load-balanced by
least-in-flight, and an endpoint that just failed cools down so its retries go
elsewhere. A request that keeps failing stops the job only after the requests
already in flight have finished, so their results still reach `on_result`.

The job speaks HTTP through httpcore (the engine under httpx) rather than
httpx.AsyncClient: the client's request/response models, cookie jar and a
shared pool that rescans every connection on each request (encode/httpcore#1035)
cost ~1 ms CPU per request, which at concurrency 64 against a fast server was
most of the job's time. The one-off health check keeps httpx for its convenience.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import importlib.util
import json
import logging
import os
import random
import re
import ssl
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpcore
import httpx

from undo.config import TeacherConfig
from undo.errors import UserError
from undo.teacher.base import (
    CONTEXT_LENGTH,
    Completion,
    ProgressFn,
    Request,
    ResultFn,
    TeacherError,
    Usage,
    register_backend,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUS = {408, 409, 429}  # plus every 5xx
HEALTH_TIMEOUT = 8.0

# httpcore looks for sniffio on every lock it creates (several per request);
# anyio >= 4.? no longer installs it, and a failed import is not cached, so each
# look is a full sys.path scan (~25 % of the client's CPU). Marking it absent
# makes the failure instant; httpcore then assumes asyncio, which is what we run.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


class _Secret:
    """Holds the API key so that no repr, vars() dump or log line can show it."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


@dataclass
class _Endpoint:
    url: str  # base URL, no trailing slash
    chat_url: bytes
    headers: list[tuple[bytes, bytes]]  # without Content-Length
    proxy: httpcore.Proxy | None
    in_flight: int = 0
    cooldown_until: float = 0.0
    consecutive_failures: int = 0


class _Retry(Exception):
    """One attempt failed in a way worth retrying; `reason` feeds usage.retry_reasons."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class _Stopped(Exception):
    """Another request already failed the job; give up without recording an error."""


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    # asyncio.run refuses to nest; inside a running loop (a notebook, an async
    # caller) the job runs on a private thread with its own loop instead.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _proxy_for(url: str) -> httpcore.Proxy | None:
    """The proxy that HTTP(S)_PROXY / ALL_PROXY / NO_PROXY give this URL, as httpx would."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    auth = None
    if p.username is not None:
        auth = (urllib.parse.unquote(p.username), urllib.parse.unquote(p.password or ""))
    netloc = p.hostname + (f":{p.port}" if p.port else "") if p.hostname else ""
    return httpcore.Proxy(urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", "")), auth=auth)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the HTTP-date form
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# how vLLM, OpenAI, llama.cpp and TGI word it
_CONTEXT_TOO_LONG = re.compile(
    r"context.length|maximum context|too long|max_model_len|exceeds? the (model|context|maximum)"
    r"|input.*tokens?.*(exceed|longer|too many)|prompt is too long",
    re.IGNORECASE,
)


def _redirected(url: str, location: str) -> UserError:
    # never followed: a redirected POST loses its body on many servers
    return UserError(f"teacher endpoint {url} redirects to {location}; "
                     "set teacher.base_url to the address it redirects to")


def _error_message(body: bytes) -> str:
    """The server's own words (OpenAI-style `{"error": {"message": ...}}` or vLLM's)."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200].strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:200]
        if isinstance(err, str):
            return err[:200]
    return text[:200].strip()


def _parse_completion(body: bytes) -> Completion:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"].get("content")
        finish = choice.get("finish_reason")
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise _Retry("bad_json", f"malformed response: {e!r}"[:200]) from None
    if content is not None and not isinstance(content, str):
        raise _Retry("bad_json", f"message content is {type(content).__name__}, not text")
    text = content or ""
    # Running out of tokens before writing anything is a real (if useless)
    # completion; an empty "stop" is a server hiccup worth another try.
    if not text.strip() and finish != "length":
        raise _Retry("empty", f"empty content (finish_reason={finish!r})")
    return Completion(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=finish,
    )


@register_backend("openai")
class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        cfg: TeacherConfig,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
    ) -> None:
        """`backoff_base`/`backoff_max`: seconds, the full-jitter window before retry k
        is uniform(0, min(max, base * 2**k)). `retry_after_max` caps a server's
        Retry-After, so a misbehaving proxy cannot park the job for hours."""
        urls = [cfg.base_url] if isinstance(cfg.base_url, str) else list(cfg.base_url or [])
        if not urls:
            raise UserError(
                "teacher.base_url is required for backend 'openai' "
                "(e.g. http://localhost:8000/v1, or a list of such URLs)"
            )
        for u in urls:
            parts = urllib.parse.urlsplit(u)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UserError(
                    f"teacher.base_url {u!r} is not an http(s) URL "
                    "(e.g. http://localhost:8000/v1)"
                )
        self.model = cfg.model
        self.base_urls = [u.rstrip("/") for u in urls]
        self.concurrency = cfg.concurrency
        self.timeout = cfg.timeout
        self.max_retries = cfg.max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.api_key_env = cfg.api_key_env
        self._api_key: _Secret | None = None
        self._ssl: ssl.SSLContext | None = None
        if cfg.api_key_env:
            value = os.environ.get(cfg.api_key_env)
            if not value:
                raise UserError(
                    f"teacher.api_key_env names ${cfg.api_key_env}, but that variable is "
                    "not set (export it, or set teacher.api_key_env: null for a local server)"
                )
            self._api_key = _Secret(value)

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_urls={self.base_urls!r})"

    # --- shared helpers ----------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "undo-distill"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        return headers

    def _fatal_for_status(self, url: str, code: int, body: bytes) -> Exception:
        """4xx answers that no retry can fix: a user error, or a failure of this request."""
        msg = _error_message(body)
        if code in (401, 403):
            hint = (
                f"set ${self.api_key_env} to a valid key"
                if self.api_key_env
                else "set teacher.api_key_env to the name of the variable holding the key"
            )
            return UserError(f"teacher endpoint {url} rejected the API key (HTTP {code}); {hint}")
        if code == 404:
            return UserError(
                f"teacher endpoint {url} has no model '{self.model}' (HTTP 404: {msg}); "
                "check teacher.model and teacher.base_url (it usually ends in /v1)"
            )
        return TeacherError(f"teacher endpoint {url} refused the request (HTTP {code}: {msg})")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter spreads a burst of failures over the window; a server's
        # Retry-After (capped) is the floor.
        delay = random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # loading CA certificates takes a while: once per backend
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    # --- health check ------------------------------------------------------

    def health_check(self) -> None:
        timeout = httpx.Timeout(HEALTH_TIMEOUT, connect=5.0)
        with httpx.Client(
            timeout=timeout, headers=self._headers(), verify=self._ssl_context()
        ) as client:
            for url in self.base_urls:
                self._check_endpoint(client, url)

    def _check_endpoint(self, client: httpx.Client, url: str) -> None:
        resp = self._health_request(client, "GET", url, "/models")
        if resp.status_code == 404:  # some servers have no model list: try one token
            self._check_by_chat(client, url)
            return
        if resp.status_code >= 400:
            raise self._health_status_error(url, resp)
        try:
            served = [str(m["id"]) for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            self._check_by_chat(client, url)
            return
        if self.model not in served:
            listing = ", ".join(served[:20]) + (" ..." if len(served) > 20 else "")
            raise UserError(
                f"teacher model '{self.model}' is not served by {url}; it serves: "
                f"{listing or '(nothing)'} (set teacher.model to one of these)"
            )

    def _check_by_chat(self, client: httpx.Client, url: str) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say OK."}],
            "max_tokens": 1,
            "temperature": 0.0,
        }
        resp = self._health_request(client, "POST", url, "/chat/completions", json=body)
        if resp.status_code >= 400:
            raise self._health_status_error(url, resp)

    def _health_request(
        self, client: httpx.Client, method: str, url: str, path: str, **kw: Any
    ) -> httpx.Response:
        try:
            resp = client.request(method, url + path, **kw)
        except httpx.TimeoutException:
            raise UserError(
                f"teacher endpoint {url} is unreachable: no answer within {HEALTH_TIMEOUT:.0f} s "
                "(is the server running?)"
            ) from None
        except httpx.TransportError as e:
            raise UserError(
                f"teacher endpoint {url} is unreachable: {e} (is the server running?)"
            ) from None
        if resp.is_redirect:  # a POST is not re-sent across a redirect: the URL must be the final one
            raise _redirected(url, resp.headers.get("location", "?"))
        return resp

    def _health_status_error(self, url: str, resp: httpx.Response) -> Exception:
        if resp.status_code in (401, 403, 404):
            return self._fatal_for_status(url, resp.status_code, resp.content)
        return UserError(
            f"teacher endpoint {url} is not ready (HTTP {resp.status_code}: "
            f"{_error_message(resp.content)})"
        )

    # --- the job -----------------------------------------------------------

    def complete(
        self,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None = None,
        *,
        on_result: ResultFn | None = None,
    ) -> list[Completion]:
        """Answer every request, in order; `on_result(i, completion)` fires as each
        arrives. Raises TeacherError (or UserError for a rejected key or unknown
        model) once the requests already in flight have finished."""
        if not requests:
            return []
        return _run_sync(self._complete(requests, usage, progress, on_result))

    def _endpoints(self) -> list[_Endpoint]:
        eps = []
        for url in self.base_urls:
            host = urllib.parse.urlsplit(url).netloc
            headers = [
                (b"Host", host.encode()),
                (b"Content-Type", b"application/json"),
                (b"Accept", b"application/json"),
                (b"Accept-Encoding", b"identity"),  # httpcore does not decompress
            ]
            headers += [(k.encode(), v.encode()) for k, v in self._headers().items()]
            chat = (url + "/chat/completions").encode()
            eps.append(_Endpoint(url, chat, headers, _proxy_for(url)))
        return eps

    async def _complete(
        self,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None,
        on_result: ResultFn | None,
    ) -> list[Completion]:
        job = _Job(self, requests, usage, progress, on_result)
        n_workers = min(self.concurrency, len(requests))
        await asyncio.gather(*(job.worker() for _ in range(n_workers)))
        if job.error is not None:
            raise job.error
        return job.results  # type: ignore[return-value]  # every slot filled when no error


class _Job:
    """State shared by the workers of one complete() call."""

    def __init__(
        self,
        backend: OpenAIBackend,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None,
        on_result: ResultFn | None,
    ) -> None:
        self.b = backend
        self.requests = requests
        self.usage = usage
        self.progress = progress
        self.on_result = on_result
        self.results: list[Completion | None] = [None] * len(requests)
        self.pending = iter(range(len(requests)))  # shared: each index taken once
        self.endpoints = backend._endpoints()
        t = backend.timeout
        self.timeouts = {"connect": min(t, 10.0), "read": t, "write": t, "pool": t}
        self.turn = 0
        self.stop = asyncio.Event()
        self.error: BaseException | None = None

    def fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
        self.stop.set()

    async def worker(self) -> None:
        # A worker's own pools, one connection per endpoint: no pool is ever shared,
        # so none has more than one connection to scan.
        async with contextlib.AsyncExitStack() as stack:
            pools: dict[str, httpcore.AsyncConnectionPool] = {}
            for ep in self.endpoints:
                pools[ep.url] = await stack.enter_async_context(
                    httpcore.AsyncConnectionPool(
                        ssl_context=self.b._ssl_context() if ep.url.startswith("https") else None,
                        proxy=ep.proxy,
                        max_connections=1,
                    )
                )
            for i in self.pending:
                if self.stop.is_set():
                    return
                try:
                    c = await self.one(pools, i)
                    self.results[i] = c
                    self.usage.add(c)
                    if self.on_result is not None:
                        self.on_result(i, c)
                    if self.progress is not None:
                        self.progress(1)
                except _Stopped:
                    return
                except Exception as e:  # any failure ends the job, once in-flight work is done
                    self.fail(e)
                    return

    def pick(self, avoid: _Endpoint | None) -> _Endpoint:
        eps = self.endpoints
        if len(eps) == 1:
            return eps[0]
        now = time.monotonic()
        self.turn += 1
        n = len(eps)
        # Healthy first, then fewest in flight, then round-robin among equals.
        return min(
            (e for e in eps if e is not avoid),
            key=lambda e: (
                e.cooldown_until > now,
                e.in_flight,
                (eps.index(e) - self.turn) % n,
            ),
        )

    async def one(self, pools: dict[str, httpcore.AsyncConnectionPool], i: int) -> Completion:
        req = self.requests[i]
        body = json.dumps(
            {
                "model": self.b.model,
                "messages": req.messages,
                "temperature": req.sampling.temperature,
                "top_p": req.sampling.top_p,
                "max_tokens": req.sampling.max_tokens,
                # a sampled request names its sample: servers that honour seeds (vLLM,
                # llama.cpp, OpenAI) then give the same text on a rerun
                **({"seed": req.sample_index} if req.sampling.temperature > 0 else {}),
            },
            ensure_ascii=False,
        ).encode()
        last: _Endpoint | None = None
        empties = 0
        for attempt in range(self.b.max_retries + 1):
            ep = self.pick(avoid=last)
            try:
                c = await self.attempt(pools[ep.url], ep, body)
                ep.consecutive_failures = 0
                return c
            except _Retry as r:
                if r.reason == "empty":
                    empties += 1
                    if empties == 2 or attempt == self.b.max_retries:
                        # empty twice: the model's answer to this prompt, not a hiccup. It is
                        # recorded (and graded unparsed) rather than ending the whole job
                        return Completion("", 0, 0, "empty")
                last = ep
                ep.consecutive_failures += 1
                delay = self.b._backoff(attempt, r.retry_after)
                ep.cooldown_until = time.monotonic() + max(
                    delay, self.b.backoff_base * 2 ** min(ep.consecutive_failures, 6)
                )
                if attempt == self.b.max_retries:
                    self.usage.failures += 1
                    raise TeacherError(
                        f"teacher request {i} failed after {attempt + 1} attempts; "
                        f"last error on {ep.url}: {r.reason}: {r.detail}"
                    ) from None
                self.usage.retries += 1
                self.usage.retry_reasons[r.reason] = self.usage.retry_reasons.get(r.reason, 0) + 1
                log.info(
                    "teacher retry %d/%d for request %d on %s: %s (%s); waiting %.2f s",
                    attempt + 1, self.b.max_retries, i, ep.url, r.reason, r.detail, delay,
                )
                if self.stop.is_set():
                    raise _Stopped() from None
                try:  # sleep, but wake at once if the job is being stopped
                    await asyncio.wait_for(self.stop.wait(), delay)
                    raise _Stopped()
                except asyncio.TimeoutError:
                    pass
        raise AssertionError("unreachable")

    async def attempt(
        self, pool: httpcore.AsyncConnectionPool, ep: _Endpoint, body: bytes
    ) -> Completion:
        ep.in_flight += 1
        try:
            resp = await pool.request(
                b"POST",
                ep.chat_url,
                headers=[*ep.headers, (b"Content-Length", str(len(body)).encode())],
                content=body,
                extensions={"timeout": self.timeouts},
            )
        except httpcore.TimeoutException:
            raise _Retry("timeout", f"no answer within {self.b.timeout:g} s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError) as e:
            raise _Retry("connection", f"{type(e).__name__}: {e}"[:200]) from None
        finally:
            ep.in_flight -= 1
        code = resp.status
        if 300 <= code < 400:  # not followed: a redirected POST loses its body on many servers
            location = next((v.decode("latin-1") for k, v in resp.headers if k.lower() == b"location"), "?")
            raise _redirected(ep.url, location)
        if code >= 500 or code in RETRY_STATUS:
            retry_after = next(
                (v.decode("latin-1") for k, v in resp.headers if k.lower() == b"retry-after"),
                None,
            )
            raise _Retry(
                str(code),
                f"HTTP {code}: {_error_message(resp.content)}",
                _parse_retry_after(retry_after),
            )
        if code in (400, 413, 422) and (code == 413 or _CONTEXT_TOO_LONG.search(_error_message(resp.content))):
            # this prompt does not fit the model: recorded for this request (a shorter one may),
            # not a failure of the whole job
            return Completion("", 0, 0, CONTEXT_LENGTH)
        if code >= 400:
            raise self.b._fatal_for_status(ep.url, code, resp.content)
        return _parse_completion(resp.content)
