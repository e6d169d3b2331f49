"""The ASGI application: lifespan, routing, auth, model-routed requests, management endpoints.

Plain ASGI with a small routing table, no framework (research python-stack 1.7: a framework costs
20-30 % and hides the disconnect handling). A request goes, in order:

1. the browser rules (:mod:`.browser_safety`): a foreign ``Origin`` gets 403, a ``Host`` that
   is not served while on loopback only gets 421;
2. ``OPTIONS`` on any path: 204 with CORS headers, no key (as llama-swap);
3. ``/health``: 200 ``OK``, no key; ``/`` and ``/ui/...``: the web UI's static files, no key;
4. the API key check (SPEC 3.6);
5. the route: exact paths in a table, then the prefix routes (``/upstream/``,
   ``/api/models/unload/``, ``/api/models/load/``, ``/logs/stream/``); else 404 ``not_found``.
   A known path with a method it does not serve gets **405** ``method_not_allowed`` with
   ``Allow`` (clearer than llama-swap's 404-or-405 depending on the route).

A :class:`~llama_swap_trio.errors.ProxyError` raised before the response head is rendered with
its status and headers; handlers never raise one after their head (the forwarding engine keeps the
same contract). A request with an allowed ``Origin`` gets ``access-control-allow-origin`` on its
response.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

import trio

from llama_swap_trio import __version__, errors
from llama_swap_trio.config.model import Config, ModelConfig
from llama_swap_trio.config.parity_model import PeerModel
from llama_swap_trio.edge.contract import open_edge
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.feed.bus import EventBus
from llama_swap_trio.feed.logs import Redactor
from llama_swap_trio.http.asgi import ASGIApp, Receive, Scope, Send, answer_lifespan
from llama_swap_trio.http.auth import is_authorized
from llama_swap_trio.http.browser_safety import BrowserSafety, send_preflight, with_allow_origin
from llama_swap_trio.http.debug import DEBUG_PATH, debug_enabled, debug_state
from llama_swap_trio.http.errors import send_bytes, send_error, send_json, send_text
from llama_swap_trio.http.events import handle_events
from llama_swap_trio.http.forward import CLIENT_CLOSED, ForwardResult, forward_http
from llama_swap_trio.http.heavy_body import is_heavy, parse_heavy, rewrite_any
from llama_swap_trio.http.hygiene import (
    CLIENT_QUERY,
    check_upstream_rest,
    framing_error,
    without_api_key,
)
from llama_swap_trio.http.loading import serve_with_loading_state
from llama_swap_trio.http.logs import STREAM_PREFIX, LogViews
from llama_swap_trio.http.models_list import models_list, running_list
from llama_swap_trio.http.names import Names
from llama_swap_trio.http.peers import Peers
from llama_swap_trio.http.pool import ClientPool
from llama_swap_trio.http.profiles_api import (
    PROFILES_ACTIVE,
    PROFILES_PATH,
    PROFILES_PREFIX,
    handle_profiles,
)
from llama_swap_trio.http.reload_api import reload_handler
from llama_swap_trio.http.request import (
    UPSTREAM_PREFIX,
    ClientDisconnected,
    ParsedRequest,
    UpstreamTarget,
    extract_model,
    match_upstream,
    read_body,
)
from llama_swap_trio.http.scheduling import (
    PLAN_PREFIX,
    QUEUE_PATH,
    query_flag,
    send_plan,
    send_queue,
)
from llama_swap_trio.http.websocket_tunnel import tunnel_websocket
from llama_swap_trio.logbuffer import LogBuffer
from llama_swap_trio.observe import Observability
from llama_swap_trio.observe.access import EXCHANGE, Exchange, log_exchange
from llama_swap_trio.observe.http import ObserveViews
from llama_swap_trio.observe.requests import RequestLife
from llama_swap_trio.routing.api import Progress, RouterLike, WaitCancelled
from llama_swap_trio.routing.resources import resources_body
from llama_swap_trio.ui import is_ui_path, serve_ui
from llama_swap_trio.upstream.api import UpstreamState

log = logging.getLogger(__name__)

Handler = Callable[["Scope", "Receive", "Send"], Awaitable[None]]

#: SPEC 3.1: POST endpoints whose model is in the body (JSON or a form)
MODEL_POST_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/embeddings",
        # SPEC 6.1: the forms without /v1 that llama-server also accepts (an SDK whose base URL
        # lacks /v1); forwarded with the path as the client sent it, as llama-swap's /v/...
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/v1/rerank",
        "/v1/reranking",
        "/rerank",
        "/reranking",
        "/infill",
        "/completion",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/audio/speech",
        "/v1/images/generations",
        "/sdapi/v1/txt2img",
        "/sdapi/v1/img2img",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/images/edits",
    }
)
#: SPEC 3.1: GET endpoints whose model is ``?model=``
MODEL_GET_PATHS = frozenset({"/props", "/v1/audio/voices", "/sdapi/v1/loras"})

LOADING_STATE_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
UNLOAD_PREFIX = "/api/models/unload/"
LOAD_PREFIX = "/api/models/load/"


def method_not_allowed(method: str, path: str, allowed: str) -> ProxyError:
    return ProxyError(
        405,
        "invalid_request_error",
        "method_not_allowed",
        f"method {method} is not allowed on {path}",
        (("allow", allowed),),
    )


def create_app(
    config: Config,
    router: RouterLike,
    *,
    pool: ClientPool,
    bus: EventBus,
    proxy_logs: LogBuffer,
    upstream_logs: Mapping[str, LogBuffer],
    shutting_down: Callable[[], bool],
    observe: Observability | None = None,
    listen_host: str | None = None,
    reload: Callable[[], Awaitable[Mapping[str, object]]] | None = None,
) -> ASGIApp:
    """The daemon's ASGI application.

    Args:
        config: the resolved configuration.
        router: grants requests their model (``serve``), loads and unloads.
        pool: upstream HTTP clients, for the forwarding engine.
        bus: the event bus; a ``request`` event is published for every forwarded request.
        proxy_logs, upstream_logs: the proxy's log and each model's output (by model id).
        shutting_down: true once the daemon is stopping; new model requests then get 503.
        observe: the daemon's request tracker, metrics and history (default: a fresh one).
        listen_host: the host the daemon listens on (the ``Host`` rule of
            :mod:`.browser_safety`); None leaves that rule off.
        reload: ``POST /api/config/reload`` (SPEC 6.4): reloads, returns the ``reload`` event.
    """
    if observe is None:
        observe = Observability(bus, lambda: router.snapshot())
    app = App(
        config,
        router,
        pool,
        bus,
        LogViews(config, proxy_logs, upstream_logs),
        shutting_down,
        observe,
        listen_host,
    )
    if reload is not None:
        app.add_route("/api/config/reload", frozenset({"POST"}), reload_handler(reload))
    return app


class App:
    def __init__(
        self,
        config: Config,
        router: RouterLike,
        pool: ClientPool,
        bus: EventBus,
        logs: LogViews,
        shutting_down: Callable[[], bool],
        observe: Observability,
        listen_host: str | None = None,
    ) -> None:
        self.config = config
        self.router = router
        self.pool = pool
        self.bus = bus
        self.logs = logs
        self.shutting_down = shutting_down
        self.observe = observe
        self._views = ObserveViews(config, observe)
        self._redact = Redactor(config.api_keys)
        self._keys = tuple(key.encode() for key in config.api_keys)
        self._browser = BrowserSafety(config.server, listen_host)
        #: profile pins, selectors and peers (SPEC 6.6); per generation, so a reload resets them
        self.names = Names(config, lambda model_id: str(router.upstream(model_id).state))
        self.peers = Peers(dict(config.parity.peers))
        model = self._model_request
        self._routes: dict[str, tuple[frozenset[str], Handler]] = {
            path: (frozenset({"POST"}), model) for path in MODEL_POST_PATHS
        }
        self._routes.update({path: (frozenset({"GET"}), model) for path in MODEL_GET_PATHS})
        get = frozenset({"GET"})
        self._routes.update(
            {
                "/v1/models": (get, self._models),
                "/models": (get, self._models),
                "/running": (get, self._running),
                "/api/models/unload": (frozenset({"POST"}), self._unload_all),
                "/api/version": (get, self._version),
                "/logs": (get, self._logs),
                "/logs/stream": (get, self._log_stream),
                "/api/events": (get, self._events),
                "/metrics": (get, self._views.metrics),
                "/api/activity": (get, self._views.activity),
                PROFILES_PATH: (get, self._profiles),
                PROFILES_ACTIVE: (frozenset({"POST", "PUT", "DELETE"}), self._profiles),
                "/api/resources": (get, self._resources),
                QUEUE_PATH: (get, lambda scope, receive, send: send_queue(send, self.router)),
            }
        )
        if debug_enabled():
            self._routes[DEBUG_PATH] = (get, self._debug_state)
        self._prefixes: tuple[tuple[str, frozenset[str] | None, Handler], ...] = (
            (UPSTREAM_PREFIX, None, self._upstream),
            (UNLOAD_PREFIX, frozenset({"POST"}), self._unload_one),
            (LOAD_PREFIX, frozenset({"POST"}), self._load_one),
            (PLAN_PREFIX, get, lambda scope, _, send: send_plan(scope, send, config, router)),
            (STREAM_PREFIX, get, self._log_stream),
            (PROFILES_PREFIX, frozenset({"POST"}), self._profiles),
        )

    def add_route(self, path: str, methods: frozenset[str], handler: Handler) -> None:
        """Serve ``path`` (exactly) with ``handler``, behind the same key and CORS rules."""
        self._routes[path] = (methods, handler)

    # -- ASGI entry --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await answer_lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = Exchange(trio.current_time())
        scope[EXCHANGE] = exchange
        try:
            await self._serve_http(scope, receive, send, exchange)
        finally:
            if exchange.event is None and self._model_routed(scope["path"]):
                self.observe.metrics.unresolved(exchange.status or CLIENT_CLOSED)
            log_exchange(scope, exchange, trio.current_time(), self._redact)

    def _model_routed(self, path: str) -> bool:
        route = self._routes.get(path)
        return (route is not None and route[1] == self._model_request) or path.startswith(
            UPSTREAM_PREFIX
        )

    async def _serve_http(
        self, scope: Scope, receive: Receive, send: Send, exchange: Exchange
    ) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        # A model-routed request's status is its feed event's (the access log reads it there),
        # so the hot path is not wrapped; every other answer's status is recorded by ``send``.
        unrecorded = send
        send = exchange.wrap(send)
        ambiguous = framing_error(scope)
        if ambiguous is not None:
            await send_error(scope, send, ambiguous)
            return
        refused, origin = self._browser.refusal(scope)
        if refused is not None:
            await send_error(scope, send, refused)
            return
        if method == "OPTIONS":
            await send_preflight(scope, send, origin)
            return
        if origin is not None:
            send = with_allow_origin(send, origin)
            unrecorded = with_allow_origin(unrecorded, origin)
        try:
            if path == "/health":
                if method not in ("GET", "HEAD"):
                    raise method_not_allowed(method, path, "GET, HEAD")
                await send_text(send, 200, "OK")
                return
            if is_ui_path(path):  # the static shell holds no data: no key (ui/route.py)
                await serve_ui(scope, send)
                return
            if self._keys:
                if not is_authorized(scope, self._keys):
                    raise errors.unauthorized()
                scope = without_api_key(scope)  # our credential, not the upstream's
            route = self._routes.get(path)
            if route is not None:
                methods, handler = route
                if method not in methods:
                    raise method_not_allowed(method, path, ", ".join(sorted(methods)))
                model_routed = handler == self._model_request
                await handler(scope, receive, unrecorded if model_routed else send)
                return
            if path == "/upstream":
                raise errors.not_found(path)
            for prefix, allowed, handler in self._prefixes:
                if path.startswith(prefix) and len(path) > len(prefix):
                    if allowed is not None and method not in allowed:
                        raise method_not_allowed(method, path, ", ".join(sorted(allowed)))
                    await handler(scope, receive, send)
                    return
            raise errors.not_found(path)
        except ProxyError as error:
            await send_error(scope, send, error)
        except ClientDisconnected:
            pass  # nobody to answer

    # -- model-routed requests (SPEC 3.1) ----------------------------------------------------------

    def _refuse_if_shutting_down(self) -> None:
        if self.shutting_down():
            raise errors.shutting_down()

    async def _model_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._refuse_if_shutting_down()
        body = await read_body(scope, receive)
        if is_heavy(scope, body):  # parsed off the event loop (http/heavy_body.py)
            parsed = await parse_heavy(scope, body)
        else:
            parsed = extract_model(scope, body)
        # the active profile's pin, then a selector, then a local model or a peer's (SPEC 6.6)
        with self.names.choose(parsed.model) as choice:
            if choice.peer is not None:
                await self._peer_request(scope, receive, send, body, parsed, choice.peer)
            else:
                assert choice.model is not None
                await self._local_request(
                    scope, receive, send, body, parsed, choice.model, choice.name
                )

    async def _peer_request(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        parsed: ParsedRequest,
        peer: PeerModel,
    ) -> None:
        model, _ = self.peers.view(peer)
        rewritten = await rewrite_any(self.peers.scope_for(scope, peer), body, parsed, model)
        life = self._start_life(scope, model)
        await self._forward(
            model,
            rewritten.scope,
            receive,
            send,
            rewritten.body,
            rewritten.target,
            life,
            peer=peer,
        )

    async def _local_request(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        parsed: ParsedRequest,
        model: ModelConfig,
        name: str,
    ) -> None:
        rewritten = await rewrite_any(scope, body, parsed, model, name)
        path: str = scope["path"]
        life = self._start_life(scope, model)
        if (
            model.send_loading_state
            and parsed.stream
            and path in LOADING_STATE_PATHS
            and self.router.upstream(model.id).state != UpstreamState.READY
        ):
            try:
                result = await serve_with_loading_state(
                    rewritten.scope,
                    receive,
                    send,
                    router=self.router,
                    model=model,
                    requested_name=parsed.model,
                    body=rewritten.body,
                    pool=self.pool,
                    target=rewritten.target,
                    life=life,
                )
            except ProxyError as refused:  # before any stream (429, 503): answered plainly
                self.observe.tracker.finish(life, refused.status, error=refused.code)
                raise
            self._finish(life, result)
            return
        await self._forward(
            model, rewritten.scope, receive, send, rewritten.body, rewritten.target, life
        )

    def _start_life(self, scope: Scope, model: ModelConfig) -> RequestLife:
        """Publish ``request_start`` for a request resolved to ``model``."""
        exchange: Exchange | None = scope.get(EXCHANGE)
        if exchange is not None:
            exchange.model = model.id
        arrived = exchange.arrived if exchange is not None else trio.current_time()
        life = self.observe.tracker.start(model.id, scope["path"], scope["method"], arrived)
        if exchange is not None:
            exchange.life = life
        return life

    async def _forward(
        self,
        model: ModelConfig,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        target: str | None,
        life: RequestLife,
        *,
        require_ready: bool = False,
        peer: PeerModel | None = None,
    ) -> None:
        """Wait for ``model``, then forward the request and publish its ``request`` event.

        A ``peer`` model is granted at once, without the router (it is never started).

        One watch covers the whole request (the edge's: the server's own, or a watcher task on
        ``receive()``). A disconnect before the grant cancels the wait (the router runs a
        waiting request's wait in the watch's scope, drops the request and raises
        ``WaitCancelled``; it never causes a load); after the grant it only cuts the forwarding
        (``forward_http`` registers its scope with the same watch), so the result, and its
        event, survive the client's leaving. ``life`` is finished however it ends.
        """
        result: ForwardResult | None = None
        failure: ProxyError | None = None
        try:
            async with open_edge(scope, receive, send) as edge:
                watch = edge.watch
                try:
                    if watch.disconnected:  # gone before it asked: nothing to wait for
                        raise WaitCancelled
                    serving = (
                        self.router.serve(
                            model.id,
                            on_progress=life.on_progress,
                            require_ready=require_ready,
                            cancel_wait=watch.cancel_on_disconnect,
                        )
                        if peer is None
                        else self.peers.serve(peer)
                    )
                    async with serving as grant:
                        if peer is not None:  # never queued or loaded: granted at once
                            life.on_progress(Progress("ready"))
                        result = await forward_http(
                            scope,
                            receive,
                            send,
                            grant=grant,
                            body=body,
                            pool=self.pool,
                            target=target,
                            edge=edge,
                            life=life,
                        )
                except WaitCancelled:
                    pass  # the client left while it waited
                except ProxyError as error:
                    failure = error
        finally:
            if failure is not None:  # refused (429, 502 failed start...) or forwarding failed
                self.observe.tracker.finish(life, failure.status, error=failure.code)
            elif result is not None:
                self._finish(life, result)
            else:  # the client left while it waited (or the daemon is cancelling us)
                self.observe.tracker.finish(life, CLIENT_CLOSED, client_disconnected=True)
        if failure is not None:
            raise failure

    def _finish(self, life: RequestLife, result: ForwardResult) -> None:
        """The ``request`` event of a forwarded request."""
        error = result.error
        if error is None and result.upstream_failed:
            error = "upstream_error"  # broken off mid-response: the client got a truncated body
        self.observe.tracker.finish(
            life,
            result.status,
            first_byte_at=result.first_byte_at,
            upstream_ttfb_ms=result.ttfb_ms,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            tokens_per_second=result.tokens_per_second,
            error=error,
            client_disconnected=result.client_disconnected,
        )

    # -- /upstream/{model}/{path} ------------------------------------------------------------------

    def _upstream_target(self, scope: Scope) -> UpstreamTarget:
        match = match_upstream(self.config, scope)
        if isinstance(match, str):
            raise errors.model_not_found(match)
        return match

    def _must_be_ready(self, target: UpstreamTarget) -> bool:
        """An ``ignore_paths`` sub-path never starts a model (SPEC 3.2)."""
        rest = unquote(target.raw_rest)
        return any(pattern.search(rest) for pattern in self.config.ignore_paths)

    async def _upstream(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._upstream_target(scope)
        query: bytes = scope.get("query_string", b"")
        suffix = "?" + query.decode("latin-1") if query else ""
        if not target.raw_rest:
            client_query: bytes = scope.get(CLIENT_QUERY, query)
            back = "?" + client_query.decode("latin-1") if client_query else ""
            status = 301 if scope["method"] in ("GET", "HEAD") else 308
            location = f"{UPSTREAM_PREFIX}{target.raw_name}/{back}"
            await send_bytes(send, status, b"", None, [(b"location", location.encode("latin-1"))])
            return
        check_upstream_rest(target.raw_rest)
        self._refuse_if_shutting_down()
        body = await read_body(scope, receive)
        await self._forward(
            target.model,
            scope,
            receive,
            send,
            body,
            target.raw_rest + suffix,
            self._start_life(scope, target.model),
            require_ready=self._must_be_ready(target),
        )

    # -- websockets --------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        try:
            refused, _ = self._browser.refusal(scope)
            if refused is not None:
                raise refused
            if self._keys:
                if not is_authorized(scope, self._keys):
                    raise errors.unauthorized()
                scope = without_api_key(scope)
            if path == "/api/events":
                await self._events(scope, receive, send)
                return
            if not path.startswith(UPSTREAM_PREFIX):
                raise errors.not_found(path)
            target = self._upstream_target(scope)
            check_upstream_rest(target.raw_rest)
            self._refuse_if_shutting_down()
            query: bytes = scope.get("query_string", b"")
            rest = (target.raw_rest or "/") + ("?" + query.decode("latin-1") if query else "")
            await self._tunnel(scope, receive, send, target, rest)
        except ProxyError as error:
            await _deny_websocket(scope, send, error)

    async def _tunnel(
        self, scope: Scope, receive: Receive, send: Send, target: UpstreamTarget, rest: str
    ) -> None:
        """Wait for the model, then tunnel; a client that leaves while waiting cancels the wait
        (SPEC 3.5: it never causes a load). Hypercorn reports that leaving only as a
        ``websocket.disconnect`` from ``receive()``, so a watcher reads it until the grant;
        whatever it read is replayed to the tunnel, which reads ``websocket.connect`` first."""
        replay = [await receive()]  # websocket.connect
        waiting = trio.CancelScope()
        watching = trio.CancelScope()
        failure: ProxyError | None = None
        ended = False  # the tunnel ended by itself (not by its model stopping)

        async def watch_client() -> None:
            with watching:
                replay.append(await receive())  # before accept: only websocket.disconnect
                waiting.cancel()

        async def replayed() -> Any:
            return replay.pop(0) if replay else await receive()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_client)
            try:
                with waiting:
                    # counts as in flight for as long as the socket is open (blocks eviction, TTL),
                    # unless websockets_hold_model = false: then it ends when the model stops
                    serve = (
                        self.router.serve
                        if target.model.websockets_hold_model
                        else self.router.serve_detached
                    )
                    async with serve(
                        target.model.id, require_ready=self._must_be_ready(target)
                    ) as grant:
                        watching.cancel()  # synchronous: the watcher reads nothing after this
                        await tunnel_websocket(scope, replayed, send, grant=grant, target=rest)
                        ended = True
                    if not ended and not waiting.cancelled_caught:  # its model stopped
                        with trio.move_on_after(1), contextlib.suppress(Exception):
                            await send({"type": "websocket.close", "code": 1001})
            except ProxyError as error:
                failure = error  # raised outside the nursery, so it is not wrapped in a group
            finally:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    # -- management --------------------------------------------------------------------------------

    async def _version(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"version": __version__})

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = models_list(self.config, self.router.snapshot(), int(time.time()), self.names)
        await send_json(send, 200, body)

    async def _profiles(self, scope: Scope, receive: Receive, send: Send) -> None:
        await handle_profiles(self.names, self.bus, scope, receive, send)

    async def _resources(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, resources_body(self.config, self.router.snapshot()))

    async def _running(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, running_list(self.config, self.router.snapshot()))

    def _named_model(self, path: str, prefix: str) -> ModelConfig:
        name = path[len(prefix) :]
        model = self.config.resolve(name)
        if model is None:
            raise errors.model_not_found(name)
        return model

    async def _unload_all(self, scope: Scope, receive: Receive, send: Send) -> None:
        unloaded = await self.router.unload(None)
        await send_json(send, 200, {"msg": "ok", "unloaded": sorted(unloaded)})

    async def _unload_one(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = self._named_model(scope["path"], UNLOAD_PREFIX)
        await self.router.unload(model.id)
        await send_json(send, 200, {"msg": "ok"})

    async def _load_one(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = self._named_model(scope["path"], LOAD_PREFIX)
        self._refuse_if_shutting_down()
        async with open_edge(scope, receive, send) as edge:
            with edge.watch.cancel_on_disconnect():
                await self.router.load(model.id, force=query_flag(scope, "force"))
                await send_json(send, 200, {"msg": "ok", "state": "ready"})

    async def _debug_state(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, debug_state(self.router, self.pool))

    async def _logs(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.logs.send_backlog(send)

    async def _log_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        name = path[len(STREAM_PREFIX) :] if path.startswith(STREAM_PREFIX) else ""
        await self.logs.stream(scope, receive, send, name)

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        await handle_events(
            scope,
            receive,
            send,
            config=self.config,
            router=self.router,
            bus=self.bus,
            requests=self.observe.tracker.open_requests,
        )


# -- helpers ---------------------------------------------------------------------------------------


async def _deny_websocket(scope: Scope, send: Send, error: ProxyError) -> None:
    """Refuse a websocket before the handshake: the HTTP error when the server can say it."""
    if "websocket.http.response" in scope.get("extensions", {}):
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers]
        await send(
            {
                "type": "websocket.http.response.start",
                "status": error.status,
                "headers": [(b"content-type", b"application/json"), *extra],
            }
        )
        body = json.dumps(error.body()).encode()
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await send({"type": "websocket.close", "code": 1008})
