"""The HTTP layer: OpenAI-compatible ``/v1/completions`` and ``/v1/models``, Ollama-style
``/api/generate``, ``/health``, and the playground page at ``/``, on starlette + uvicorn.

Everything the event loop does is cheap (checking a request, writing text out); the model
runs in the batch worker's thread (``charrnn.serve.scheduler``), so the loop answers
``/health`` and new requests while a step runs.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import AsyncIterator, Callable

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from charrnn.data.vocab import Vocab
from charrnn.generation.sample import SampleConfig
from charrnn.model.network import CharRNN
from charrnn.serve.config import ServeConfig, listening_socket
from charrnn.serve.logprobs import Scored, ollama_logprobs, openai_logprobs, score_streams
from charrnn.serve.protocol import ApiError, GenerationRequest, completion_request, error_object, generate_request, parse_body
from charrnn.serve.scheduler import BatchWorker, NotAccepting, QueueFull, Stream
from charrnn.text import shown
from charrnn.threads import set_threads

# Seconds between two hand-overs of text to the clients (a stream's first text and its end go
# at once). Each piece written costs the event loop tens of microseconds, whatever its
# length: at 100 pieces a second a reader sees text flow as smoothly as per character, and 32
# streams cost the event loop a third of what one piece per character each did.
DELIVERY_INTERVAL = 0.01

# Seconds a client is told to wait after a 503 for a full queue: streams of a few hundred
# characters end within about a second here.
RETRY_AFTER = 1

ROUTES = "GET /, GET /health, GET /v1/models, POST /v1/completions, POST /api/generate"


@dataclass
class Hub:
    """What every request shares: the batch worker, the model's name and facts, the limits, and
    whether the server is shutting down."""

    worker: BatchWorker
    vocab: Vocab
    model_id: str
    facts: dict
    config: ServeConfig
    started: float = field(default_factory=time.time)
    shutting_down: bool = False
    loop: asyncio.AbstractEventLoop | None = None
    _next_delivery: float = 0.0
    _timer: asyncio.TimerHandle | None = None

    def deliver(self) -> None:
        """On the event loop: hand the worker's news to the requests waiting for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._next_delivery = self.loop.time() + DELIVERY_INTERVAL
        for stream in self.worker.take_news():
            if stream.listener is not None:
                stream.listener()

    def wake(self, urgent: bool) -> None:
        """From the worker: it has news."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._deliver_in_time, urgent)

    def _deliver_in_time(self, urgent: bool) -> None:
        if urgent or self.loop.time() >= self._next_delivery:
            self.deliver()
        elif self._timer is None:
            self._timer = self.loop.call_at(self._next_delivery, self.deliver)

    def begin_shutdown(self) -> None:
        """On the event loop, at the first SIGTERM or Ctrl-C: take no new streams, give the
        running ones the grace period, then end them."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.worker.stop_accepting()
        asyncio.get_running_loop().call_later(self.config.grace, self.worker.end_all, "shutdown")


# -- requests and their streams -------------------------------------------------------


async def _read_json(request: Request, limit: int) -> dict:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(len(body), limit, at_least=True)
    return parse_body(bytes(body))


def _too_large(size: int, limit: int, at_least: bool = False) -> ApiError:
    said = f"over {limit:,}" if at_least else f"{size:,}"
    return ApiError(413, f"the request body is {said} bytes; the server takes at most {limit:,} (--max-body)", code="request_too_large")


def _open_streams(hub: Hub, wanted: GenerationRequest) -> list[Stream]:
    streams = [
        Stream(
            SampleConfig(
                length=wanted.max_tokens,
                temperature=wanted.temperature,
                top_p=wanted.top_p,
                top_k=wanted.top_k,
                prime=wanted.prompt,
                seed=seed,
                stop=wanted.stop,
            ),
            hub.vocab,
            wanted.prompt_ids,
        )
        for seed in wanted.seeds()
    ]
    score_streams(streams, hub.vocab, wanted.logprobs, wanted.prompt, wanted.echo)
    if hub.worker.has_room(len(streams)):  # no fill for a request that will be turned away
        for stream in streams:
            # Here rather than on the worker: the fill frees the GIL, so the batch steps on
            # meanwhile (32 clients of a small model: 12% more characters per second).
            stream.noise.prefetch()
    try:
        hub.worker.submit(streams)
    except QueueFull:
        e = hub.worker
        raise ApiError(
            503,
            f"the server is at its limit ({e.max_streams} streams running, {e.max_queue} waiting); retry in {RETRY_AFTER} s",
            code="server_busy",
            kind="server_error",
            headers={"Retry-After": str(RETRY_AFTER)},
        ) from None
    except NotAccepting:
        raise ApiError(503, "the server is shutting down and takes no new requests", code="shutting_down", kind="server_error") from None
    return streams


async def _pieces(hub: Hub, streams: list[Stream]) -> AsyncIterator[tuple[int, str, str | None, list[Scored]]]:
    """(index, text, finish reason or None, the log probabilities of the text) as the streams
    make text, until all have ended. If the consumer stops early (the client went away), the
    streams leave the batch."""
    news = asyncio.Event()
    for stream in streams:
        stream.listener = news.set
    news.set()  # look first: news may have come before this generator started
    ended: set[int] = set()
    given = [0] * len(streams)  # characters handed out, per stream
    try:
        while len(ended) < len(streams):
            await news.wait()
            news.clear()
            for i, stream in enumerate(streams):
                if i in ended:
                    continue
                text, reason = hub.worker.take(stream)
                if reason is not None:
                    ended.add(i)
                given[i] += len(text)
                scored = [] if stream.scorer is None else stream.scorer.take(given[i], reason is not None)
                if text or reason is not None or scored:
                    yield i, text, reason, scored
    finally:
        for i, stream in enumerate(streams):
            if i not in ended:
                hub.worker.cancel(stream)


async def _until_client_leaves(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _collect(hub: Hub, request: Request, streams: list[Stream]) -> list[tuple[str, str, list[Scored]]]:
    """Every stream's whole text, finish reason and log probabilities; the streams are dropped
    if the client leaves before they end."""
    texts = [[] for _ in streams]
    reasons = [""] * len(streams)
    scores: list[list[Scored]] = [[] for _ in streams]

    async def gather() -> None:
        async for i, text, reason, scored in _pieces(hub, streams):
            texts[i].append(text)
            scores[i] += scored
            if reason is not None:
                reasons[i] = reason

    work = asyncio.ensure_future(gather())
    gone = asyncio.ensure_future(_until_client_leaves(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    if not work.done() or work.cancelled():
        # Nobody is left to read the answer; this only ends the request quietly.
        raise ApiError(499, "the client closed the connection before the completion ended", code="client_closed")
    work.result()
    return [("".join(t), r, s) for t, r, s in zip(texts, reasons, scores)]


def _ended_early(reason: str, grace: float) -> ApiError | None:
    if reason == "shutdown":
        return ApiError(503, f"the server is shutting down: the completion was cut short after the {grace:g} s grace period", code="server_shutdown", kind="server_error")
    if reason == "error":
        return ApiError(500, "the model failed while making this completion; the server goes on", code="internal_error", kind="server_error")
    return None


# -- OpenAI ---------------------------------------------------------------------------


def _usage(streams: list[Stream]) -> dict:
    completion = sum(s.produced for s in streams)
    prompt = streams[0].prompt_tokens * len(streams)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def completions(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    wanted = completion_request(await _read_json(request, hub.config.max_body), hub.vocab, hub.config, hub.model_id)
    streams = _open_streams(hub, wanted)
    head = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()), "model": hub.model_id}
    if wanted.stream:
        return StreamingResponse(_completion_events(hub, streams, head, wanted), media_type="text/event-stream", headers=_EVENT_HEADERS)
    results = await _collect(hub, request, streams)
    for _, reason, _ in results:
        if (problem := _ended_early(reason, hub.config.grace)) is not None:
            raise problem
    echo = wanted.prompt if wanted.echo else ""
    logprobs = (lambda scored: None) if wanted.logprobs is None else openai_logprobs
    choices = [{"text": echo + text, "index": i, "logprobs": logprobs(scored), "finish_reason": reason} for i, (text, reason, scored) in enumerate(results)]
    return JSONResponse({**head, "choices": choices, "usage": _usage(streams), "system_fingerprint": None})


# Never cached or buffered on the way: an event stream is read as it comes.
_EVENT_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _completion_events(hub: Hub, streams: list[Stream], head: dict, wanted: GenerationRequest) -> AsyncIterator[str]:
    # The part of every chunk before its text, serialised once: a chunk then costs one
    # json.dumps of its text (the event loop writes thousands of chunks a second).
    before_text = "data: " + json.dumps(head, ensure_ascii=False)[:-1] + ', "choices": [{"text": '
    echo = [wanted.prompt if wanted.echo else ""] * len(streams)  # the prompt, before a choice's first text

    def chunk(i: int, text: str, reason: str | None, scored: list[Scored]) -> str:
        text, echo[i] = echo[i] + text, ""
        logprobs = "null" if wanted.logprobs is None else json.dumps(openai_logprobs(scored), ensure_ascii=False)
        return f'{before_text}{json.dumps(text, ensure_ascii=False)}, "index": {i}, "logprobs": {logprobs}, "finish_reason": {json.dumps(reason)}}}]}}\n\n'

    async for i, text, reason, scored in _pieces(hub, streams):
        problem = _ended_early(reason or "", hub.config.grace)
        if problem is not None:
            if text:
                yield chunk(i, text, None, scored)
            yield _event({**problem.body(), "index": i})
            continue
        yield chunk(i, text, reason, scored)
    if wanted.include_usage:
        yield _event({**head, "choices": [], "usage": _usage(streams)})
    yield "data: [DONE]\n\n"


async def models(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    entry = {"id": hub.model_id, "object": "model", "created": int(hub.started), "owned_by": "charrnn", **hub.facts}
    return JSONResponse({"object": "list", "data": [entry]})


# -- Ollama ---------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ollama_timings(stream: Stream) -> dict:
    ns = 1e9
    end = stream.finished_at or time.perf_counter()
    primed = stream.primed_at or end
    return {
        "total_duration": int((end - stream.submitted) * ns),
        "load_duration": 0,
        "prompt_eval_count": stream.prompt_tokens,
        "prompt_eval_duration": int((primed - stream.submitted) * ns),
        "eval_count": stream.produced,
        "eval_duration": int((end - primed) * ns),
    }


async def generate(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    wanted = generate_request(await _read_json(request, hub.config.max_body), hub.vocab, hub.config, hub.model_id)
    streams = _open_streams(hub, wanted)
    if wanted.stream:
        return StreamingResponse(_generate_lines(hub, streams[0], wanted.logprobs), media_type="application/x-ndjson")
    [(text, reason, scored)] = await _collect(hub, request, streams)
    if (problem := _ended_early(reason, hub.config.grace)) is not None:
        raise problem
    logprobs = {} if wanted.logprobs is None else {"logprobs": ollama_logprobs(scored, wanted.logprobs)}
    return JSONResponse({"model": hub.model_id, "created_at": _now(), "response": text, "done": True, "done_reason": reason, **_ollama_timings(streams[0]), **logprobs})


async def _generate_lines(hub: Hub, stream: Stream, top: int | None) -> AsyncIterator[str]:
    def line(payload: dict) -> str:
        return json.dumps({"model": hub.model_id, "created_at": _now(), **payload}, ensure_ascii=False) + "\n"

    async for _, text, reason, scored in _pieces(hub, [stream]):
        if text or scored:
            logprobs = {} if top is None else {"logprobs": ollama_logprobs(scored, top)}
            yield line({"response": text, "done": False, **logprobs})
        if reason is None:
            continue
        problem = _ended_early(reason, hub.config.grace)
        if problem is not None:
            yield line({"error": problem.message, "done": True, "done_reason": reason})
        else:
            yield line({"response": "", "done": True, "done_reason": reason, **_ollama_timings(stream)})


# -- the rest -------------------------------------------------------------------------


async def health(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    return JSONResponse({
        "status": "shutting_down" if hub.shutting_down else "ok",
        "model": hub.model_id,
        "uptime_s": round(time.time() - hub.started, 3),
        "streams": hub.worker.stats(),
    })


async def playground(request: Request) -> Response:
    page = resources.files("charrnn.serve").joinpath("playground.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"})


def _answer(problem: ApiError) -> JSONResponse:
    return JSONResponse(problem.body(), status_code=problem.status, headers=problem.headers)


async def _api_error(request: Request, exc: ApiError) -> Response:
    return _answer(exc)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    routes = request.app.state.routes
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}; this server has {routes}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; this server has {routes}"
    else:
        message = str(exc.detail)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return JSONResponse(error_object(message, "invalid_request_error", None, code), status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse(error_object(f"internal error: {type(exc).__name__}; the server goes on", "server_error", None, "internal_error"), status_code=500)


class ApiKeyCheck:
    """Every request but the pages themselves (which hold nothing, and ask for the key to
    send) needs ``Authorization: Bearer KEY``."""

    def __init__(self, app, key: str, pages: tuple[str, ...] = ("/",)) -> None:
        self.app, self.key, self.pages = app, key.encode(), pages

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (scope["path"] in self.pages and scope["method"] in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            await self.app(scope, receive, send)
            return
        problem = ApiError(401, "a valid API key is needed: send the header Authorization: Bearer KEY", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await _answer(problem)(scope, receive, send)


def create_app(hub: Hub, routes: tuple[Route, ...] = (), pages: tuple[str, ...] = (), described: str = "") -> Starlette:
    """The server's app; ``routes`` are added to its own (the explorer's), ``pages`` are
    those of them open without the API key, ``described`` lists them for the 404 answer."""
    middleware = []
    if hub.config.cors:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(hub.config.cors), allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    if hub.config.api_key is not None:
        middleware.append(Middleware(ApiKeyCheck, key=hub.config.api_key, pages=("/", *pages)))
    app = Starlette(
        routes=[
            Route("/", playground, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/api/generate", generate, methods=["POST"]),
            *routes,
        ],
        middleware=middleware,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )
    app.state.hub = hub
    app.state.routes = f"{ROUTES}, {described}" if described else ROUTES
    return app


# -- running it -----------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn's server, telling the hub of the first stop signal (so that streams get
    their grace period) and, once stopped, returning instead of raising the signal again."""

    def __init__(self, config: uvicorn.Config, hub: Hub, announce: Callable[[str], None]) -> None:
        super().__init__(config)
        self.hub, self.announce = hub, announce

    async def startup(self, sockets=None) -> None:
        self.hub.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self.announce(f"http://{shown}:{port}")

    def handle_exit(self, sig: int, frame) -> None:
        if not self.should_exit and self.hub.loop is not None:
            self.hub.loop.call_soon_threadsafe(self.hub.begin_shutdown)
            self.announce(None)
        super().handle_exit(sig, frame)

    @contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serving_precision(model: CharRNN, config: ServeConfig) -> tuple[torch.dtype, dict[torch.dtype, float] | None]:
    """The precision of the server's step: ``config.precision``, or for ``auto`` whichever
    of fp32 and bf16 steps ``max_streams`` rows faster on ``threads`` threads, the load the
    server is sized for (charrnn.generation.stepper.choose_precision)."""
    from charrnn.generation.stepper import choose_precision

    set_threads(config.threads)
    return choose_precision(model, "fast", config.max_streams, config.precision, torch.device("cpu"))


def serve(model: CharRNN, vocab: Vocab, model_id: str, facts: dict, config: ServeConfig, announce: Callable[[str | None], None], routes: tuple[Route, ...] = (), pages: tuple[str, ...] = (), described: str = "", sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C (then: no new requests, ``config.grace`` seconds for
    running streams, a last event for those still running). ``announce`` hears the URL once
    the server listens, and None when it begins to stop. ``routes``, ``pages``, ``described``:
    added routes, as ``create_app`` takes them. ``sock``: the socket, bound already by a
    caller that has more to do first (``listening_socket``)."""
    if sock is None:
        sock = listening_socket(config.host, config.port)  # first: a taken port is answered at once
    dtype, _ = serving_precision(model, config)
    worker = BatchWorker(model, vocab, config.max_streams, config.max_queue, config.threads, dtype=dtype)
    # A run directory's name may hold bytes that are not UTF-8; every reply carries the id.
    hub = Hub(worker, vocab, shown(model_id), facts, config)
    worker.wake = hub.wake
    worker.start()
    server_config = uvicorn.Config(
        create_app(hub, routes, pages, described),
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
        loop="asyncio",
        # A backstop: the streams themselves end after the grace period.
        timeout_graceful_shutdown=config.grace + 5,
    )
    try:
        _Server(server_config, hub, announce).run(sockets=[sock])
    finally:
        worker.stop()
        sock.close()
