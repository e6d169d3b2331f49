"""Sleep mode (SPEC 6.7): the two HTTP calls that put a server to sleep and wake it.

vLLM's ``POST /sleep?level=1`` frees the GPU and keeps the weights in host memory;
``POST /wake_up`` brings them back in about a second, where a cold start takes tens of seconds.
Any server with such endpoints can be configured (``models.<id>.sleep``). The Upstream decides
when to call them (``evict`` and ``start``); this module only makes one call and says whether it
worked: a 2xx answer within the time allowed.

httpx, not the forwarding client: these calls are rare and off the hot path (ARCHITECTURE
rule 10), and ``trust_env=False`` keeps a loopback call away from ``$HTTP_PROXY``.
"""

from __future__ import annotations

import httpx
import trio

from llama_swap_trio.config.memory import Endpoint
from llama_swap_trio.upstream.probe import Target


async def call_endpoint(target: Target, endpoint: Endpoint, within: float) -> str | None:
    """Make the call; None when the server answered 2xx in time, else why not (for the log)."""
    url = target.url(endpoint.path)
    with trio.move_on_after(within):
        try:
            async with httpx.AsyncClient(trust_env=False, verify=False, timeout=within) as client:
                response = await client.request(endpoint.method, url)
        except httpx.HTTPError as exc:
            return f"{endpoint} failed: {type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"{endpoint} answered {response.status_code}: {response.text[:200]}"
    return f"{endpoint} did not answer within {within:g} s"
