"""Raw ASGI pieces under the routes, each reading the ``receive`` channel itself: the body-size limit
(``BodyLimit``) and the watch for a client that has left (``_client_gone``)."""
from __future__ import annotations

from fastapi import Request

from .requests import too_large


async def _client_gone(request: Request) -> None:
    """Returns once the client has closed the connection: the ASGI server's http.disconnect, which follows the
    (already read) body. Read by a task of its own: Starlette's ``is_disconnected()`` never sees it through an
    @app.middleware("http") function, whose receive it cancels on the spot."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class BodyLimit:
    """ASGI middleware: 413 once a request body passes ``limit`` bytes, declared (Content-Length, checked
    before this) or streamed (chunked transfer encoding declares none): the body is read here, up to the
    limit, and handed on whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                return await self.app(scope, _replay([message], receive), send)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await too_large(self.limit)(scope, receive, send)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list, receive):
    """An ASGI receive that returns ``messages`` first, then reads on (a disconnect, later)."""
    async def replayed():
        return messages.pop(0) if messages else await receive()
    return replayed
