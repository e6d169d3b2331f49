"""Rich renderables for the ``watch`` view, from a ``WatchState``. No I/O: tests render to a
recording console and read the text back.

The view, top to bottom: the connection line (and a lag notice), the models with their state,
requests in flight and TTL left, the queue, the last swaps and the last requests (newest first).
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from llama_swap_trio.watch.state import Link, ModelRow, RequestRow, SwapRow, WatchState

UNKNOWN = "-"

_STATE_STYLES = {
    "ready": "bold green",
    "starting": "yellow",
    "stopping": "magenta",
    "stopped": "dim",
    "shutdown": "dim red",
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


def render(state: WatchState, now: float | None = None) -> RenderableType:
    """The whole view. ``now`` (on ``state.clock``) defaults to the state's clock."""
    now = state.clock() if now is None else now
    parts: list[RenderableType] = [_header(state)]
    if state.dropped:
        parts.append(
            Text(
                f"lagged: this view missed {state.dropped} event(s); counts may be stale "
                "until the next reconnect",
                style="yellow",
            )
        )
    parts += [
        _models(state, now),
        _queue(state),
        _swaps(state, now),
        _requests(state, now),
    ]
    if state.logs:
        parts.append(_logs(state))
    return Group(*parts)


def _header(state: WatchState) -> Text:
    text = Text("llama-swap-trio watch", style="bold")
    if state.version:
        text.append(f"  daemon {state.version}", style="dim")
    text.append("  ")
    text.append(state.connection.text, style=_LINK_STYLES[state.connection.link])
    return text


def _ttl_cell(state: WatchState, row: ModelRow, now: float) -> Text:
    left = state.ttl_left(row, now)
    if left is None:
        return Text(UNKNOWN, style="dim")
    if isinstance(left, str):
        return Text(left, style="dim")
    return Text(format_seconds(left), style="red" if left < 10 else "")


def _models(state: WatchState, now: float) -> RenderableType:
    if not state.models:
        return Text("no models" if state.synced else "no models yet", style="dim")
    # while (re)connecting the rows are what we last saw, which may no longer be true
    title = "Models" if state.synced else "Models (as last seen; not connected)"
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("model", no_wrap=True)
    table.add_column("name")
    table.add_column("state", no_wrap=True)
    table.add_column("in flight", justify="right")
    table.add_column("TTL left", justify="right", no_wrap=True)
    table.add_column("note", overflow="ellipsis", max_width=50)
    for row in state.models.values():
        table.add_row(
            row.id,
            row.name or "",
            Text(row.state, style=_STATE_STYLES.get(row.state, "")),
            str(row.in_flight),
            _ttl_cell(state, row, now),
            Text(row.error or "", style="red"),
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
        return Text("failed" + (f": {swap.error}" if swap.error else ""), style="red"), duration
    if swap.ok is True:
        return Text("ok", style="green"), duration
    return Text(UNKNOWN, style="dim"), duration


def _swaps(state: WatchState, now: float) -> RenderableType:
    if not state.swaps:
        return Text("Swaps: none yet", style="dim")
    table = Table(title="Last swaps", title_justify="left")
    table.add_column("when", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("evicted")
    table.add_column("result", overflow="ellipsis", max_width=50)
    table.add_column("duration", justify="right", no_wrap=True)
    for swap in reversed(state.swaps):
        result, duration = _swap_result(swap, now)
        table.add_row(
            _ago(swap.started, now), swap.model, ", ".join(swap.evict) or "-", result, duration
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


def _requests(state: WatchState, now: float) -> RenderableType:
    if not state.requests:
        return Text("Requests: none yet", style="dim")
    table = Table(title="Last requests", title_justify="left")
    table.add_column("when", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True)
    table.add_column("path", overflow="ellipsis", max_width=30)
    table.add_column("status", justify="right")
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("ttfb", justify="right", no_wrap=True)
    table.add_column("tok/s", justify="right")
    table.add_column("tokens in → out", justify="right", no_wrap=True)
    for request in reversed(state.requests):
        tps = request.tokens_per_second
        table.add_row(
            _ago(request.seen, now),
            request.model,
            request.path,
            _status_cell(request),
            format_duration_ms(request.duration_ms),
            format_duration_ms(request.ttfb_ms),
            UNKNOWN if tps is None else f"{tps:.1f}",
            _tokens(request),
        )
    return table


def _logs(state: WatchState) -> RenderableType:
    lines = [
        Text(f"[{log.model or log.source}] ", style="dim") + Text(log.line) for log in state.logs
    ]
    return Group(Text("Log", style="bold"), *lines)
