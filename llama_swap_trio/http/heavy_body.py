"""Heavy JSON bodies: read off the event loop, in a helper process (SPEC 6.1, ARCHITECTURE 8).

``json.loads`` holds the GIL for its whole run, so a worker thread does not help: measured on
the shared 2-core machine, a 1 MiB body of ``{},{},...`` took 190 ms (20 MB/s of tiny values)
and a 100 MB one took 2.8 GB and stalled ``/health`` and every stream for 5.3 s; msgspec, which
needs no objects for what it skips, still holds the GIL for 1.6 s on the 100 MB one. So a body
whose estimated parse cost is above :data:`INLINE_BUDGET_US` goes to a helper process
(:mod:`.json_worker`: msgspec, top level only, with ``json.loads`` semantics as the fallback),
one persistent process reused for every heavy body (:mod:`.json_helper`: started on the first,
replaced when it dies, bounded queue); the daemon only pipes the bytes through trio, a slice per
write, which never blocks the loop. The estimate is three
``bytes.count`` passes (C speed; none below :data:`SMALL_BODY`, and none above
:data:`LARGE_BODY`, which always goes to the helper), so a 1 KB chat request keeps the inline
path with no extra work, and long conversations (mostly long strings, ~14 ms per MB) stay inline
up to about a megabyte.

A heavy body is routed on its ``model`` and ``stream`` alone; it is forwarded as the client sent
it unless ``use_model_name`` or ``filters`` change it, which the helper does too (the body is
handed back rewritten, members it did not touch byte for byte).
"""

from __future__ import annotations

import json

from llama_swap_trio import errors
from llama_swap_trio.config.model import ModelConfig
from llama_swap_trio.http.asgi import Scope
from llama_swap_trio.http.json_helper import helper
from llama_swap_trio.http.request import ParsedRequest, extract_model, json_kind
from llama_swap_trio.http.rewrite import Rewritten, rewrite_request, with_content_length

#: bodies up to this size are always parsed inline (their worst case is a few milliseconds)
SMALL_BODY = 16 * 1024
#: bodies above this size always go to the helper (counting them would itself take a while)
LARGE_BODY = 2 * 1024 * 1024
#: estimated microseconds of ``json.loads`` above which a body is read by the helper
INLINE_BUDGET_US = 20_000.0
#: estimated cost per byte, per ``{``/``[`` and per ``,`` (measured on the loaded 2-core machine:
#: 14 ms per MB of long strings, 190 ms per MB of ``{},``; rounded up)
_US_PER_BYTE = 0.015
_US_PER_CONTAINER = 0.5
_US_PER_COMMA = 0.05


def parse_cost_us(body: bytes) -> float:
    """The estimated time ``json.loads(body)`` would hold the event loop, in microseconds."""
    if len(body) <= SMALL_BODY:
        return 0.0
    containers = body.count(b"{") + body.count(b"[")
    return (
        len(body) * _US_PER_BYTE + containers * _US_PER_CONTAINER + body.count(b",") * _US_PER_COMMA
    )


def is_heavy(scope: Scope, body: bytes) -> bool:
    """A JSON body that would hold the event loop too long if parsed inline."""
    size = len(body)
    if size <= SMALL_BODY or not json_kind(scope, body):
        return False
    return size > LARGE_BODY or parse_cost_us(body) > INLINE_BUDGET_US


async def parse_heavy(scope: Scope, body: bytes) -> ParsedRequest:
    """:func:`~.request.extract_model` for a heavy JSON body, read by the helper process.

    Raises:
        ProxyError: 400 ``invalid_json``, ``invalid_request`` or ``model_required``, as for a
            small body.
    """
    status, payload = await helper().call(b"s", b"", body)
    if status != 0:
        raise errors.invalid_json(f"the body could not be read ({_why(payload)})")
    answer = json.loads(payload)
    if not answer["ok"]:
        raise errors.ProxyError(400, "invalid_request_error", answer["code"], answer["message"])
    stream: bool = answer["stream"]
    if answer["model"]:
        return ParsedRequest(answer["model"], "json", None, stream, heavy=True)
    query_only = extract_model(scope, b"")  # ``?model=``, else 400 model_required
    return ParsedRequest(query_only.model, "query", None, stream, heavy=True)


async def rewrite_any(
    scope: Scope,
    body: bytes,
    parsed: ParsedRequest,
    model: ModelConfig,
    requested: str | None = None,
) -> Rewritten:
    """:func:`~.rewrite.rewrite_request`, by the helper process for a heavy JSON body."""
    if not parsed.heavy:
        return rewrite_request(scope, body, parsed, model, requested)
    if requested is None:
        requested = parsed.model
    new_name = model.use_model_name or requested
    if new_name == parsed.model:
        new_name = ""
    filters = model.filters
    if parsed.source == "query":  # the model came from ``?model=``: only the query changes
        return rewrite_request(scope, body, parsed, model, requested)
    if not new_name and not (
        filters.strip_params or filters.set_params or requested in filters.set_params_by_id
    ):
        return Rewritten(scope, body)
    instructions = json.dumps(
        {
            "use_model_name": new_name,
            "requested": requested,
            "filters": {
                "strip_params": list(filters.strip_params),
                "set_params": dict(filters.set_params),
                "set_params_by_id": {k: dict(v) for k, v in filters.set_params_by_id.items()},
            },
        },
        default=str,
    ).encode()
    status, new_body = await helper().call(b"r", instructions, body)
    if status != 0:
        raise errors.invalid_json(f"the body could not be rewritten ({_why(new_body)})")
    return Rewritten(with_content_length(scope, len(new_body)), new_body)


def _why(payload: bytes) -> str:
    return payload.decode("utf-8", "replace").strip()[-500:] or "no reason given"
