"""Refuse an upload the client has not sent yet, and end the connection cleanly.

A client that sends ``Expect: 100-continue`` (curl does for any upload over
1 MB) holds its body back until the server asks for it; uvicorn asks only when
the app first reads the body. A 503 (or 401, 413...) decided before that costs
the client no upload at all, but the body it promised is still owed on the
connection, so the answer must close it: otherwise the next request's bytes
would be read as this one's body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ExpectContinueMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _expects_continue(scope):
            await self.app(scope, receive, send)
            return
        body_asked = False

        async def receive_marking() -> Message:
            nonlocal body_asked
            body_asked = True
            return await receive()

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_asked:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message["headers"] = [*headers, (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive_marking, send_closing)


def _expects_continue(scope: Scope) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"])
