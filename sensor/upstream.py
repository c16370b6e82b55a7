"""A small keep-alive HTTP/1.1 client for the one upstream model server.

The sensor's request path is one Python process on few cores: a general client (httpx) costs about
1 ms per call here, more than the model on small inputs. This one keeps a pool of asyncio stream
connections, writes each request in one call, reads ``Content-Length`` or chunked answers, and puts
a deadline on connecting and on the whole exchange. Failures are :class:`UpstreamError` with the
status the sensor answers: 502 (unreachable, malformed or oversized answer) or 504 (timed out).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

__all__ = ["Upstream", "UpstreamError"]


class UpstreamError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class Upstream:
    def __init__(self, base_url: str, *, timeout: float = 30.0, connect_timeout: float = 5.0,
                 max_body: int = 64 * 1024 * 1024, pool_size: int = 64):
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"upstream must be http(s)://host[:port], not {base_url!r}")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if u.scheme == "https" else None
        self.prefix = u.path.rstrip("/")
        self.host_header = (u.netloc.rsplit("@", 1)[-1]).encode("latin-1")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.max_body, self.pool_size = max_body, pool_size
        self.idle: list[_Conn] = []

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout):
                r, w = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        except TimeoutError:
            raise UpstreamError(504, "upstream model server did not accept the connection in time") from None
        except OSError as exc:
            raise UpstreamError(502, f"upstream model server unreachable: {exc.strerror or type(exc).__name__}") from None
        return _Conn(r, w)

    async def request(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                      body: bytes | None) -> tuple[int, dict[bytes, bytes], bytes]:
        """(status, lower-cased headers, body) of one exchange; retried once on a stale pooled connection."""
        head = [f"{method} {self.prefix}{target} HTTP/1.1\r\n".encode("latin-1"), b"host: " + self.host_header + b"\r\n"]
        for k, v in headers:
            head.append(k + b": " + v + b"\r\n")
        if body is not None:
            head.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
        head.append(b"\r\n")
        data = b"".join(head) + (body or b"")
        for attempt in (0, 1):
            reused = attempt == 0 and bool(self.idle)  # the retry always opens a fresh connection
            conn = self.idle.pop() if reused else await self._connect()
            try:
                async with asyncio.timeout(self.timeout):
                    conn.writer.write(data)
                    status, rheaders, rbody, keep = await self._read(conn.reader, method)
            except TimeoutError:
                conn.close()
                raise UpstreamError(504, "upstream model server timed out") from None
            except _Stale:
                conn.close()
                if reused:  # the server closed idle connections: the others in the pool are stale too
                    self._drop_idle()
                    continue
                raise UpstreamError(502, "upstream model server closed the connection") from None
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                if reused and isinstance(exc, ConnectionError):
                    self._drop_idle()
                    continue
                raise UpstreamError(502, f"upstream model server failed: {type(exc).__name__}") from None
            except UpstreamError:
                conn.close()
                raise
            if keep and len(self.idle) < self.pool_size:
                self.idle.append(conn)
            else:
                conn.close()
            return status, rheaders, rbody
        raise UpstreamError(502, "upstream model server closed the connection")  # pragma: no cover

    async def _read(self, reader: asyncio.StreamReader, method: str) -> tuple[int, dict[bytes, bytes], bytes, bool]:
        line = await reader.readline()
        if not line:
            raise _Stale()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP/1.x status line")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        size = 0
        while True:
            h = await reader.readline()
            size += len(h)
            if size > 65536:
                raise UpstreamError(502, "upstream answer headers too large")
            if h in (b"\r\n", b"\n"):
                break
            if not h:
                raise asyncio.IncompleteReadError(b"", None)
            k, _, v = h.partition(b":")
            headers[k.strip().lower()] = v.strip()
        keep = parts[0] == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, headers, b"", keep
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks, total = [], 0
            while True:
                n = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += n
                if total > self.max_body:
                    raise UpstreamError(502, "upstream answer exceeds the sensor's size limit")
                chunks.append(await reader.readexactly(n))
                await reader.readexactly(2)
            return status, headers, b"".join(chunks), keep
        if b"content-length" in headers:
            n = int(headers[b"content-length"])
            if n < 0 or n > self.max_body:
                raise UpstreamError(502, "upstream answer exceeds the sensor's size limit")
            return status, headers, await reader.readexactly(n), keep
        parts_, total = [], 0  # no length: the body ends with the connection
        while chunk := await reader.read(65536):
            total += len(chunk)
            if total > self.max_body:
                raise UpstreamError(502, "upstream answer exceeds the sensor's size limit")
            parts_.append(chunk)
        return status, headers, b"".join(parts_), False

    def _drop_idle(self) -> None:
        for c in self.idle:
            c.close()
        self.idle.clear()

    async def aclose(self) -> None:
        self._drop_idle()


class _Stale(Exception):
    """A pooled connection the server had already closed (no status line)."""
