"""``POST /api/config/reload`` (SPEC 6.4): reload the configuration and say what it did.

The answer is the ``reload`` feed event: 200 ``{"type": "reload", "ok": true, "kept": [...],
"restarted": [...], "added": [...], "removed": [...]}``, or 400 with ``"ok": false`` and
``errors`` (the problem lines) when the file is invalid; the old configuration then stays.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.errors import send_json

Reload = Callable[[], Awaitable[Mapping[str, object]]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


def reload_handler(reload: Reload) -> Handler:
    """The route's handler around the daemon's reload."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        outcome = await reload()
        await send_json(send, 200 if outcome.get("ok") else 400, dict(outcome))

    return handle
