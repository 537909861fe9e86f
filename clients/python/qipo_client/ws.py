"""`/act` over a websocket (`WS /act/ws`), sync and async; needs the `ws` extra (`websockets`).

One connection carries a stream of states; each message gets one reply in its own encoding (binary:
msgpack, text: JSON), errors in-band as `{"status", "detail"}`. The same operations as the HTTP clients
(`qipo_client._ops`) run here, so the contract and the NoAction rules are identical.

A reply that misses its timeout leaves the connection out of step (the late reply would answer the next
state), so a timeout closes it; the next call opens a new one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

from qipo_client import codec
from qipo_client._base import AsyncActs, SyncActs
from qipo_client._ops import ActReply, Call, Op, Reply

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as AsyncConnection
    from websockets.sync.client import ClientConnection

T = TypeVar("T")


def _ws_url(base_url: str) -> str:
    """http(s)://host → ws(s)://host/act/ws; a ws(s):// URL is taken as it is."""
    url = base_url.rstrip("/")
    if url.startswith(("ws://", "wss://")):
        return url
    if url.startswith(("http://", "https://")):
        return "ws" + url[len("http") :] + "/act/ws"
    raise ValueError(f"{base_url!r} is not an http(s):// or ws(s):// URL")


def _message(call: Call, media: str) -> Union[bytes, str]:
    if call.path != "/act":
        raise ValueError(f"{call.method} {call.path} is HTTP only; use qipo_client.PolicyClient for it")
    return call.content if media == codec.MSGPACK else call.content.decode()


def _reply(message: Union[bytes, str], media: str) -> Reply:
    content = message if isinstance(message, bytes) else message.encode()
    return Reply(200, content, media)  # an error reply carries its own status inside


def _finish(op: Op[T], reply: Reply) -> T:
    try:
        op.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result
    raise RuntimeError("a websocket operation asked for a second exchange")


def _import() -> Any:
    try:
        import websockets
    except ImportError as exc:  # the optional extra
        raise ImportError("the websocket clients need `pip install 'qipo-client[ws]'`") from exc
    return websockets


def _opened(url: str) -> str:
    _import()  # fail at construction, with the install command, when the extra is missing
    return _ws_url(url)


class WebSocketClient(SyncActs):
    """Blocking websocket client; opens its connection on first use. Use as a context manager."""

    def __init__(self, url: str, timeout: float = 1.0, format: str = "msgpack") -> None:
        super().__init__(format)
        self.url, self.timeout = _opened(url), timeout
        self._conn: Optional[ClientConnection] = None

    def _drive(self, op: Op[ActReply]) -> ActReply:
        call = next(op)
        assert isinstance(call, Call)
        timeout = call.timeout or self.timeout
        try:
            if self._conn is None:
                from websockets.sync.client import connect

                # Entered as a context manager (newer websockets deprecate a bare connect()); see close().
                self._conn = connect(self.url, open_timeout=timeout).__enter__()
            self._conn.send(_message(call, self.media))
            reply = _reply(self._conn.recv(timeout=timeout), self.media)
        except (OSError, TimeoutError, _import().exceptions.WebSocketException) as exc:
            self.close()
            reply = Reply(0, error=f"no reply over {self.url}: {type(exc).__name__} {exc}")
        return _finish(op, reply)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> WebSocketClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncWebSocketClient(AsyncActs):
    """asyncio websocket client; one exchange at a time per connection (open one client per robot)."""

    def __init__(self, url: str, timeout: float = 1.0, format: str = "msgpack") -> None:
        super().__init__(format)
        self.url, self.timeout = _opened(url), timeout
        self._conn: Optional[AsyncConnection] = None
        self._lock: Optional[asyncio.Lock] = None  # made in the loop that uses it (3.9 binds it at creation)

    async def _drive(self, op: Op[ActReply]) -> ActReply:
        call = next(op)
        assert isinstance(call, Call)
        timeout = call.timeout or self.timeout
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # replies come in order: one state in flight per connection
            try:
                if self._conn is None:
                    from websockets.asyncio.client import connect

                    self._conn = await connect(self.url, open_timeout=timeout)
                await self._conn.send(_message(call, self.media))
                reply = _reply(await asyncio.wait_for(self._conn.recv(), timeout), self.media)
            except (OSError, asyncio.TimeoutError, _import().exceptions.WebSocketException) as exc:
                await self.aclose()
                reply = Reply(0, error=f"no reply over {self.url}: {type(exc).__name__} {exc}")
        return _finish(op, reply)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> AsyncWebSocketClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
