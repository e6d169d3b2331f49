"""``server.cors_origins`` and ``server.allowed_hosts`` (SPEC 6.1): their spelling and checks.

An origin is ``scheme://host[:port]``, as browsers send it in ``Origin``: no path, no query, no
user. The same origin can be written several ways (``HTTP://UI.example:80/``), so both the
configured ones and the ones requests carry go through :func:`normalize_origin`: lower case, the
default port of ``http``/``https`` dropped, no trailing ``/``. ``null`` (what a sandboxed frame or
a ``file://`` page sends) is an origin too, refused unless listed.

A host is a name or an address as ``Host`` carries it, optionally with ``:port``; normalised to
lower case with IPv6 addresses in brackets.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from llama_swap_trio.config.problems import KeyPath, Problems

#: ``cors_origins`` entry that allows every origin
ANY_ORIGIN = "*"
#: the ``Origin`` of opaque contexts (sandboxed frames, ``file://`` pages, some redirects)
NULL_ORIGIN = "null"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(text: str) -> str | None:
    """``text`` as a canonical origin (``http://ui.example:3000``), or None if it is not one."""
    text = text.strip()
    if text.lower() == NULL_ORIGIN:
        return NULL_ORIGIN
    if any(char.isspace() for char in text) or "://" not in text:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if (
        not parts.scheme
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or parts.netloc.endswith(":")
    ):
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalize_host(text: str) -> str | None:
    """``text`` as a canonical ``Host`` (``ui.example`` or ``[::1]:8080``), or None if malformed."""
    text = text.strip().lower()
    if not text or any(char.isspace() or char in "/?#@" for char in text):
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return text
    name, colon, port = text.partition(":")
    if not name or (colon and not port.isdigit()) or ":" in port:
        # a bare IPv6 address without brackets: give it its brackets
        if text.count(":") >= 2 and all(c in "0123456789abcdef:." for c in text):
            return f"[{text}]"
        return None
    return text


def check_cors_origins(problems: Problems, origins: tuple[str, ...]) -> tuple[str, ...]:
    """The normalised ``server.cors_origins``; every entry that is no origin is a problem."""
    found: list[str] = []
    for index, text in enumerate(origins):
        where: KeyPath = ("server", "cors_origins", index)
        if text.strip() == ANY_ORIGIN:
            found.append(ANY_ORIGIN)
            continue
        origin = normalize_origin(text)
        if origin is None:
            problems.add(
                where,
                f"must be '*' or an origin such as 'https://ui.example:3000' "
                f"(scheme://host[:port], no path), got {text!r}",
            )
        elif origin not in found:
            found.append(origin)
    return tuple(found)


def check_allowed_hosts(problems: Problems, hosts: tuple[str, ...]) -> tuple[str, ...]:
    """The normalised ``server.allowed_hosts``; every entry that is no host is a problem."""
    found: list[str] = []
    for index, text in enumerate(hosts):
        host = normalize_host(text)
        if host is None:
            problems.add(
                ("server", "allowed_hosts", index),
                f"must be a host name or address, optionally with ':port' (such as "
                f"'llm.home.arpa' or 'llm.home.arpa:8080'), got {text!r}",
            )
        elif host not in found:
            found.append(host)
    return tuple(found)
