"""``llama-swap-trio watch``: a live terminal view of a running daemon, fed by ``/api/events``.

- ``state``: what the view shows, folded from feed messages (pure);
- ``render``: rich renderables from that state (no I/O);
- ``client``: the websocket connection loop with reconnect and auth, and the ``run`` entry point.
"""

from __future__ import annotations

from llama_swap_trio.watch.client import DEFAULT_URL, feed_url, follow, run
from llama_swap_trio.watch.render import render
from llama_swap_trio.watch.state import Connection, Link, WatchState

__all__ = ["DEFAULT_URL", "Connection", "Link", "WatchState", "feed_url", "follow", "render", "run"]
