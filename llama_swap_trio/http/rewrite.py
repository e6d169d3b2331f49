"""Rewriting a model-routed request before it is forwarded (SPEC 3.1, llama-swap 5.7).

Order: ``use_model_name`` replaces the ``model`` the client sent (wherever it was found: JSON,
multipart, url-encoded form or ``?model=``); then, on JSON bodies only, the model's ``filters``:
``strip_params``, ``set_params``, ``set_params_by_id[requested name]`` (later wins). ``model`` is
never stripped or set by a filter. Keys may be dotted paths into nested objects, as in llama-swap
(``chat_template_kwargs.enable_thinking``); a key that exists literally at the top level is taken
as it is.

The body is re-serialised only when something changed, so the hot path of a request without
filters forwards the client's bytes untouched; a rewritten body gets a correct ``Content-Length``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs

from llama_swap_trio.config.model import Filters, ModelConfig
from llama_swap_trio.http.asgi import Scope
from llama_swap_trio.http.request import ParsedRequest, find_form_field


@attrs.frozen
class Rewritten:
    #: the scope to forward (a copy with a new ``content-length`` when the body changed)
    scope: Scope
    body: bytes
    #: path and query to forward instead of the client's, or None (only ``?model=`` rewrites it)
    target: str | None = None


def rewrite_request(
    scope: Scope,
    body: bytes,
    parsed: ParsedRequest,
    model: ModelConfig,
    requested: str | None = None,
) -> Rewritten:
    """Apply ``use_model_name`` and the filters of ``model`` to a request for ``parsed.model``.

    Args:
        requested: the name after a profile pin or a selector chose (default ``parsed.model``):
            it replaces the client's ``model`` (unless ``use_model_name`` is set) and keys
            ``set_params_by_id``.
    """
    if requested is None:
        requested = parsed.model
    new_name = model.use_model_name or requested
    if new_name == parsed.model:
        new_name = ""
    target: str | None = None
    new_body: bytes | None = None
    if parsed.json_body is not None:
        obj = parsed.json_body
        changed = False
        if new_name and parsed.source == "json":
            obj["model"] = new_name
            changed = True
        changed = apply_filters(obj, model, requested) or changed
        if changed:
            new_body = _dump_json(obj)
    if new_name and parsed.source == "multipart" and parsed.boundary is not None:
        new_body = _replace_multipart_field(body, parsed.boundary, new_name)
    elif new_name and parsed.source == "form":
        new_body = _replace_urlencoded(body, new_name)
    elif new_name and parsed.source == "query":
        query = _replace_urlencoded(scope.get("query_string", b""), new_name)
        path = scope.get("raw_path") or scope["path"].encode()
        target = (bytes(path) + b"?" + query).decode("latin-1")
    if new_body is None:
        return Rewritten(scope, body, target)
    return Rewritten(with_content_length(scope, len(new_body)), new_body, target)


def _dump_json(obj: dict[str, Any]) -> bytes:
    """``obj`` as compact JSON, non-ASCII text as UTF-8.

    A lone surrogate (``"\\ud800"`` is valid JSON, and ``json.loads`` keeps it) has no UTF-8
    form; such a body is written with ``\\u`` escapes instead, as the client itself sent it.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), default=str).encode()


def apply_filters(obj: dict[str, Any], model: ModelConfig, requested: str) -> bool:
    """Apply ``strip_params``, ``set_params``, ``set_params_by_id[requested]``; True if changed."""
    return apply_filter_set(obj, model.filters, requested)


def apply_filter_set(obj: dict[str, Any], filters: Filters, requested: str) -> bool:
    """:func:`apply_filters` with the filters given (the JSON worker has no ModelConfig)."""
    changed = False
    for key in filters.strip_params:
        if key != "model":
            changed = _delete(obj, key) or changed
    for params in (filters.set_params, filters.set_params_by_id.get(requested, {})):
        for key, value in params.items():
            if key != "model":
                changed = _set(obj, key, to_json(value)) or changed
    return changed


def to_json(value: object) -> object:
    """A fresh JSON-ready copy of a config value (so a later nested set never edits the config)."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def _delete(obj: dict[str, Any], key: str) -> bool:
    if key in obj:
        del obj[key]
        return True
    *parents, last = key.split(".")
    node: object = obj
    for part in parents:
        if not isinstance(node, dict):
            return False
        node = node.get(part)
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def _set(obj: dict[str, Any], key: str, value: object) -> bool:
    if key in obj or "." not in key:
        if key in obj and obj[key] == value and type(obj[key]) is type(value):
            return False
        obj[key] = value
        return True
    *parents, last = key.split(".")
    node = obj
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if last in node and node[last] == value and type(node[last]) is type(value):
        return False
    node[last] = value
    return True


def _replace_multipart_field(body: bytes, boundary: bytes, value: str) -> bytes:
    span = find_form_field(body, boundary, b"model")
    if span is None:  # the model came from somewhere else; nothing to replace
        return body
    return body[: span[0]] + value.encode() + body[span[1] :]


def _replace_urlencoded(data: bytes, value: str) -> bytes:
    pairs = parse_qsl(data.decode("ascii"), keep_blank_values=True)
    replaced = False
    out: list[tuple[str, str]] = []
    for key, old in pairs:
        if key == "model" and not replaced:
            out.append((key, value))
            replaced = True
        else:
            out.append((key, old))
    return urlencode(out).encode("ascii")


def with_content_length(scope: Scope, length: int) -> Scope:
    """A copy of ``scope`` whose headers declare ``length`` bytes (and no chunked encoding)."""
    headers = [
        (key, value)
        for key, value in scope["headers"]
        if key not in (b"content-length", b"transfer-encoding")
    ]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}
