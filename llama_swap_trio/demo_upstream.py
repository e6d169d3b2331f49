"""The built-in demo upstream: a small OpenAI-compatible server that makes up pleasant text.

``llama-swap-trio demo-upstream --port N`` lets ``config/demo.toml`` serve real requests on a
machine with no inference server. It speaks the parts of the OpenAI API that chat clients use:

- ``GET /health`` (200 ``OK``) and ``GET /v1/models``;
- ``POST /v1/chat/completions`` and ``POST /v1/completions``, streaming (SSE) or not;
- ``POST /v1/embeddings`` (small deterministic unit vectors; ``encoding_format`` float or base64);
- with ``--sleep-mode``, vLLM's sleep mode: ``POST /sleep?level=1``, ``POST /wake_up`` (which takes
  ``--wake-delay`` seconds, far less than a ``--startup-delay``) and ``GET /is_sleeping``; a
  sleeping server answers generation requests with 503, as its weights are not on the GPU.

Answers are seeded from the model id and the prompt, so the same question gets the same answer,
and they name the model, so a user watching a swap sees which model answered. Tokens are paced at
``tokens_per_second`` (streaming or not, as a real server would take that long). Every answer has
``usage`` (and llama-server's ``timings``); a stream carries ``usage`` in its last chunk, in
OpenAI's own ``choices: []`` chunk when ``stream_options.include_usage`` is set.

The app is raw ASGI on hypercorn-trio: no framework, explicit disconnect handling (hypercorn's
``send`` does not fail when the client is gone, so a stream watches ``receive`` for
``http.disconnect`` and stops generating).
"""

from __future__ import annotations

import array
import base64
import hashlib
import json
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from llama_swap_trio.http.asgi import Receive, Scope, Send, answer_lifespan

log = logging.getLogger(__name__)

MAX_BODY = 10 * 1024 * 1024
EMBEDDING_DIMENSIONS = 16
#: seconds ``POST /wake_up`` takes in ``--sleep-mode``
DEFAULT_WAKE_DELAY = 0.05
OWNED_BY = "llama-swap-trio-demo"


class _ClientGone(Exception):
    """The client left before we read its whole request; there is no one to answer."""


class BadRequest(Exception):
    """A request we refuse, answered with an OpenAI-shaped error."""

    def __init__(
        self, message: str, *, status: int = 400, code: str = "invalid_request", param: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param or None


# --------------------------------------------------------------------------- text generation

_OPENERS = (
    "Hello from {model}!",
    "This is {model} answering.",
    "{model} here, happy to help.",
    "Greetings from {model}, the demo model.",
)
_SUBJECTS = (
    "The quiet river",
    "A curious fox",
    "Every good proxy",
    "The morning light",
    "A patient llama",
    "The little server",
    "An old lighthouse",
    "The garden path",
)
_VERBS = ("wanders past", "listens to", "remembers", "brightens", "carries", "swaps", "greets")
_OBJECTS = (
    "the sleepy hills",
    "a field of sunflowers",
    "the last warm tokens",
    "a cup of fresh tea",
    "the evening breeze",
    "a stack of old maps",
    "the distant mountains",
)
_ENDINGS = (
    "with a gentle smile",
    "before the rain begins",
    "as the stars come out",
    "without any hurry",
    "just in time for lunch",
    "while the kettle sings",
)


def _rng_for(model_id: str, *parts: object) -> random.Random:
    material = json.dumps([model_id, *parts], sort_keys=True, default=str).encode()
    return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))


def _sentences(rng: random.Random, model_id: str, prompt_text: str) -> Iterator[str]:
    yield rng.choice(_OPENERS).format(model=model_id)
    words = prompt_text.split()
    if words:
        quoted = " ".join(words[:6]) + (" ..." if len(words) > 6 else "")
        yield f'You said: "{quoted}".'
    while True:
        subject, verb, obj = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
        tail = f" {rng.choice(_ENDINGS)}" if rng.random() < 0.6 else ""
        yield f"{subject} {verb} {obj}{tail}."


def generate_tokens(
    model_id: str,
    prompt_text: str,
    max_tokens: int | None,
    seed: object = None,
    *,
    quote_prompt: bool = True,
) -> tuple[list[str], str]:
    """The answer as tokens (words with their trailing space) and its finish reason.

    Without ``max_tokens`` the answer is 30 to 60 tokens, ending at a sentence; with it, the answer
    stops at ``max_tokens`` (finish reason ``length``) unless a sentence ends there first.
    """
    rng = _rng_for(model_id, prompt_text, seed)
    target = max_tokens if max_tokens is not None else rng.randint(30, 60)
    tokens: list[str] = []
    for sentence in _sentences(rng, model_id, prompt_text if quote_prompt else ""):
        tokens.extend(word + " " for word in sentence.split())
        if len(tokens) >= target:
            break
    if max_tokens is not None and len(tokens) > max_tokens:
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def count_tokens(text: str) -> int:
    """A rough token count (words), at least 1 so usage never reports an empty prompt."""
    return max(1, len(text.split()))


def embed(model_id: str, text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``: equal texts embed equally."""
    rng = _rng_for(model_id, "embedding", text)
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [round(x / norm, 6) for x in vector]


# --------------------------------------------------------------------------- request parsing


def _message_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    raise BadRequest("message content must be a string or a list of parts", param="messages")


def _chat_prompt(body: dict[str, Any]) -> tuple[str, str]:
    """(all text, for the token count; the last user text, for the answer)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    texts, last_user = [], ""
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("each message must be an object with a 'role'", param="messages")
        text = _message_text(message.get("content"))
        texts.append(text)
        if message["role"] == "user":
            last_user = text
    return " ".join(texts), last_user


def _completion_prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return " ".join(prompt)
    raise BadRequest("'prompt' must be a string or a list of strings", param="prompt")


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "n_predict"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(f"'{key}' must be a positive integer", param=key)
        return value
    return None


def _embedding_inputs(body: dict[str, Any]) -> list[str]:
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]  # one pre-tokenised input
    raise BadRequest("'input' must be a string or a non-empty list of strings", param="input")


# --------------------------------------------------------------------------------- the app


class DemoApp:
    """The ASGI application; one per served model id."""

    def __init__(
        self,
        model_id: str,
        tokens_per_second: float,
        *,
        sleep_mode: bool = False,
        wake_delay: float = DEFAULT_WAKE_DELAY,
    ) -> None:
        self.model_id = model_id
        self.tokens_per_second = tokens_per_second
        self.created = int(time.time())
        self.sleep_mode = sleep_mode
        self.wake_delay = wake_delay
        self.asleep = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Returning early on lifespan crashes hypercorn-trio at startup (research 1.1).
            await answer_lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:  # websockets: not ours; closing before accept answers 403
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        try:
            if path == "/health":
                _require(method, "GET", "HEAD")
                await _send_body(send, 200, b"OK", b"text/plain; charset=utf-8")
            elif path in ("/v1/models", "/models"):
                _require(method, "GET", "HEAD")
                await _send_json(send, 200, self._models())
            elif self.sleep_mode and path in ("/sleep", "/wake_up", "/is_sleeping"):
                await self._sleep_mode(method, path, send)
            elif self.asleep and path != "/health":
                raise BadRequest(f"{self.model_id} is sleeping", status=503, code="sleeping")
            elif path in ("/v1/chat/completions", "/chat/completions"):
                _require(method, "POST")
                await self._completion(receive, send, await _read_json(receive), chat=True)
            elif path in ("/v1/completions", "/completions"):
                _require(method, "POST")
                await self._completion(receive, send, await _read_json(receive), chat=False)
            elif path in ("/v1/embeddings", "/embeddings"):
                _require(method, "POST")
                await _send_json(send, 200, self._embeddings(await _read_json(receive)))
            else:
                raise BadRequest(f"no such endpoint: {path}", status=404, code="not_found")
        except BadRequest as error:
            await _send_error(send, error)
        except _ClientGone:
            log.info("client disconnected before its request was read")

    async def _sleep_mode(self, method: str, path: str, send: Send) -> None:
        """vLLM's sleep-mode endpoints: the state flips after the (pretend) work."""
        if path == "/is_sleeping":
            _require(method, "GET")
        else:
            _require(method, "POST")
        if path == "/sleep" and not self.asleep:
            log.info("%s: going to sleep", self.model_id)
            self.asleep = True
        elif path == "/wake_up" and self.asleep:
            await trio.sleep(self.wake_delay)  # the weights come back from host memory
            self.asleep = False
            log.info("%s: awake", self.model_id)
        await _send_json(send, 200, {"is_sleeping": self.asleep})

    def _models(self) -> dict[str, Any]:
        record = {
            "id": self.model_id,
            "object": "model",
            "created": self.created,
            "owned_by": OWNED_BY,
        }
        return {"object": "list", "data": [record]}

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = _embedding_inputs(body)
        dimensions = body.get("dimensions", EMBEDDING_DIMENSIONS)
        if (
            not isinstance(dimensions, int)
            or isinstance(dimensions, bool)
            or not (1 <= dimensions <= 4096)
        ):
            raise BadRequest("'dimensions' must be an integer from 1 to 4096", param="dimensions")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise BadRequest(
                "'encoding_format' must be 'float' or 'base64'", param="encoding_format"
            )
        data = []
        for index, text in enumerate(inputs):
            vector = embed(self.model_id, text, dimensions)
            value: list[float] | str = vector
            if encoding == "base64":  # little-endian float32, what the openai SDK asks for
                value = base64.b64encode(array.array("f", vector).tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(count_tokens(text) for text in inputs)
        return {
            "object": "list",
            "data": data,
            "model": _requested_model(body, self.model_id),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def _completion(
        self, receive: Receive, send: Send, body: dict[str, Any], *, chat: bool
    ) -> None:
        if chat:
            prompt_all, prompt_answer = _chat_prompt(body)
        else:
            prompt_all = prompt_answer = _completion_prompt(body)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("'stream' must be a boolean", param="stream")
        tokens, finish = generate_tokens(
            self.model_id, prompt_answer, _max_tokens(body), body.get("seed"), quote_prompt=chat
        )
        answer = _Answer(
            chat=chat,
            model=_requested_model(body, self.model_id),
            tokens=tokens,
            finish_reason=finish,
            prompt_tokens=count_tokens(prompt_all),
            tokens_per_second=self.tokens_per_second,
        )
        if stream:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            await _stream_answer(receive, send, answer, include_usage=include_usage)
        else:
            await answer.pace_all()
            await _send_json(send, 200, answer.full_response())


class _Answer:
    """One generated answer and how to render it (whole, or as stream chunks)."""

    def __init__(
        self,
        *,
        chat: bool,
        model: str,
        tokens: list[str],
        finish_reason: str,
        prompt_tokens: int,
        tokens_per_second: float,
    ) -> None:
        self.chat = chat
        self.model = model
        self.tokens = tokens
        self.finish_reason = finish_reason
        self.prompt_tokens = prompt_tokens
        self.interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self.id = ("chatcmpl-" if chat else "cmpl-") + hashlib.sha1(
            f"{time.time_ns()}{model}".encode()
        ).hexdigest()[:24]
        self.created = int(time.time())
        self.started = trio.current_time()

    async def pace(self, index: int) -> None:
        """Sleep until token ``index`` is due (from a fixed start, so pauses do not drift)."""
        if self.interval:
            await trio.sleep_until(self.started + index * self.interval)

    async def pace_all(self) -> None:
        await self.pace(len(self.tokens))

    def usage(self) -> dict[str, Any]:
        completion = len(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def timings(self) -> dict[str, Any]:
        """llama-server's timing block, which proxies read for tokens-per-second figures."""
        predicted_ms = max(0.001, (trio.current_time() - self.started) * 1000.0)
        return {
            "prompt_n": self.prompt_tokens,
            "prompt_ms": 0.5,
            "prompt_per_second": self.prompt_tokens / 0.0005,
            "predicted_n": len(self.tokens),
            "predicted_ms": round(predicted_ms, 3),
            "predicted_per_second": round(len(self.tokens) / (predicted_ms / 1000.0), 3),
        }

    def _envelope(self, chunk: bool) -> dict[str, Any]:
        if self.chat:
            obj = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            obj = "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def full_response(self) -> dict[str, Any]:
        text = "".join(self.tokens).rstrip()
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish_reason}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice.update(text=text, logprobs=None)
        response = self._envelope(chunk=False)
        response.update(choices=[choice], usage=self.usage(), timings=self.timings())
        return response

    def chunk(self, piece: str | None, finish_reason: str | None = None) -> dict[str, Any]:
        """A stream chunk carrying ``piece`` (``None``: the opening role chunk of a chat)."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason}
        if self.chat:
            delta: dict[str, Any] = {}
            if piece is None:
                delta = {"role": "assistant", "content": ""}
            elif piece:
                delta = {"content": piece}
            choice["delta"] = delta
        else:
            choice.update(text=piece or "", logprobs=None)
        chunk = self._envelope(chunk=True)
        chunk["choices"] = [choice]
        return chunk

    def final_chunks(self, include_usage: bool) -> list[dict[str, Any]]:
        last = self.chunk("", self.finish_reason)
        if not include_usage:
            last.update(usage=self.usage(), timings=self.timings())
            return [last]
        usage_chunk = self._envelope(chunk=True)
        usage_chunk.update(choices=[], usage=self.usage(), timings=self.timings())
        return [last, usage_chunk]


async def _stream_answer(
    receive: Receive, send: Send, answer: _Answer, *, include_usage: bool
) -> None:
    """Send the answer as SSE, token by token; stop at once if the client goes away."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )

    async def event_bytes(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    async def event(obj: object) -> None:
        await event_bytes(b"data: " + json.dumps(obj).encode() + b"\n\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        if answer.chat:
            await event(answer.chunk(None))
        for index, token in enumerate(answer.tokens):
            await answer.pace(index + 1)
            await event(answer.chunk(token))
        for chunk in answer.final_chunks(include_usage):
            await event(chunk)
        await event_bytes(b"data: [DONE]\n\n")
        # Stop watching before ending the response: a finished response also ends in
        # http.disconnect, which is no news.
        nursery.cancel_scope.cancel()
    # Outside the (cancelled) nursery, so this send is not cancelled. After a disconnect it goes
    # nowhere, harmlessly: hypercorn's send does not fail.
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    log.info("client disconnected; stopping the stream")
    scope.cancel()


# ------------------------------------------------------------------------------ small helpers


def _require(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise BadRequest(f"method {method} not allowed here", status=405, code="method_not_allowed")


def _requested_model(body: dict[str, Any], default: str) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else default


async def _read_json(receive: Receive) -> dict[str, Any]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest("request body too large", status=413, code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as error:
        raise BadRequest(f"request body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


async def _send_body(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Send, status: int, obj: object) -> None:
    await _send_body(send, status, json.dumps(obj).encode(), b"application/json")


async def _send_error(send: Send, error: BadRequest) -> None:
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    payload = {
        "error": {
            "message": error.message,
            "type": kind,
            "param": error.param,
            "code": error.code,
        }
    }
    await _send_json(send, error.status, payload)


# --------------------------------------------------------------------------------- serving


async def serve_demo(
    port: int,
    model_id: str,
    *,
    startup_delay: float = 0.0,
    tokens_per_second: float = 30.0,
    host: str = "127.0.0.1",
    shutdown: trio.Event | None = None,
    sleep_mode: bool = False,
    wake_delay: float = DEFAULT_WAKE_DELAY,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the demo model until cancelled (or until ``shutdown`` is set, gracefully).

    Sleeps ``startup_delay`` first, like a server loading its weights, so ``/health`` is not even
    reachable meanwhile. ``task_status.started`` gets the bound port (useful with port 0).
    """
    if startup_delay > 0:
        log.info("loading %s (pretending for %.1f s)", model_id, startup_delay)
        with trio.move_on_after(startup_delay):
            if shutdown is not None:
                await shutdown.wait()
            else:
                await trio.sleep_forever()
    if shutdown is not None and shutdown.is_set():
        return  # asked to stop while "loading": never listen (task_status is not started)
    config = HypercornConfig()
    shown_host = f"[{host}]" if ":" in host else host  # IPv6 literals go in brackets
    config.bind = [f"{shown_host}:{port}"]
    config.graceful_timeout = 1.0
    config.accesslog = None
    # A Logger (not "-") makes hypercorn log through our handlers instead of adding its own.
    config.errorlog = logging.getLogger("hypercorn.error")
    trigger = shutdown.wait if shutdown is not None else trio.sleep_forever
    app = DemoApp(model_id, tokens_per_second, sleep_mode=sleep_mode, wake_delay=wake_delay)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            # hypercorn types scopes and events as TypedDicts; our plain dicts carry the same data.
            partial(serve, app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
        )
        bound = int(binds[0].rsplit(":", 1)[1])
        log.info("listening on http://%s:%d (model %s)", shown_host, bound, model_id)
        task_status.started(bound)


def run(
    port: int,
    model_id: str,
    startup_delay: float,
    tokens_per_second: float,
    host: str = "127.0.0.1",
    *,
    sleep_mode: bool = False,
    wake_delay: float = DEFAULT_WAKE_DELAY,
) -> None:
    """Run the demo server until SIGINT or SIGTERM (then return normally, for exit code 0).

    Raises:
        OSError: the address could not be bound (for example, the port is in use).
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    try:
        trio.run(
            partial(_run, sleep_mode=sleep_mode, wake_delay=wake_delay),
            port,
            model_id,
            startup_delay,
            tokens_per_second,
            host,
        )
    except BaseExceptionGroup as group:
        # Nurseries wrap errors in groups; the CLI wants the plain OSError to report it.
        oserror = _first_oserror(group)
        if oserror is None:
            raise
        raise oserror from None


async def _run(
    port: int,
    model_id: str,
    startup_delay: float,
    tokens_per_second: float,
    host: str,
    *,
    sleep_mode: bool,
    wake_delay: float,
) -> None:
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    if shutdown.is_set():  # a second signal: stop waiting for anything
                        nursery.cancel_scope.cancel()
                        return
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    shutdown.set()

            nursery.start_soon(watch_signals)
            await serve_demo(
                port,
                model_id,
                startup_delay=startup_delay,
                tokens_per_second=tokens_per_second,
                host=host,
                shutdown=shutdown,
                sleep_mode=sleep_mode,
                wake_delay=wake_delay,
            )
            # hypercorn has drained (or we were still loading); the watcher is all that is left.
            nursery.cancel_scope.cancel()


def _first_oserror(group: BaseExceptionGroup[BaseException]) -> OSError | None:
    for error in group.exceptions:
        if isinstance(error, OSError):
            return error
        if isinstance(error, BaseExceptionGroup):
            found = _first_oserror(group=error)
            if found is not None:
                return found
    return None
