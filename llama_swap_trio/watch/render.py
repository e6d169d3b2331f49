"""Rich renderables for the ``watch`` view, from a ``WatchState``. No I/O: tests render to a
recording console and read the text back.

The view, top to bottom: the connection line (and a lag notice), the requests in flight (model,
elapsed time, chunks, live rate), the models with their state, requests in flight and TTL left,
the queue, the last requests (newest first; failed ones with their error code, queue and load
time) and the last swaps. Given the terminal's height, the sections share it (:func:`_plan`):
each keeps its title and gets rows in turn, every row is one line (long cells are cut with an
ellipsis, an error keeps its first line), and at most :data:`SWAP_ROWS` swaps are shown, so a few
failed swaps cannot push the requests off the screen.
"""

from __future__ import annotations

import attrs
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from llama_swap_trio.config.memory import format_size
from llama_swap_trio.watch.state import Link, ModelRow, RequestRow, SwapRow, WatchState

UNKNOWN = "-"

_STATE_STYLES = {
    "ready": "bold green",
    "starting": "yellow",
    "stopping": "magenta",
    "stopped": "dim",
    "shutdown": "dim red",
    "sleeping": "blue",
}

_LINK_STYLES = {
    Link.CONNECTING: "yellow",
    Link.CONNECTED: "green",
    Link.UNREACHABLE: "bold red",
    Link.DISCONNECTED: "bold yellow",
    Link.HTTP_ERROR: "bold red",
    Link.REJECTED: "bold red",
}


def format_duration_ms(ms: float | None) -> str:
    """``350 ms``, ``1.23 s``, ``2m 05s``; ``-`` when unknown."""
    if ms is None:
        return UNKNOWN
    if ms < 1000:
        return f"{ms:.0f} ms"
    return format_seconds(ms / 1000, precise=True)


def format_seconds(seconds: float, *, precise: bool = False) -> str:
    """``42s`` / ``4m 12s`` / ``1h 02m`` (``1.23 s`` under a minute when ``precise``)."""
    if seconds < 60:
        return f"{seconds:.2f} s" if precise else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _ago(seen: float, now: float) -> str:
    return format_seconds(max(0.0, now - seen)) + " ago"


#: most swap rows shown when the screen height is limited (failed swaps must not fill it)
SWAP_ROWS = 3
#: below this width the request tables leave out their path and token columns
WIDE = 130
#: below this width they also leave out time to first byte and tokens per second
NARROW = 100
#: below this width the last requests also leave out how long ago they ended
TINY = 72


@attrs.define
class _Budget:
    """How many rows each section may show (None: all)."""

    in_flight: int | None = None
    models: int | None = None
    requests: int | None = None
    swaps: int | None = None
    logs: int | None = None


def _plan(state: WatchState, height: int | None) -> _Budget:
    """Fit the sections into ``height`` lines: every section gets its title first, then rows are
    handed out in turn (requests in flight, models, last requests, swaps, log), so a long list
    shrinks instead of pushing the others off the screen."""
    if height is None:
        return _Budget()
    # header, queue and a spare last line (a terminal scrolls when its last line is written)
    free = height - 3 - (1 if state.dropped else 0) - (1 if state.gpu_memory is not None else 0)
    wanted = [
        len(state.open),
        len(state.models),
        len(state.requests),
        min(len(state.swaps), SWAP_ROWS),
        len(state.logs),
    ]
    # a section with rows costs a title and a header line; an empty one its one-line notice
    rows = [0] * len(wanted)
    for i, want in enumerate(wanted):
        cost = 2 if want else 1
        if i == 4 and not want:
            cost = 0  # no log section at all
        free -= cost
    progressing = True
    while free > 0 and progressing:
        progressing = False
        for i, want in enumerate(wanted):
            if free > 0 and rows[i] < want:
                rows[i] += 1
                free -= 1
                progressing = True
    return _Budget(*rows)


def render(
    state: WatchState,
    now: float | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
) -> RenderableType:
    """The whole view. ``now`` (on ``state.clock``) defaults to the state's clock.

    ``height`` and ``width`` (the terminal's): the view fits in them, every row one line; with
    no height every row is shown."""
    now = state.clock() if now is None else now
    wide = width is None or width >= WIDE
    narrow = width is not None and width < NARROW
    tiny = width is not None and width < TINY
    budget = _plan(state, height)
    parts: list[RenderableType] = [_header(state)]
    if state.gpu_memory is not None:
        parts.append(_budget(state))
    if state.dropped:
        parts.append(
            Text(
                f"lagged: this view missed {state.dropped} event(s); counts may be stale "
                "until the next reconnect",
                style="yellow",
                no_wrap=True,
                overflow="ellipsis",
            )
        )
    parts += [
        _in_flight(state, now, budget.in_flight, wide),
        _models(state, now, budget.models),
        _queue(state),
        _requests(state, now, budget.requests, wide, narrow, tiny),
        _swaps(state, now, budget.swaps),
    ]
    if state.logs:
        parts.append(_logs(state, budget.logs))
    return Group(*parts)


def _table(title: str) -> Table:
    """A compact table: a title line, a header line, one line per row."""
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=None,
        padding=(0, 1),
        pad_edge=False,
        expand=False,
    )


def _shown(title: str, total: int, limit: int | None, count: bool = False) -> str:
    """``title``, with ``(N of M shown)`` when not all rows fit (or ``(M)`` when ``count``)."""
    if limit is not None and limit < total:
        return f"{title} ({limit} of {total} shown)"
    return f"{title} ({total})" if count else title


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _size(count: int) -> str:
    if count < 10_000:
        return f"{count} B"
    if count < 10_000_000:
        return f"{count / 1000:.0f} kB"
    return f"{count / 1_000_000:.0f} MB"


def _in_flight(state: WatchState, now: float, limit: int | None, wide: bool) -> RenderableType:
    if not state.open:
        return Text("In flight: none", style="dim")
    requests = list(state.open.values())
    title = _shown("In flight", len(requests), limit, count=True)
    table = _table(title)
    table.add_column("model", no_wrap=True, overflow="ellipsis", max_width=24)
    if wide:
        table.add_column("path", no_wrap=True, overflow="ellipsis", max_width=30)
    table.add_column("elapsed", justify="right", no_wrap=True)
    table.add_column("chunks", justify="right", no_wrap=True)
    table.add_column("rate", justify="right", no_wrap=True)
    table.add_column("bytes", justify="right", no_wrap=True)
    for request in requests[:limit]:
        streaming = request.progress_at is not None
        rate = f"{request.rate:.1f}/s" if request.rate is not None else UNKNOWN
        cells = [request.model]
        if wide:
            cells.append(request.path)
        cells += [
            format_seconds(max(0.0, now - request.started), precise=True),
            str(request.chunks) if streaming else UNKNOWN,
            rate,
            _size(request.bytes) if streaming else UNKNOWN,
        ]
        table.add_row(*cells)
    return table


def _header(state: WatchState) -> Text:
    text = Text("llama-swap-trio watch", style="bold", no_wrap=True, overflow="ellipsis")
    if state.version:
        text.append(f"  daemon {state.version}", style="dim")
    text.append("  ")
    text.append(state.connection.text, style=_LINK_STYLES[state.connection.link])
    return text


def _budget(state: WatchState) -> Text:
    """``GPU memory: 16.0GiB of 24.0GiB used, 8.0GiB free`` (SPEC 6.7)."""
    assert state.gpu_memory is not None
    used = state.memory_used()
    free = max(state.gpu_memory - used, 0)
    text = Text("GPU memory: ", style="bold", no_wrap=True, overflow="ellipsis")
    text.append(f"{format_size(used)} of {format_size(state.gpu_memory)} used, ")
    text.append(f"{format_size(free)} free", style="green" if free else "yellow")
    return text


def _ttl_cell(state: WatchState, row: ModelRow, now: float) -> Text:
    left = state.ttl_left(row, now)
    if left is None:
        return Text(UNKNOWN, style="dim")
    if isinstance(left, str):
        return Text(left, style="dim")
    return Text(format_seconds(left), style="red" if left < 10 else "")


def _models(state: WatchState, now: float, limit: int | None = None) -> RenderableType:
    if not state.models:
        return Text("no models" if state.synced else "no models yet", style="dim")
    # while (re)connecting the rows are what we last saw, which may no longer be true
    title = "Models" if state.synced else "Models (as last seen; not connected)"
    rows = list(state.models.values())
    table = _table(_shown(title, len(rows), limit))
    table.add_column("model", no_wrap=True, overflow="ellipsis", min_width=8, max_width=24)
    table.add_column("name", no_wrap=True, overflow="ellipsis", max_width=20)
    table.add_column("state", no_wrap=True, min_width=8)
    table.add_column("in flight", justify="right", no_wrap=True, min_width=9)
    table.add_column("TTL left", justify="right", no_wrap=True, min_width=8)
    table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=36)
    # busy models first when not all fit
    if limit is not None and limit < len(rows):
        rows.sort(key=lambda r: (r.in_flight == 0, r.state in ("stopped", "shutdown")))
    for row in rows[:limit]:
        table.add_row(
            row.id,
            row.name or "",
            Text(row.state, style=_STATE_STYLES.get(row.state, "")),
            str(row.in_flight),
            _ttl_cell(state, row, now),
            Text(_first_line(row.error or ""), style="red"),
        )
    return table


def _queue(state: WatchState) -> Text:
    text = Text("Queue: ", style="bold")
    if not state.queue:
        text.append("empty", style="dim")
        return text
    ordered = sorted(
        state.queue, key=lambda e: e.position if e.position is not None else len(state.queue)
    )
    text.append(
        "  ".join(
            f"{e.position}. {e.model}" if e.position is not None else e.model for e in ordered
        )
    )
    return text


def _swap_result(swap: SwapRow, now: float) -> tuple[Text, str]:
    if not swap.done:
        return Text("loading", style="yellow"), format_seconds(now - swap.started) + "…"
    duration = format_duration_ms(swap.duration_ms)
    if swap.ok is False:
        error = _first_line(swap.error or "")
        return Text("failed" + (f": {error}" if error else ""), style="red"), duration
    if swap.ok is True:
        return Text("ok", style="green"), duration
    return Text(UNKNOWN, style="dim"), duration


def _swaps(state: WatchState, now: float, limit: int | None = None) -> RenderableType:
    if not state.swaps:
        return Text("Swaps: none yet", style="dim")
    table = _table(_shown("Last swaps", len(state.swaps), limit))
    table.add_column("when", justify="right", no_wrap=True, min_width=7)
    table.add_column("model", no_wrap=True, overflow="ellipsis", min_width=6, max_width=24)
    table.add_column("evicted", no_wrap=True, overflow="ellipsis", max_width=20)
    table.add_column("duration", justify="right", no_wrap=True, min_width=8)
    table.add_column("result", no_wrap=True, overflow="ellipsis", max_width=44)
    for swap in list(reversed(state.swaps))[:limit]:
        result, duration = _swap_result(swap, now)
        table.add_row(
            _ago(swap.started, now), swap.model, ", ".join(swap.evict) or "-", duration, result
        )
    return table


def _status_cell(request: RequestRow) -> Text:
    if request.status is None:
        return Text(UNKNOWN, style="dim")
    style = "green" if request.status < 400 else "yellow" if request.status < 500 else "red"
    return Text(str(request.status), style=style)


def _tokens(request: RequestRow) -> str:
    if request.prompt_tokens is None and request.completion_tokens is None:
        return UNKNOWN
    prompt = UNKNOWN if request.prompt_tokens is None else str(request.prompt_tokens)
    completion = UNKNOWN if request.completion_tokens is None else str(request.completion_tokens)
    return f"{prompt} → {completion}"


def _note(request: RequestRow) -> Text:
    if request.error is not None:
        return Text(request.error, style="red")
    if request.client_left:
        return Text("client left", style="yellow")
    return Text("")


def _requests(
    state: WatchState,
    now: float,
    limit: int | None = None,
    wide: bool = True,
    narrow: bool = False,
    tiny: bool = False,
) -> RenderableType:
    if not state.requests:
        return Text("Requests: none yet", style="dim")
    failed = sum(1 for request in state.requests if request.failed)
    title = "Last requests" + (f", {failed} failed" if failed else "")
    table = _table(_shown(title, len(state.requests), limit))
    if not tiny:
        table.add_column("when", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True, overflow="ellipsis", max_width=24)
    if wide:
        table.add_column("path", no_wrap=True, overflow="ellipsis", max_width=30)
    table.add_column("status", justify="right", no_wrap=True)
    table.add_column("queue", justify="right", no_wrap=True, min_width=7)
    table.add_column("load", justify="right", no_wrap=True, min_width=7)
    if not narrow:
        table.add_column("ttfb", justify="right", no_wrap=True, min_width=7)
    table.add_column("duration", justify="right", no_wrap=True, min_width=8)
    if not narrow:
        table.add_column("tok/s", justify="right", no_wrap=True)
    if wide:
        table.add_column("tokens in → out", justify="right", no_wrap=True)
    table.add_column("error", no_wrap=True, overflow="ellipsis", min_width=17)
    for request in list(reversed(state.requests))[:limit]:
        tps = request.tokens_per_second
        load = request.load_ms
        cells: list[RenderableType] = [] if tiny else [_ago(request.seen, now)]
        cells.append(request.model)
        if wide:
            cells.append(request.path)
        cells += [
            _status_cell(request),
            format_duration_ms(request.queue_ms),
            UNKNOWN if not load else format_duration_ms(load),
        ]
        if not narrow:
            cells.append(format_duration_ms(request.ttfb_ms))
        cells.append(format_duration_ms(request.duration_ms))
        if not narrow:
            cells.append(UNKNOWN if tps is None else f"{tps:.1f}")
        if wide:
            cells.append(_tokens(request))
        cells.append(_note(request))
        table.add_row(*cells)
    return table


def _logs(state: WatchState, limit: int | None = None) -> RenderableType:
    logs = list(state.logs)
    if limit is not None:
        logs = logs[len(logs) - limit :] if limit else []
    lines = [
        Text(f"[{log.model or log.source}] ", style="dim", no_wrap=True, overflow="ellipsis")
        + Text(log.line)
        for log in logs
    ]
    for line in lines:
        line.no_wrap = True
        line.overflow = "ellipsis"
    return Group(Text("Log", style="bold"), *lines)
