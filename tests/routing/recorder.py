"""A recording Effects for driving the scheduler without trio."""

from __future__ import annotations

from collections import defaultdict

from llama_swap_trio.config.model import Config
from llama_swap_trio.errors import ProxyError
from llama_swap_trio.routing.api import Progress, QueueEntry
from llama_swap_trio.routing.scheduler import Scheduler
from llama_swap_trio.routing.swappers import swapper_for


class Recorder:
    """Records every effect; handlers in ``gone`` fail their grant (their client left)."""

    def __init__(self) -> None:
        self.granted: dict[int, str] = {}
        self.grant_order: list[int] = []
        self.load_seconds: dict[int, float] = {}
        self.refused: dict[int, ProxyError] = {}
        self.loads: list[tuple[str, frozenset[str]]] = []
        self.explanations: list[str] = []
        self.queues: list[tuple[QueueEntry, ...]] = []
        self.told: defaultdict[int, list[Progress]] = defaultdict(list)
        self.in_flight: dict[str, int] = {}
        self.gone: set[int] = set()
        self.failed_grants: list[int] = []

    def grant(self, rid: int, model: str, load_seconds: float) -> bool:
        assert rid not in self.granted | self.refused.keys(), f"request {rid} answered twice"
        if rid in self.gone:
            self.failed_grants.append(rid)
            return False
        self.granted[rid] = model
        self.grant_order.append(rid)
        self.load_seconds[rid] = load_seconds
        return True

    def refuse(self, rid: int, error: ProxyError) -> None:
        assert rid not in self.granted | self.refused.keys(), f"request {rid} answered twice"
        self.refused[rid] = error

    def progress(self, rid: int, progress: Progress) -> None:
        self.told[rid].append(progress)

    def start_load(self, target: str, evict: frozenset[str], explanation: str) -> None:
        self.loads.append((target, evict))
        self.explanations.append(explanation)

    def queue_changed(self, queue: tuple[QueueEntry, ...]) -> None:
        self.queues.append(queue)

    def in_flight_changed(self, model: str, count: int) -> None:
        self.in_flight[model] = count


class Harness:
    """A scheduler and its recorder, with request ids handed out in order."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.fx = Recorder()
        self.swapper = swapper_for(config)
        #: the scheduler's clock; move it with :meth:`advance`
        self.now = 0.0
        self.s = Scheduler(
            config.models,
            self.swapper,
            self.fx,
            clock=lambda: self.now,
            starvation_after=config.routing.starvation_after,
        )
        self._next = 0

    def advance(self, seconds: float) -> None:
        """Move the clock on, ticking at every deadline on the way (as the router's timer does)."""
        end = self.now + seconds
        while (deadline := self.s.next_deadline()) is not None and deadline <= end:
            self.now = deadline
            self.s.tick()
        self.now = end

    def req(
        self,
        model: str,
        *,
        require_ready: bool = False,
        explicit: bool = False,
        force: bool = False,
        hold: bool = True,
    ) -> int:
        self._next += 1
        self.s.request(
            self._next,
            model,
            require_ready=require_ready,
            explicit=explicit,
            force=force,
            hold=hold,
        )
        return self._next

    def ok(self, target: str, seconds: float = 1.0) -> None:
        self.s.load_done(target, None, seconds)

    def fail(self, target: str, error: ProxyError) -> None:
        self.s.load_done(target, error, 1.0)

    def ready(self, model: str) -> None:
        """Bring ``model`` to ready through a request that is then done."""
        rid = self.req(model)
        self.ok(model)
        assert rid in self.fx.granted
        self.s.serve_done(rid)

    @property
    def load_targets(self) -> list[str]:
        return [t for t, _ in self.fx.loads]

    def models_of(self, rids: list[int]) -> list[str]:
        return [self.fx.granted[r] for r in rids]
