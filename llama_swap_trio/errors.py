"""Errors the proxy itself answers with, in the OpenAI error shape (SPEC 3.3).

A :class:`ProxyError` is a value: it carries everything needed to answer the client (status,
type, code, message, extra headers). The router raises them to waiting handlers; the HTTP layer
renders them. Constructors below name each case so call sites read as the table in the spec.
"""

from __future__ import annotations

import math

SOURCE = "llama-swap-trio"


class ProxyError(Exception):
    """An error answered to the client as ``{"src", "error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        type: str,
        code: str,
        message: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.headers = headers

    def body(self) -> dict[str, object]:
        return {
            "src": SOURCE,
            "error": {"message": self.message, "type": self.type, "param": None, "code": self.code},
        }

    def __repr__(self) -> str:
        return f"ProxyError({self.status}, {self.code!r}, {self.message!r})"


_RETRY = (("retry-after", "1"),)


def model_required(message: str = "missing or empty 'model' in the request") -> ProxyError:
    return ProxyError(400, "invalid_request_error", "model_required", message)


def invalid_json(detail: str) -> ProxyError:
    return ProxyError(400, "invalid_request_error", "invalid_json", f"invalid JSON body: {detail}")


def invalid_request(message: str) -> ProxyError:
    return ProxyError(400, "invalid_request_error", "invalid_request", message)


def unauthorized() -> ProxyError:
    return ProxyError(
        401,
        "authentication_error",
        "unauthorized",
        "missing or invalid API key",
        (("www-authenticate", 'Basic realm="llama-swap-trio"'),),
    )


def model_not_found(name: str) -> ProxyError:
    return ProxyError(404, "invalid_request_error", "model_not_found", f"model '{name}' not found")


def not_found(path: str) -> ProxyError:
    return ProxyError(404, "invalid_request_error", "not_found", f"no such endpoint: {path}")


def model_not_loaded(model: str, *, autoload_off: bool = False) -> ProxyError:
    message = f"model '{model}' is not loaded"
    if autoload_off:
        message += (
            f", and autoload is off for it: requests never load it; "
            f"load it with POST /api/models/load/{model}"
        )
    return ProxyError(409, "invalid_request_error", "model_not_loaded", message)


def model_protected(model: str, protected: list[str], *, api_load: bool = False) -> ProxyError:
    """A request (or an API load without ``?force=true``) that needs protected models evicted."""
    names = ", ".join(f"'{name}'" for name in protected)
    noun = "model" if len(protected) == 1 else "models"
    frees = " and ".join(f"POST /api/models/unload/{name}" for name in protected)
    hint = f"; or load it anyway with POST /api/models/load/{model}?force=true" if api_load else ""
    return ProxyError(
        409,
        "invalid_request_error",
        "model_protected",
        f"model '{model}' cannot be loaded: it would evict protected {noun} {names}, "
        f"which a request never evicts; free it with {frees}{hint}",
    )


def request_too_large(limit: int) -> ProxyError:
    return ProxyError(
        413,
        "invalid_request_error",
        "request_too_large",
        f"request body is larger than {limit} bytes",
    )


def concurrency_limit(model: str, limit: int) -> ProxyError:
    return ProxyError(
        429,
        "rate_limit_error",
        "concurrency_limit",
        f"model '{model}' already has {limit} requests admitted (concurrency_limit)",
        _RETRY,
    )


def upstream_error(model: str, detail: str) -> ProxyError:
    return ProxyError(502, "server_error", "upstream_error", f"model '{model}': {detail}")


def shutting_down() -> ProxyError:
    return ProxyError(503, "server_error", "shutting_down", "the proxy is shutting down", _RETRY)


def config_reloaded(model: str | None = None) -> ProxyError:
    """A request that waited for a model a reload removed (``model``), or in a configuration a
    reload replaced: retrying reaches the new configuration.

    Not ``shutting_down``: the daemon is not going away, and a client (or a person reading a log)
    that sees that code may reasonably stop retrying.
    """
    message = (
        "the configuration was reloaded while the request waited; retry it"
        if model is None
        else f"model '{model}' was removed by a configuration reload while the request waited"
    )
    return ProxyError(503, "server_error", "config_reloaded", message, _RETRY)


def model_backoff(model: str, retry_after: int, last_failure: str) -> ProxyError:
    """Crash-loop backoff (SPEC 6.4): the model's starts keep failing; retry after the cooldown."""
    return ProxyError(
        503,
        "server_error",
        "model_backoff",
        f"model '{model}' failed to start several times in a row; not trying again for "
        f"{retry_after} s. Last failure: {last_failure}",
        (("retry-after", str(retry_after)),),
    )


def model_unloaded(model: str) -> ProxyError:
    return ProxyError(
        503,
        "server_error",
        "model_unloaded",
        f"model '{model}' was unloaded while the request waited for it",
        _RETRY,
    )


def queue_timeout(
    model: str, timeout: float, estimate: float | None, *, at_once: bool = False
) -> ProxyError:
    """503 for a request that waited ``timeout`` (or would: ``at_once``); ``Retry-After`` is the
    estimated wait in whole seconds (at least 1; 1 when nothing is measured yet)."""
    retry = max(1, math.ceil(estimate)) if estimate is not None else 1
    if at_once:
        what = (
            f"its estimated wait of {estimate:.1f} s (measured load and stop times of what is "
            f"ahead of it) exceeds its queue_timeout of {timeout:g} s"
        )
    else:
        what = f"it waited its queue_timeout of {timeout:g} s for its turn"
    return ProxyError(
        503,
        "server_error",
        "queue_timeout",
        f"request for model '{model}' refused: {what}; retry in {retry} s "
        f"(GET /api/plan/{model} shows what it waits for)",
        (("retry-after", str(retry)),),
    )


def gateway_timeout(model: str, detail: str) -> ProxyError:
    return ProxyError(504, "server_error", "gateway_timeout", f"model '{model}': {detail}")
