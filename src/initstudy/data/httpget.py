"""HTTP(S) GET under a whole-download deadline and a body cap, with failures as one-line reasons.

urllib's ``timeout`` bounds each socket operation, not the download: a server that drips a byte every
second keeps every ``recv`` within the timeout forever (in the status line, the headers or the body). Here
every receive waits at most ``min(timeout_s, time left before the deadline)``, through urllib's public
extension points: handlers for ``build_opener``, a socket subclass for plain HTTP, and
``SSLContext.sslsocket_class`` for HTTPS (the TLS handshake itself is bounded by the socket timeout).

Why not an HTTP client library: requests and urllib3 (in the environment through MLflow) also bound each
read rather than the download, and none of the clients here caps a body's size, which a hostile or broken
source must not be able to grow without limit.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

from initstudy.data.bounded import CorruptGzip, Deadline, DeadlineExceeded, LimitExceeded, read_bounded

USER_AGENT = "initstudy-download"


class _DeadlineSocket(socket.socket):
    """A plain socket whose every receive is bounded by the per-read timeout and the deadline."""

    deadline: Deadline | None = None
    read_timeout: float = 10.0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        with _bounded(self):
            return super().recv(bufsize, flags)

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int = 0, flags: int = 0) -> int:
        with _bounded(self):
            return super().recv_into(buffer, nbytes, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS counterpart: ``recv_into`` is what ``socket.makefile`` (and so http.client) calls.

    ``deadline`` is set once the handshake is done; until then the socket's own timeout bounds each step.
    """

    deadline: Deadline | None = None
    read_timeout: float = 10.0

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        with _bounded(self):
            return super().recv(buflen, flags)

    def recv_into(self, buffer: bytearray | memoryview, nbytes: int | None = None, flags: int = 0) -> int:
        with _bounded(self):
            return super().recv_into(buffer, nbytes, flags)


@contextlib.contextmanager
def _bounded(sock: _DeadlineSocket | _DeadlineSSLSocket) -> Iterator[None]:
    """Wait at most min(per-read timeout, time left); a timeout past the deadline is reported as such."""
    if sock.deadline is None:
        yield
        return
    sock.settimeout(sock.deadline.budget(sock.read_timeout))
    try:
        yield
    except TimeoutError:
        sock.deadline.check()
        raise


class _DeadlineConnection:
    """Mixin for http.client's connections: connecting (TCP, and TLS for HTTPS) is bounded by the time left,
    then the socket bounds every read (``_bound_socket``)."""

    sock: Any
    timeout: Any

    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def connect(self) -> None:
        read_timeout = float(self.timeout)
        self.timeout = self.deadline.budget(read_timeout)
        super().connect()  # type: ignore[misc]
        self._bound_socket(read_timeout)

    def _bound_socket(self, read_timeout: float) -> None:
        raise NotImplementedError


class _DeadlineHTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    def _bound_socket(self, read_timeout: float) -> None:
        bounded = _DeadlineSocket(fileno=self.sock.detach())
        bounded.deadline, bounded.read_timeout = self.deadline, read_timeout
        bounded.settimeout(self.timeout)
        self.sock = bounded


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    def _bound_socket(self, read_timeout: float) -> None:
        # The TLS socket is already a _DeadlineSSLSocket (the context's sslsocket_class).
        self.sock.deadline, self.sock.read_timeout = self.deadline, read_timeout


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_DeadlineHTTPConnection, deadline=self.deadline), req)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Certificate verification as urllib's default; built once (loading the CA store takes ~50 ms)."""
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket
    return context


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        context = _ssl_context()
        super().__init__(context=context)
        self.deadline, self.context = deadline, context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_DeadlineHTTPSConnection, deadline=self.deadline)
        return self.do_open(connection, req, context=self.context)


def http_get(url: str, max_bytes: int, timeout_s: float, deadline: Deadline, label: str = "") -> bytes:
    """The body of ``url``: at most ``max_bytes``, within ``deadline``, ``timeout_s`` per read at most.

    Raises the underlying error (``urllib.error.URLError``, ``http.client.HTTPException``, ``OSError``,
    ``ValueError`` for a malformed URL, :class:`LimitExceeded`); :func:`reason` turns it into one line.
    """
    opener = urllib.request.build_opener(_DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    with opener.open(request, timeout=deadline.budget(timeout_s)) as response:
        declared = _content_length(response)
        if declared is not None and declared > max_bytes:
            raise LimitExceeded(f"announces {declared:,} bytes, more than the {max_bytes:,} allowed; refused")
        with tqdm(
            total=declared, unit="B", unit_scale=True, desc=label, disable=not sys.stderr.isatty()
        ) as bar:
            body = read_bounded(response.read1, max_bytes, "the body", deadline, bar.update)
    if declared is not None and len(body) < declared:
        raise http.client.IncompleteRead(body, declared - len(body))
    return body


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.strip().isdigit() else None


def reason(error: BaseException) -> str:
    """A short, single-line reason for a failed GET, naming the kind of failure."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        inner = error.reason
        if isinstance(inner, BaseException):
            return reason(inner)
        return _flat(f"invalid URL: {inner}" if "url type" in str(inner) else f"unreachable: {inner}")
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without a response (RemoteDisconnected)"
    if isinstance(error, http.client.BadStatusLine):
        return _flat(f"bad HTTP status line {str(error.line)[:60]!r} (BadStatusLine)")
    if isinstance(error, http.client.IncompleteRead):
        received = len(error.partial)
        return f"connection closed mid-body after {received:,} bytes, {error.expected:,} more expected (IncompleteRead)"
    if isinstance(error, http.client.InvalidURL):
        return _flat(f"invalid URL: {error}")
    if isinstance(error, http.client.HTTPException):
        return _flat(f"HTTP protocol error ({type(error).__name__}): {error}")
    if isinstance(error, LimitExceeded | CorruptGzip):
        return _flat(str(error))
    if isinstance(error, DeadlineExceeded):
        return str(error)
    if isinstance(error, TimeoutError):
        return "no data within the per-read timeout (timed out)"
    if isinstance(error, OSError):
        return _flat(f"{type(error).__name__}: {error.strerror or error}")
    if isinstance(error, ValueError):
        return _flat(f"invalid URL: {error}")
    return _flat(f"{type(error).__name__}: {error}")


def _flat(text: str, limit: int = 240) -> str:
    """One line, bounded: the reason ends up in a one-line error message."""
    return " ".join(text.split())[:limit]
