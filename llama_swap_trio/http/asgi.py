"""ASGI type aliases shared by the HTTP layer.

Hypercorn speaks plain ASGI 3 dictionaries; we type them loosely (a message is a mapping of
str to anything) rather than pulling in a typing package, and keep the aliases in one place so
every module names them the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "answer_lifespan"]


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Answer startup and shutdown (hypercorn-trio crashes on an app that ignores lifespan)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
