"""The HTTP layer: the ASGI app, forwarding, errors, keys."""
