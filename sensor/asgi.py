"""The HTTP stack kizashi serves on (the sensor and ``kizashi serve``): uvicorn + an ASGI guard.

Every phase of a request has a deadline, so a slow or silent client costs a socket for seconds, not
a thread forever (asyncio: no thread per connection):

* headers: :class:`GuardedH11Protocol` closes a connection whose request line and headers are not
  complete within ``header_timeout`` (uvicorn itself only times out idle keep-alive connections);
  header bytes are capped by h11 (``max_header_bytes``, 431/400 beyond);
* body: :class:`Guard` wraps ``receive``: the body must arrive within ``body_timeout`` and stay
  under ``max_body`` (declared ``Content-Length`` checked before reading, chunked bodies counted as
  they arrive; h11 rejects a malformed ``Content-Length`` such as ``-1`` with 400);
* handling: the whole request within ``request_timeout`` (503), and ``send`` within
  ``send_timeout`` (a client that stops reading is dropped);
* concurrency: ``max_connections`` (uvicorn answers 503 beyond).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["Guard", "GuardedH11Protocol", "Limits", "bind", "json_response", "run"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    request_timeout: float = 60.0
    send_timeout: float = 30.0
    keep_alive: float = 5.0
    max_body: int = 10 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1000


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request line and headers."""

    header_timeout: float = Limits.header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # headers and body go out as two writes: without TCP_NODELAY the body waits for the
            # client's delayed ACK (~40 ms per response on Linux)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # their_state IDLE after feeding data: the request's head is still incomplete
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_header_timer()
        else:
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer for the idle wait

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def json_response_parts(status: int, body: Any, headers: list[tuple[bytes, bytes]] = ()) -> tuple[dict, dict]:
    data = orjson.dumps(body)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]
    return ({"type": "http.response.start", "status": status, "headers": head},
            {"type": "http.response.body", "body": data})


async def json_response(send: Send, status: int, body: Any) -> None:
    start, msg = json_response_parts(status, body)
    await send(start)
    await send(msg)


class _GuardAbort(BaseException):
    """Raised through the app to the guard (BaseException: an app's broad ``except Exception`` must
    not swallow it)."""


class _TooLarge(_GuardAbort):
    pass


class Guard:
    """ASGI middleware: body size and time limits, a deadline for the whole request and for each
    ``send``; errors in the protocol's ``{"error": ...}`` form. ``max_body`` per path prefix may be
    overridden with ``body_limits``."""

    def __init__(self, app: Callable, limits: Limits = Limits()):
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lim = self.limits
        declared = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = -1
        if declared is not None and (declared < 0 or declared > lim.max_body):
            await json_response(send, 413 if declared > 0 else 400,
                                {"error": f"Content-Length must be 0..{lim.max_body} bytes"})
            return
        received = 0
        started = False

        async def guarded_receive() -> dict:
            nonlocal received
            try:
                async with asyncio.timeout(lim.body_timeout):  # a deadline, not a task per call
                    msg = await receive()
            except TimeoutError:
                raise _BodyTimeout() from None
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > lim.max_body:
                    raise _TooLarge()
            return msg

        async def guarded_send(msg: dict) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            try:
                async with asyncio.timeout(lim.send_timeout):
                    await send(msg)
            except TimeoutError:
                raise _SendTimeout() from None

        try:
            async with asyncio.timeout(lim.request_timeout):
                await self.app(scope, guarded_receive, guarded_send)
        except _TooLarge:
            if not started:
                await json_response(send, 413, {"error": f"body exceeds the limit of {lim.max_body} bytes"})
        except _BodyTimeout:
            if not started:
                await json_response(send, 408, {"error": f"body not received within {lim.body_timeout:g} s"})
        except _SendTimeout:
            raise ConnectionError("client stopped reading the response") from None
        except TimeoutError:
            if not started:
                await json_response(send, 503, {"error": f"request not handled within {lim.request_timeout:g} s"})
            else:
                raise


class _SendTimeout(_GuardAbort):
    pass


class _BodyTimeout(_GuardAbort):
    pass


async def read_body(receive: Receive) -> bytes:
    """The whole request body (the guard has bounded its size and time)."""
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (so address errors surface before the server starts, as ``OSError``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def server(app: Callable, sock: socket.socket, limits: Limits = Limits(), *, lifespan: str = "on"):
    """A uvicorn server for ``app`` (wrapped in :class:`Guard`) on the bound ``sock``."""
    import uvicorn

    proto = type("KizashiH11Protocol", (GuardedH11Protocol,), {"header_timeout": limits.header_timeout})
    config = uvicorn.Config(Guard(app, limits), http=proto, lifespan=lifespan, log_level="warning",
                            access_log=False, server_header=False, date_header=False,
                            timeout_keep_alive=int(max(1, limits.keep_alive)),
                            limit_concurrency=limits.max_connections,
                            h11_max_incomplete_event_size=limits.max_header_bytes)
    return uvicorn.Server(config)


def run(app: Callable, sock: socket.socket, limits: Limits = Limits(), *, lifespan: str = "on") -> None:
    """Serve until interrupted."""
    srv = server(app, sock, limits, lifespan=lifespan)
    srv.run(sockets=[sock])
