"""Any OpenAI-compatible chat endpoint: vLLM, SGLang, Ollama, llama.cpp, LiteLLM, APIs.

One job is a pool of `concurrency` async workers sharing one HTTP client, so
connections are kept alive and reused. Several `base_url`s are load-balanced by
least-in-flight; an endpoint that just failed cools down and its retries go
elsewhere. A request that keeps failing stops the job only after the requests
already in flight have finished, so their results still reach `on_result`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import logging
import os
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from undo.config import TeacherConfig
from undo.errors import UserError
from undo.teacher.base import (
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
    url: str
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


def _error_message(resp: httpx.Response) -> str:
    """The server's own words (OpenAI-style `{"error": {"message": ...}}` or vLLM's)."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200].strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:200]
        if isinstance(err, str):
            return err[:200]
    return resp.text[:200].strip()


def _parse_completion(resp: httpx.Response) -> Completion:
    try:
        data = resp.json()
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
        urls = [cfg.base_url] if isinstance(cfg.base_url, str) else list(cfg.base_url or [])
        if not urls:
            raise UserError(
                "teacher.base_url is required for backend 'openai' "
                "(e.g. http://localhost:8000/v1, or a list of such URLs)"
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

    def _fatal_for_status(self, url: str, resp: httpx.Response) -> Exception:
        """4xx answers that no retry can fix: a user error, or a failure of this request."""
        code = resp.status_code
        msg = _error_message(resp)
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
        # Full jitter spreads a burst of failures over the window; Retry-After
        # (capped, so a misbehaving proxy cannot park us for hours) is the floor.
        delay = random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay

    # --- health check ------------------------------------------------------

    def health_check(self) -> None:
        timeout = httpx.Timeout(HEALTH_TIMEOUT, connect=5.0)
        with httpx.Client(timeout=timeout, headers=self._headers()) as client:
            for url in self.base_urls:
                self._check_endpoint(client, url)

    def _check_endpoint(self, client: httpx.Client, url: str) -> None:
        resp = self._health_get(client, "GET", url, "/models")
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
        resp = self._health_get(client, "POST", url, "/chat/completions", json=body)
        if resp.status_code >= 400:
            raise self._health_status_error(url, resp)

    def _health_get(
        self, client: httpx.Client, method: str, url: str, path: str, **kw: Any
    ) -> httpx.Response:
        try:
            return client.request(method, url + path, **kw)
        except httpx.TimeoutException:
            raise UserError(
                f"teacher endpoint {url} is unreachable: no answer within {HEALTH_TIMEOUT:.0f} s "
                "(is the server running?)"
            ) from None
        except httpx.TransportError as e:
            raise UserError(
                f"teacher endpoint {url} is unreachable: {e} (is the server running?)"
            ) from None

    def _health_status_error(self, url: str, resp: httpx.Response) -> Exception:
        if resp.status_code in (401, 403, 404):
            return self._fatal_for_status(url, resp)
        return UserError(
            f"teacher endpoint {url} is not ready (HTTP {resp.status_code}: "
            f"{_error_message(resp)})"
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
        if not requests:
            return []
        return _run_sync(self._complete(requests, usage, progress, on_result))

    async def _complete(
        self,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None,
        on_result: ResultFn | None,
    ) -> list[Completion]:
        job = _Job(self, requests, usage, progress, on_result)
        n_workers = min(self.concurrency, len(requests))
        limits = httpx.Limits(max_connections=n_workers, max_keepalive_connections=n_workers)
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        async with httpx.AsyncClient(
            limits=limits, timeout=timeout, headers=self._headers()
        ) as client:
            await asyncio.gather(*(job.worker(client) for _ in range(n_workers)))
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
        self.endpoints = [_Endpoint(u) for u in backend.base_urls]
        self.turn = 0
        self.stop = asyncio.Event()
        self.error: BaseException | None = None

    def fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
        self.stop.set()

    async def worker(self, client: httpx.AsyncClient) -> None:
        for i in self.pending:
            if self.stop.is_set():
                return
            try:
                c = await self.one(client, i)
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

    async def one(self, client: httpx.AsyncClient, i: int) -> Completion:
        req = self.requests[i]
        body = {
            "model": self.b.model,
            "messages": req.messages,
            "temperature": req.sampling.temperature,
            "top_p": req.sampling.top_p,
            "max_tokens": req.sampling.max_tokens,
        }
        last: _Endpoint | None = None
        for attempt in range(self.b.max_retries + 1):
            ep = self.pick(avoid=last)
            try:
                return await self.attempt(client, ep, body)
            except _Retry as r:
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

    async def attempt(self, client: httpx.AsyncClient, ep: _Endpoint, body: dict) -> Completion:
        ep.in_flight += 1
        try:
            resp = await client.post(ep.url + "/chat/completions", json=body)
        except httpx.TimeoutException:
            raise _Retry("timeout", f"no answer within {self.b.timeout:g} s") from None
        except httpx.TransportError as e:
            raise _Retry("connection", f"{type(e).__name__}: {e}"[:200]) from None
        finally:
            ep.in_flight -= 1
        code = resp.status_code
        if code >= 500 or code in RETRY_STATUS:
            raise _Retry(
                str(code),
                f"HTTP {code}: {_error_message(resp)}",
                _parse_retry_after(resp.headers.get("retry-after")),
            )
        if code >= 400:
            raise self.b._fatal_for_status(ep.url, resp)
        c = _parse_completion(resp)
        ep.consecutive_failures = 0
        return c
