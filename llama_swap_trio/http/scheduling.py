"""``GET /api/plan/{model}`` and ``GET /api/queue`` (SPEC 6.5): the scheduler explaining itself.

Both answers come from the router's scheduler, computed by the functions that decide
(``Scheduler.plan``, ``Scheduler.waiting_requests``), and change nothing: a plan never starts,
queues or evicts anything.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from llama_swap_trio import errors
from llama_swap_trio.config.model import Config
from llama_swap_trio.http.asgi import Scope, Send
from llama_swap_trio.http.errors import send_json
from llama_swap_trio.routing.api import RouterLike

PLAN_PREFIX = "/api/plan/"
QUEUE_PATH = "/api/queue"


def query_flag(scope: Scope, name: str) -> bool:
    """``?name=true`` (or ``1``) in the query string."""
    query: bytes = scope.get("query_string", b"")
    values = parse_qs(query.decode("latin-1")).get(name, [])
    return any(value.lower() in ("true", "1") for value in values)


async def send_plan(scope: Scope, send: Send, config: Config, router: RouterLike) -> None:
    """The plan for the model (id or alias) named after ``/api/plan/``; 404 when unknown.
    ``?force=true`` plans an API load with ``force``."""
    path: str = scope["path"]
    name = path[len(PLAN_PREFIX) :]
    model = config.resolve(name)
    if model is None:
        raise errors.model_not_found(name)
    plan = router.plan(model.id, force=query_flag(scope, "force"))
    await send_json(send, 200, plan.to_json())


async def send_queue(send: Send, router: RouterLike) -> None:
    """``{"queue": [{id, model, position, waited_ms, reason}, ...]}``."""
    await send_json(send, 200, {"queue": [w.to_json() for w in router.waiting_requests()]})
