"""Any OpenAI-compatible chat endpoint: vLLM, SGLang, Ollama, llama.cpp, LiteLLM, APIs.

The backend owns what a user configures (URLs, key, retries, backoff) and the health
check; one batch of requests runs as a worker pool in `http_job`.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import random
import ssl
import urllib.parse
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from undo.config import TeacherConfig, redact_url
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
from undo.teacher.http_job import Endpoint, JobPolicy, error_message, redirected, run_job

T = TypeVar("T")

HEALTH_TIMEOUT = 8.0
USER_AGENT = {"User-Agent": "undo-distill"}


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    # asyncio.run refuses to nest; inside a running loop (a notebook, an async
    # caller) the job runs on a private thread with its own loop instead.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _split_credentials(url: str) -> tuple[str, SecretStr | None]:
    """`url` without its user:password@ part, and that part as a Basic Authorization header."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    plain = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return plain, SecretStr("Basic " + base64.b64encode(login.encode()).decode())


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
        http = cfg.openai
        urls = [http.base_url] if isinstance(http.base_url, str) else list(http.base_url or [])
        if not urls:
            raise UserError(
                "teacher.openai.base_url is required for backend 'openai' "
                "(e.g. http://localhost:8000/v1, or a list of such URLs)"
            )
        for u in urls:
            parts = urllib.parse.urlsplit(u)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UserError(
                    f"teacher.openai.base_url {redact_url(u)!r} is not an http(s) URL "
                    "(e.g. http://localhost:8000/v1)"
                )
        self.model = cfg.model
        # credentials leave the URL at once: only the SecretStr holds them
        split = [_split_credentials(u.rstrip("/")) for u in urls]
        self.base_urls = [u for u, _ in split]
        self._url_auth = [auth for _, auth in split]
        self.concurrency = http.concurrency
        self.timeout = http.timeout
        self.max_retries = http.max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.api_key_env = http.api_key_env
        self._api_key: SecretStr | None = None
        self._ssl: ssl.SSLContext | None = None
        if http.api_key_env:
            value = os.environ.get(http.api_key_env)
            if not value:
                raise UserError(
                    f"teacher.openai.api_key_env names ${http.api_key_env}, but that variable is "
                    "not set (export it, or set teacher.openai.api_key_env: null for a local server)"
                )
            self._api_key = SecretStr(f"Bearer {value}")

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_urls={self.base_urls!r})"

    # --- shared helpers ----------------------------------------------------

    def _authorization(self, k: int) -> SecretStr | None:
        """Endpoint k's Authorization header: the API key, else the URL's user:password."""
        return self._api_key if self._api_key is not None else self._url_auth[k]

    def _auth_header(self, k: int) -> dict[str, str]:
        auth = self._authorization(k)
        return {"Authorization": auth.get_secret_value()} if auth is not None else {}

    def _fatal_for_status(self, url: str, code: int, body: bytes) -> Exception:
        """4xx answers that no retry can fix: a user error, or a failure of this request."""
        msg = error_message(body)
        if code in (401, 403):
            hint = (
                f"set ${self.api_key_env} to a valid key"
                if self.api_key_env
                else "set teacher.openai.api_key_env to the name of the variable holding the key"
            )
            return UserError(f"teacher endpoint {url} rejected the API key (HTTP {code}); {hint}")
        if code == 404:
            return UserError(
                f"teacher endpoint {url} has no model '{self.model}' (HTTP 404: {msg}); "
                "check teacher.model and teacher.openai.base_url (it usually ends in /v1)"
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
        with httpx.Client(timeout=timeout, headers=USER_AGENT, verify=self._ssl_context()) as client:
            for k, url in enumerate(self.base_urls):
                self._check_endpoint(client, url, self._auth_header(k))

    def _check_endpoint(self, client: httpx.Client, url: str, auth: dict[str, str]) -> None:
        resp = self._health_request(client, "GET", url, "/models", headers=auth)
        if resp.status_code == 404:  # some servers have no model list: try one token
            self._check_by_chat(client, url, auth)
            return
        if resp.status_code >= 400:
            raise self._health_status_error(url, resp)
        try:
            served = [str(m["id"]) for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            self._check_by_chat(client, url, auth)
            return
        if self.model not in served:
            listing = ", ".join(served[:20]) + (" ..." if len(served) > 20 else "")
            raise UserError(
                f"teacher model '{self.model}' is not served by {url}; it serves: "
                f"{listing or '(nothing)'} (set teacher.model to one of these)"
            )

    def _check_by_chat(self, client: httpx.Client, url: str, auth: dict[str, str]) -> None:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say OK."}],
            "max_tokens": 1,
            "temperature": 0.0,
        }
        resp = self._health_request(client, "POST", url, "/chat/completions", json=body, headers=auth)
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
            raise redirected(url, resp.headers.get("location", "?"))
        return resp

    def _health_status_error(self, url: str, resp: httpx.Response) -> Exception:
        if resp.status_code in (401, 403, 404):
            return self._fatal_for_status(url, resp.status_code, resp.content)
        return UserError(
            f"teacher endpoint {url} is not ready (HTTP {resp.status_code}: "
            f"{error_message(resp.content)})"
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

    def _endpoints(self) -> list[Endpoint]:
        eps = []
        for k, url in enumerate(self.base_urls):
            parts = urllib.parse.urlsplit(url)
            chat = urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))
            eps.append(Endpoint(url, chat, self._authorization(k)))
        return eps

    async def _complete(
        self,
        requests: list[Request],
        usage: Usage,
        progress: ProgressFn | None,
        on_result: ResultFn | None,
    ) -> list[Completion]:
        policy = JobPolicy(
            model=self.model, timeout=self.timeout, max_retries=self.max_retries, backoff=self._backoff,
            cooldown_base=self.backoff_base, ssl_context=self._ssl_context,
            headers={**USER_AGENT, "Content-Type": "application/json", "Accept": "application/json"},
            fatal_for_status=self._fatal_for_status,
        )
        return await run_job(requests, self._endpoints(), policy, usage, concurrency=self.concurrency,
                             progress=progress, on_result=on_result)
