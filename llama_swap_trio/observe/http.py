"""The HTTP side of observability: ``GET /metrics`` and ``GET /api/activity`` (SPEC 6.2).

Both sit behind the app's API key check like every other endpoint but ``/health``.

``/api/activity?limit=N&model=M``: ``{"requests": [...]}``, the latest finished requests (the
feed's ``request`` events without their ``type``), newest first. ``limit`` defaults to 100 and is
capped at the ring's size; ``model`` takes an id or an alias. A ``limit`` that is not a positive
integer is a 400 ``invalid_request``; an unknown ``model`` gives an empty list (a model removed
by a reload still has its history).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.errors import send_bytes, send_json
from llama_swap_trio.observe.activity import DEFAULT_LIMIT
from llama_swap_trio.observe.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from llama_swap_trio.observe import Observability


class ObserveViews:
    """The two endpoints' handlers, for the app's route table."""

    def __init__(self, config: Config, observe: Observability) -> None:
        self._config = config
        self._observe = observe

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._observe.metrics.render()
        await send_bytes(send, 200, body, CONTENT_TYPE.encode())

    async def activity(self, scope: Scope, receive: Receive, send: Send) -> None:
        query: bytes = scope.get("query_string", b"")
        params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
        limit = DEFAULT_LIMIT
        if "limit" in params:
            text = params["limit"].strip()
            if not text.isdigit() or int(text) < 1:
                raise errors.invalid_request(f"limit must be a positive integer, got {text!r}")
            limit = int(text)
        model = params.get("model") or None
        if model is not None:
            resolved = self._config.resolve(model)
            if resolved is not None:
                model = resolved.id
        records = self._observe.activity.recent(limit, model)
        await send_json(send, 200, {"requests": records})
