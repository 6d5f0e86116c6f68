"""One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer: all a teacher job needs.

A job at concurrency 256 against a fast server spends its time in the client, not waiting:
httpcore (with anyio, h11 and their per-request validation) cost ~0.5 ms of CPU per request
here, so one core topped out near 1,000 requests/s (bench/teacher_client.py). This speaks
just the part of HTTP/1.1 a chat endpoint uses, straight on asyncio streams: a request line,
fixed headers, a Content-Length body; a response with Content-Length, chunked, or
read-to-close body. TLS goes through the stream's own ssl support. An endpoint behind a
proxy keeps httpcore, which speaks proxies (`ProxiedConnection`).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpcore

T = TypeVar("T")
HEAD_LIMIT = 1 << 20  # bytes of status line + headers before we call the answer malformed


class BadResponse(Exception):
    """The server's bytes are not an HTTP/1.1 response we can read."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    content: bytes


@dataclass
class Target:
    """Where one endpoint's chat requests go, and the fixed part of each request."""

    host: str
    port: int
    tls: bool
    url: bytes  # the absolute URL without credentials, for the proxied path
    headers: list[tuple[bytes, bytes]]  # fixed headers, Host first; Content-Length is per request
    head: bytes = field(init=False)  # request line and fixed headers, as sent

    def __post_init__(self) -> None:
        path = urllib.parse.urlsplit(self.url.decode()).path.encode() or b"/"
        self.head = b"POST %s HTTP/1.1\r\n%s" % (path, b"".join(b"%s: %s\r\n" % kv for kv in self.headers))

    @classmethod
    def post_to(cls, url: str, headers: dict[str, str]) -> Target:
        """A target for POSTs to `url`. Credentials in it (user:password@host) become Basic
        auth unless `headers` already authorize, as httpx does; they never reach the Host line."""
        parts = urllib.parse.urlsplit(url)
        host, tls = parts.hostname or "", parts.scheme == "https"
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
        fixed = [("Host", netloc), *headers.items(), ("Accept-Encoding", "identity")]  # never decompressed
        if parts.username is not None and not any(k.lower() == "authorization" for k in headers):
            login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            fixed.append(("Authorization", "Basic " + base64.b64encode(login.encode()).decode()))
        clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        return cls(host, parts.port or (443 if tls else 80), tls, clean.encode(),
                   [(k.encode(), v.encode()) for k, v in fixed])


async def within(seconds: float, work: Awaitable[T]) -> T:
    """`work`, or TimeoutError after `seconds` (a cheap timer on 3.11+, wait_for before)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await work
    return await asyncio.wait_for(work, seconds)


class DirectConnection:
    """A worker's own connection to one endpoint, reopened when the server closes it."""

    def __init__(self, target: Target, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        self.target = target
        self.ssl_context = ssl_context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, connect_timeout: float, timeout: float) -> Response:
        idle_closed = self.reader is not None and self.reader.at_eof()
        if idle_closed or (self.writer is not None and self.writer.is_closing()):
            self.close()  # the server closed it while it was idle (keep-alive timeout): not a failure
        if self.writer is None:
            await within(connect_timeout, self._connect())
        try:
            return await within(timeout, self._exchange(body))
        except BaseException:
            self.close()  # an error, timeout or cancellation leaves the stream mid-answer: never reuse it
            raise

    async def _connect(self) -> None:
        t = self.target
        self.reader, self.writer = await asyncio.open_connection(
            t.host, t.port, ssl=self.ssl_context() if t.tls else None,
            server_hostname=t.host if t.tls else None, limit=HEAD_LIMIT)

    async def _exchange(self, body: bytes) -> Response:
        assert self.reader is not None and self.writer is not None
        self.writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (self.target.head, len(body), body))
        while True:  # an interim 1xx answer (103 Early Hints from a CDN) precedes the real one
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
            if not 100 <= int(parts[1]) < 200:
                break
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            content = await self._chunked()
        elif "content-length" in headers:
            content = await self.reader.readexactly(int(headers["content-length"]))
        else:  # no length: the body runs until the server closes
            content = await self.reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
            self.close()
        return Response(int(parts[1]), headers, content)

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        chunks = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(chunks)
            chunks.append((await self.reader.readexactly(size + 2))[:-2])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def aclose(self) -> None:
        self.close()


class ProxiedConnection:
    """An endpoint behind HTTP(S)_PROXY: httpcore, one connection, the same interface."""

    def __init__(self, target: Target, ssl_context: Callable[[], ssl.SSLContext],
                 proxy: httpcore.Proxy) -> None:
        self.target = target
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context() if target.tls else None, proxy=proxy, max_connections=1)

    async def post(self, body: bytes, connect_timeout: float, timeout: float) -> Response:
        extensions: dict[str, Any] = {"timeout": {"connect": connect_timeout, "read": timeout,
                                                  "write": timeout, "pool": timeout}}
        try:
            resp = await self.pool.request(
                b"POST", self.target.url, content=body, extensions=extensions,
                headers=[*self.target.headers, (b"Content-Length", str(len(body)).encode())])
        except httpcore.TimeoutException:
            raise TimeoutError from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError) as e:
            raise ConnectionError(f"{type(e).__name__}: {e}") from None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
        return Response(resp.status, headers, resp.content)

    async def aclose(self) -> None:
        await self.pool.aclose()
