"""Pure ASGI middleware of the API: bodies bounded before they are read whole, and every answer counted and timed.

A body is refused with 413 from its Content-Length before any of it is read, and, when it comes without one
(chunked) or with one that lies, the moment the bytes received pass the route's limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, bad_request, payload_too_large
from api.metrics import OTHER_ROUTE, ApiMetrics

LimitFor = Callable[[Scope], int]
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"),)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in error.headers.items()]
    # the rest of the body is never read: the connection cannot carry another request after this one
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse a body over `limit_for(scope)` bytes: at once from Content-Length, else while it streams in."""

    def __init__(self, app: ASGIApp, limit_for: LimitFor) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_error(send, bad_request(f"Content-Length {declared[:40]!r} is not a number"))
                return
            if size > limit:
                await send_error(send, payload_too_large(size, limit))
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise payload_too_large(None, limit)
            return message

        await self.app(scope, counted, send)


class Observe:
    """Count and time every answer by route template and status; add the headers every answer carries."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Sequence[Route]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def route_of(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return route.path
        return OTHER_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = self.route_of(scope)
        status = 500  # what an exception that escapes everything becomes

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            self.metrics.observe(route, status, time.perf_counter() - started)
