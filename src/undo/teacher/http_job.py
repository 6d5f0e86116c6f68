"""One batch of chat requests against OpenAI-compatible endpoints: the worker pool.

`run_job` starts `concurrency` async workers that take request indices from one shared
iterator. Each worker keeps one keep-alive connection per endpoint; several endpoints
are load-balanced by least-in-flight, and an endpoint that just failed cools down so
its retries go elsewhere. A request that keeps failing stops the job only after the
requests already in flight have finished, so their results still reach `on_result`.

It speaks HTTP through httpx (keep-alive, proxies from the environment, TLS, chunked and
1xx answers), one `AsyncClient` per worker: a worker has at most one request in flight, so
its pool holds one connection per endpoint. One pool shared by every worker would cost
CPU growing with the square of the concurrency: httpcore 1.0.9 scans the whole pool for
each request (encode/httpcore#1035; bench/teacher_client.py, RESULTS).

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
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from undo.errors import UserError
from undo.teacher.base import CONTEXT_LENGTH, Completion, ProgressFn, Request, ResultFn, TeacherError, Usage

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
    chat_url: str  # where its chat requests go (no credentials: those are in `authorization`)
    authorization: SecretStr | None = field(default=None, repr=False)  # the Authorization header
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
    headers: dict[str, str]  # sent with every request (never the Authorization: see Endpoint)
    fatal_for_status: Callable[[str, int, bytes], Exception]  # a 4xx no retry can fix


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

    def client(self) -> httpx.AsyncClient:
        """A worker's own client: one keep-alive connection per endpoint, opened on first use."""
        t, n = self.policy.timeout, len(self.endpoints)
        return httpx.AsyncClient(
            headers=self.policy.headers, verify=self.policy.ssl_context(), trust_env=True,
            follow_redirects=False, timeout=httpx.Timeout(t, connect=min(t, 10.0)),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        )

    async def worker(self) -> None:
        async with self.client() as client:
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

    async def one(self, client: httpx.AsyncClient, i: int) -> Completion:
        body = self.body(self.requests[i])
        policy = self.policy
        last: Endpoint | None = None
        empties = 0
        for attempt in range(policy.max_retries + 1):
            ep = self.pick(avoid=last)
            try:
                c = await self.attempt(client, ep, body)
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

    async def attempt(self, client: httpx.AsyncClient, ep: Endpoint, body: bytes) -> Completion:
        ep.in_flight += 1
        auth = {"Authorization": ep.authorization.get_secret_value()} if ep.authorization else None
        try:
            resp = await client.post(ep.chat_url, content=body, headers=auth)
        except httpx.TimeoutException:
            raise Retry("timeout", f"no answer within {self.policy.timeout:g} s") from None
        except httpx.RequestError as e:  # refused, reset, torn or malformed answer, proxy failure
            raise Retry("connection", f"{type(e).__name__}: {e}"[:200]) from None
        finally:
            ep.in_flight -= 1
        code = resp.status_code
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
