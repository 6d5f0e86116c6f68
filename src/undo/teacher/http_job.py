"""One batch of chat requests against OpenAI-compatible endpoints: the worker pool.

`run_job` starts `concurrency` async workers that take request indices from one shared
iterator. Each worker keeps one keep-alive connection per endpoint; several endpoints
are load-balanced by least-in-flight, and an endpoint that just failed cools down so
its retries go elsewhere. A request that keeps failing stops the job only after the
requests already in flight have finished, so their results still reach `on_result`.

It speaks HTTP through `http11` (a minimal keep-alive HTTP/1.1 connection on asyncio
streams): at concurrency 256 against a fast server a full HTTP library's per-request CPU
was the job's bottleneck (bench/teacher_client.py).

What a job needs from its backend (model, retries, backoff, TLS, what a 4xx means) comes
in one `JobPolicy`, so this module never reaches into the backend.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore

from undo.errors import UserError
from undo.teacher.base import CONTEXT_LENGTH, Completion, ProgressFn, Request, ResultFn, TeacherError, Usage
from undo.teacher.http11 import BadResponse, DirectConnection, ProxiedConnection, Target

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429}  # plus every 5xx

# how vLLM, OpenAI, llama.cpp and TGI word it
CONTEXT_TOO_LONG = re.compile(
    r"context.length|maximum context|too long|max_model_len|exceeds? the (model|context|maximum)"
    r"|input.*tokens?.*(exceed|longer|too many)|prompt is too long",
    re.IGNORECASE,
)


@dataclass
class Endpoint:
    url: str  # base URL as shown in messages (no password), no trailing slash
    target: Target  # where its chat requests go, with their fixed headers
    proxy: httpcore.Proxy | None
    in_flight: int = 0
    cooldown_until: float = 0.0
    consecutive_failures: int = 0


@dataclass(frozen=True)
class JobPolicy:
    """The backend's side of a job."""

    model: str
    timeout: float  # seconds per attempt (read/write/pool; connect at most 10)
    max_retries: int
    backoff: Callable[[int, float | None], float]  # (attempt, Retry-After) -> seconds to wait
    cooldown_base: float  # an endpoint's cooldown grows from this with its consecutive failures
    ssl_context: Callable[[], ssl.SSLContext]
    fatal_for_status: Callable[[str, int, bytes], Exception]  # a 4xx no retry can fix


Connection = DirectConnection | ProxiedConnection


class Retry(Exception):
    """One attempt failed in a way worth retrying; `reason` feeds usage.retry_reasons."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class _Stopped(Exception):
    """Another request already failed the job; give up without recording an error."""


def redirected(url: str, location: str) -> UserError:
    # never followed: a redirected POST loses its body on many servers
    return UserError(f"teacher endpoint {url} redirects to {location}; "
                     "set teacher.openai.base_url to the address it redirects to")


def error_message(body: bytes) -> str:
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


def parse_retry_after(value: str | None) -> float | None:
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


def parse_completion(body: bytes) -> Completion:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"].get("content")
        finish = choice.get("finish_reason")
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise Retry("bad_json", f"malformed response: {e!r}"[:200]) from None
    if content is not None and not isinstance(content, str):
        raise Retry("bad_json", f"message content is {type(content).__name__}, not text")
    text = content or ""
    # Running out of tokens before writing anything is a real (if useless)
    # completion; an empty "stop" is a server hiccup worth another try.
    if not text.strip() and finish != "length":
        raise Retry("empty", f"empty content (finish_reason={finish!r})")
    return Completion(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=finish,
    )


async def run_job(
    requests: list[Request],
    endpoints: list[Endpoint],
    policy: JobPolicy,
    usage: Usage,
    *,
    concurrency: int,
    progress: ProgressFn | None = None,
    on_result: ResultFn | None = None,
) -> list[Completion]:
    """Answer every request, in order. Raises the first failure (TeacherError, or the
    UserError of a rejected key or unknown model) once the requests in flight are done."""
    job = _Job(requests, endpoints, policy, usage, progress, on_result)
    await asyncio.gather(*(job.worker() for _ in range(min(concurrency, len(requests)))))
    if job.error is not None:
        raise job.error
    return job.results  # type: ignore[return-value]  # every slot filled when no error


class _Job:
    """State shared by the workers of one run_job() call."""

    def __init__(
        self,
        requests: list[Request],
        endpoints: list[Endpoint],
        policy: JobPolicy,
        usage: Usage,
        progress: ProgressFn | None,
        on_result: ResultFn | None,
    ) -> None:
        self.requests = requests
        self.endpoints = endpoints
        self.policy = policy
        self.usage = usage
        self.progress = progress
        self.on_result = on_result
        self.results: list[Completion | None] = [None] * len(requests)
        self.pending: Iterator[int] = iter(range(len(requests)))  # shared: each index taken once
        self.turn = 0
        self.stop = asyncio.Event()
        self.error: BaseException | None = None

    def fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
        self.stop.set()

    async def worker(self) -> None:
        # A worker's own connection to each endpoint (opened on first use): nothing shared
        conns: dict[int, Connection] = {
            id(ep): ProxiedConnection(ep.target, self.policy.ssl_context, ep.proxy) if ep.proxy
            else DirectConnection(ep.target, self.policy.ssl_context) for ep in self.endpoints}
        try:
            for i in self.pending:
                if self.stop.is_set():
                    return
                try:
                    c = await self.one(conns, i)
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
        finally:
            for conn in conns.values():
                await conn.aclose()

    def pick(self, avoid: Endpoint | None) -> Endpoint:
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

    def body(self, req: Request) -> bytes:
        payload: dict[str, Any] = {
            "model": self.policy.model,
            "messages": req.messages,
            "temperature": req.sampling.temperature,
            "top_p": req.sampling.top_p,
            "max_tokens": req.sampling.max_tokens,
        }
        if req.sampling.temperature > 0:
            # a sampled request names its sample: servers that honour seeds (vLLM,
            # llama.cpp, OpenAI) then give the same text on a rerun
            payload["seed"] = req.sample_index
        return json.dumps(payload, ensure_ascii=False).encode()

    async def one(self, conns: dict[int, Connection], i: int) -> Completion:
        body = self.body(self.requests[i])
        policy = self.policy
        last: Endpoint | None = None
        empties = 0
        for attempt in range(policy.max_retries + 1):
            ep = self.pick(avoid=last)
            try:
                c = await self.attempt(conns[id(ep)], ep, body)
                ep.consecutive_failures = 0
                return c
            except Retry as r:
                if r.reason == "empty":
                    empties += 1
                    if empties == 2 or attempt == policy.max_retries:
                        # empty twice: the model's answer to this prompt, not a hiccup. It is
                        # recorded (and graded unparsed) rather than ending the whole job
                        return Completion("", 0, 0, "empty")
                last = ep
                ep.consecutive_failures += 1
                delay = policy.backoff(attempt, r.retry_after)
                ep.cooldown_until = time.monotonic() + max(
                    delay, policy.cooldown_base * 2 ** min(ep.consecutive_failures, 6)
                )
                if attempt == policy.max_retries:
                    self.usage.failures += 1
                    raise TeacherError(
                        f"teacher request {i} failed after {attempt + 1} attempts; "
                        f"last error on {ep.url}: {r.reason}: {r.detail}"
                    ) from None
                self.usage.retries += 1
                self.usage.retry_reasons[r.reason] = self.usage.retry_reasons.get(r.reason, 0) + 1
                log.info(
                    "teacher retry %d/%d for request %d on %s: %s (%s); waiting %.2f s",
                    attempt + 1, policy.max_retries, i, ep.url, r.reason, r.detail, delay,
                )
                if self.stop.is_set():
                    raise _Stopped() from None
                try:  # sleep, but wake at once if the job is being stopped
                    await asyncio.wait_for(self.stop.wait(), delay)
                    raise _Stopped()
                except asyncio.TimeoutError:
                    pass
        raise AssertionError("unreachable")

    async def attempt(self, conn: Connection, ep: Endpoint, body: bytes) -> Completion:
        ep.in_flight += 1
        t = self.policy.timeout
        try:
            resp = await conn.post(body, min(t, 10.0), t)
        except (TimeoutError, asyncio.TimeoutError):  # the same class from 3.11 on
            raise Retry("timeout", f"no answer within {t:g} s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadResponse, ValueError) as e:
            raise Retry("connection", f"{type(e).__name__}: {e}"[:200]) from None
        finally:
            ep.in_flight -= 1
        code = resp.status
        if 300 <= code < 400:  # not followed: a redirected POST loses its body on many servers
            raise redirected(ep.url, resp.headers.get("location", "?"))
        if code >= 500 or code in RETRY_STATUS:
            retry_after = resp.headers.get("retry-after")
            detail = f"HTTP {code}: {error_message(resp.content)}"
            raise Retry(str(code), detail, parse_retry_after(retry_after))
        if code in (400, 413, 422) and (code == 413 or CONTEXT_TOO_LONG.search(error_message(resp.content))):
            # this prompt does not fit the model: recorded for this request (a shorter one may),
            # not a failure of the whole job
            return Completion("", 0, 0, CONTEXT_LENGTH)
        if code >= 400:
            raise self.policy.fatal_for_status(ep.url, code, resp.content)
        return parse_completion(resp.content)
