"""The profiles API (SPEC 6.1, 6.6): list, activate, deactivate.

- ``GET /api/profiles``: ``{"active": NAME|null, "profiles": [{name, description, pins}]}``.
- ``POST /api/profiles/{name}``: make ``name`` the active profile (one at a time); 404 unknown.
- ``DELETE /api/profiles/active``: no active profile.
- ``PUT /api/profiles/active`` with ``{"name": NAME|null}``: llama-swap's form of the two above,
  so its web UI and scripts keep working.

Activation and deactivation answer ``{"msg": "ok", "active": NAME|null}``; a change is also
published on the feed as ``{"type": "profile", "active": NAME|null}``. The active profile lives in
the generation's :class:`~llama_swap_trio.http.names.Names`, so none is active after a reload.
"""

from __future__ import annotations

import json

from llama_swap_trio import errors
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.http.asgi import Receive, Scope, Send
from llama_swap_trio.http.errors import send_json
from llama_swap_trio.http.names import Names
from llama_swap_trio.http.request import read_body

PROFILES_PATH = "/api/profiles"
PROFILES_PREFIX = "/api/profiles/"
#: PUT (llama-swap's form) and DELETE are served on this path only; POST on any name
PROFILES_ACTIVE = "/api/profiles/active"
#: the PUT body is a name; nothing bigger is needed
_MAX_BODY = 64 * 1024


async def _put_name(scope: Scope, receive: Receive) -> str | None:
    body = await read_body(scope, receive, _MAX_BODY)
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise errors.invalid_json(str(exc)) from None
    if not isinstance(value, dict) or "name" not in value:
        raise errors.invalid_request('expected {"name": PROFILE} or {"name": null}')
    name = value["name"]
    if name is not None and not isinstance(name, str):
        raise errors.invalid_request("profile name must be a string or null")
    return name


async def handle_profiles(
    names: Names, bus: EventBus, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one request under ``/api/profiles`` (the app has checked the key and the method:
    GET on the list, PUT and DELETE on ``/api/profiles/active`` only, POST on any name)."""
    method: str = scope["method"]
    path: str = scope["path"]
    if path == PROFILES_PATH:
        await send_json(send, 200, names.profiles_body())
        return
    wanted: str | None
    if method == "PUT":
        wanted = await _put_name(scope, receive)
    elif method == "DELETE":
        wanted = None
    else:  # POST /api/profiles/{name} (a profile may be called "active" too)
        wanted = path[len(PROFILES_PREFIX) :]
    before = names.active_profile
    names.activate(wanted)
    if wanted != before:
        bus.publish({"type": "profile", "active": wanted})
    await send_json(send, 200, {"msg": "ok", "active": wanted})
