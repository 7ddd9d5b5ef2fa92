"""An OpenAI-compatible HTTP server over :class:`~llmlab.serve.engine.LLMEngine` (FastAPI).

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions`` (both with ``"stream": true`` as Server-Sent Events), and
``GET /metrics`` (Prometheus text). One background task owns the engine: it admits new requests
and aborts between steps, runs each step in a worker thread (so the event loop keeps serving
HTTP), and hands every request's outputs to its queue. A client that disconnects mid-stream has
its request aborted, which frees its KV blocks at once. Bad input is answered with a 4xx and
OpenAI's error body, never a 500 or a hang. On shutdown uvicorn stops accepting connections,
waits (up to ``timeout_graceful_shutdown``) for in-flight responses to finish, then the engine
task is cancelled and whatever is left is aborted. vLLM's ``vllm serve`` and Hugging Face TGI
have the same shape. Taught in chapter 09 (solutions/09_serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

from llmlab.utils import missing_extra

if _missing := missing_extra(("fastapi", "starlette"), "serve", "llmlab's HTTP server"):
    raise ImportError(_missing)

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from llmlab.serve.engine import LLMEngine, RequestOutput  # noqa: E402
from llmlab.serve.metrics import ServerMetrics  # noqa: E402
from llmlab.serve.openai_api import (  # noqa: E402
    ApiError,
    chat_prompt,
    completion_prompt,
    completion_response,
    error_param,
    parse_sampling,
    sse_event,
)


class AsyncEngine:
    """Runs an :class:`LLMEngine` in a loop and fans its outputs out to per-request queues."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine, self.metrics = engine, ServerMetrics()
        self.queues: dict[str, asyncio.Queue] = {}
        self._aborts: list[str] = []
        self._lock = asyncio.Lock()  # held while a step runs: nothing else touches the engine
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for rid, q in list(self.queues.items()):  # in-flight requests end, cancelled
            self.engine.abort(rid)
            q.put_nowait(None)
        self.queues.clear()

    async def submit(self, prompt, params, adapter: str | None = None) -> tuple[str, asyncio.Queue]:
        """Queue a request (ValueError on bad input); its outputs arrive on the returned queue."""
        async with self._lock:
            rid = self.engine.add_request(prompt, params, request_id=f"cmpl-{uuid.uuid4().hex}",
                                          adapter=adapter)
        q: asyncio.Queue = asyncio.Queue()
        self.queues[rid] = q
        self.metrics.requests_total += 1
        self.metrics.prompt_tokens += len(self.engine.requests[rid].seq.prompt)
        self._wake.set()
        return rid, q

    def abort(self, rid: str) -> None:
        """Ask the loop to drop ``rid`` before its next step (safe from any coroutine)."""
        if self.queues.pop(rid, None) is not None:
            self._aborts.append(rid)
            self.metrics.requests_aborted += 1
            self._wake.set()

    async def _run(self) -> None:
        while True:
            async with self._lock:
                while self._aborts:
                    self.engine.abort(self._aborts.pop())
                busy = self.engine.has_unfinished()
                outputs = await asyncio.to_thread(self.engine.step) if busy else []
            for out in outputs:
                self._record(out)
                q = self.queues.pop(out.request_id, None) if out.finished else \
                    self.queues.get(out.request_id)
                if q is not None:
                    q.put_nowait(out)
            if not busy:
                self._wake.clear()
                await self._wake.wait()
            else:
                await asyncio.sleep(0)  # let handlers run between steps

    def _record(self, out: RequestOutput) -> None:
        self.metrics.generation_tokens += len(out.token_ids)
        if out.latency is not None:
            ttft, tpot = out.latency
            self.metrics.ttft.observe(ttft)
            if tpot is not None:
                self.metrics.tpot.observe(tpot)


def create_app(engine: LLMEngine, model_name: str = "book") -> FastAPI:
    """The FastAPI app serving ``engine`` under ``model_name``."""
    runner = AsyncEngine(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        runner.start()
        yield
        await runner.stop()

    app = FastAPI(title="llmlab", lifespan=lifespan)
    app.state.runner = runner

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = ApiError(exc.status_code, str(exc.detail), code=str(exc.status_code))
        return JSONResponse(err.body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> JSONResponse:
        err = ApiError(500, f"internal error: {type(exc).__name__}", type="server_error")
        return JSONResponse(err.body(), status_code=500)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        names = [model_name] + [f"{model_name}:{a}" for a in engine.adapters]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0,
                                            "owned_by": "llmlab"} for n in names]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        text = runner.metrics.render(engine.stats())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def _body(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model != model_name and _adapter(model) is None:
            names = [model_name] + [f"{model_name}:{a}" for a in engine.adapters]
            raise ApiError(404, f"the model {model!r} does not exist; this server has "
                           f"{', '.join(map(repr, names))}", "model", "model_not_found")
        return body

    def _adapter(model) -> str | None:
        """The LoRA adapter a ``model`` field names: "book:NAME" or a loaded adapter's NAME."""
        if not isinstance(model, str):
            return None
        name = model.removeprefix(f"{model_name}:")
        return name if name in engine.adapters else None

    async def _handle(request: Request, chat: bool):
        body = await _body(request)
        prompt = chat_prompt(body) if chat else completion_prompt(body)
        params = parse_sampling(body, engine.model.config.vocab_size)
        if chat:
            params.stop = [*params.stop, "<|im_end|>"]
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, "stream must be a boolean", "stream")
        try:
            rid, queue = await runner.submit(prompt, params, _adapter(body.get("model")))
        except ValueError as exc:
            code = "context_length_exceeded" if "context" in str(exc) or "blocks" in str(exc) else None
            raise ApiError(400, str(exc.args[0]), error_param(exc), code) from None
        decode = lambda t: engine.tokenizer.decode([t])  # noqa: E731
        n_prompt = len(engine.requests[rid].seq.prompt)
        if stream:
            events = _stream(runner, rid, queue, body["model"], chat, decode)
            return StreamingResponse(events, media_type="text/event-stream")
        text, tokens, logprobs, finish = [], 0, [], None
        try:
            while (out := await queue.get()) is not None:
                text.append(out.text)
                tokens += len(out.token_ids)
                logprobs += out.logprobs
                if out.finished:
                    finish = out.finish_reason
                    break
        finally:
            if finish is None:
                runner.abort(rid)
        if finish is None:
            raise ApiError(503, "the server is shutting down", type="server_error")
        usage = {"prompt_tokens": n_prompt, "completion_tokens": tokens,
                 "total_tokens": n_prompt + tokens}
        return completion_response(rid, body["model"], chat, "".join(text), finish, usage,
                                   logprobs, decode)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _handle(request, chat=True)

    return app


async def _stream(runner: AsyncEngine, rid: str, queue: asyncio.Queue, model: str, chat: bool,
                  decode) -> AsyncIterator[str]:
    """SSE chunks of one request; aborts it if the client goes away (the generator is closed)."""
    finished, first = False, True
    try:
        while (out := await queue.get()) is not None:
            finished = out.finished
            if out.text or out.finished or first:
                yield sse_event(completion_response(rid, model, chat, out.text, out.finish_reason,
                                                    None, out.logprobs, decode, delta=True,
                                                    first=first))
                first = False
            if finished:
                break
        yield sse_event("[DONE]")
    finally:
        if not finished:
            runner.abort(rid)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL; stops on exit."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
