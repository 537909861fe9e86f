"""ASGI middleware of the server: the request-body size limit, and the fast lane of `POST /act`."""

from __future__ import annotations

import orjson
from starlette import status
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """413 for a body over the limit: at once when Content-Length says so, else while it streams in.

    Pure ASGI (no BaseHTTPMiddleware): it costs one header scan on the hot path.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._reject(send, f"body of {int(value)} bytes")
                    return
                # The HTTP parser never delivers more than Content-Length bytes: nothing left to watch.
                await self.app(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send, "streamed body")

    async def _reject(self, send: Send, what: str) -> None:
        body = orjson.dumps(
            {"detail": f"{what} is over the {self.max_bytes}-byte limit (max_body_bytes); send fewer states"}
        )
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send(
            {"type": "http.response.start", "status": status.HTTP_413_CONTENT_TOO_LARGE, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})


class ActFastLane:
    """`POST /act` straight to its handler, past Starlette's exception middleware, FastAPI's exit stack and
    the router's scan of the routes.

    The handler (`ActService.asgi`) answers every outcome itself and needs nothing the router puts in the
    scope, so those layers had no work to do for it, yet cost ~30 µs per request in process
    (docs/bench/serve-profile.md). It sits inside `BodySizeLimit` and the server-error middleware, so the
    413 and an unexpected 500 answer as before; every other method and path (`GET /act` → 405 included)
    goes the usual way, and the route stays in `app.routes` for the OpenAPI schema.
    """

    def __init__(self, app: ASGIApp, act: ASGIApp, path: str = "/act") -> None:
        self.app = app
        self.act = act
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == self.path
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            await self.act(scope, receive, send)
        else:
            await self.app(scope, receive, send)
