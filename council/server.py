"""`council serve`: the persona, its council and its memory behind an OpenAI-compatible HTTP API.

Every request becomes a durable task; the app's worker thread runs tasks in order, or, with no worker of its own,
workers in other processes do and a watcher reports how each ended (see ``council.worker``).
Errors use OpenAI's JSON shape, so existing clients report them as they would any API error.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from council.core.episode import Episode
from council.core.errors import ContextOverflowError, CouncilError, NotFoundError, StorageError, first_problem
from council.core.text import invalid_text
from council.engine.events import Closed, Voted
from council.engine.runtime import CouncilRuntime
from council.store.tasks import TaskParams, TaskQueue, new_task_id
from council.worker import Done, Ended, Failed, Interrupted, TaskEvent, TaskThread, Watcher, Worker

MAX_BODY_BYTES = 1 << 20
MAX_MESSAGES = 256


class ApiError(Exception):
    """An error returned to the client in OpenAI's shape."""

    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error", param: str = ""):
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.param = status, message, code, kind, param

    def response(self) -> JSONResponse:
        """The JSON error body."""
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param or None, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


class ChatMessage(BaseModel):
    """One message of a chat request."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _valid_text(cls, content: str) -> str:
        problem = invalid_text(content)
        if problem is not None:
            raise ValueError(f"{problem}; send valid Unicode text")
        return content


class ChatRequest(BaseModel):
    """The part of OpenAI's chat completion request the council understands; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, strict=True)  # strict: JSON true is not 1
    max_completion_tokens: int | None = Field(None, ge=1, strict=True)
    seed: int | None = Field(None, ge=0, lt=2**32, strict=True)

    def prompt(self) -> str:
        """The last user turn, with any earlier turns quoted before it as context."""
        *earlier, last = self.messages
        if last.role != "user":
            raise ApiError(400, "the last message must have role 'user'", "invalid_role", param="messages")
        if not earlier:
            return last.content
        quoted = "\n".join(f"{m.role}: {m.content}" for m in earlier)
        return f"Earlier in this conversation:\n{quoted}\n\n{last.content}"


def council_field(episode: Episode) -> dict[str, Any]:
    """What the council did, attached to completions as the extra ``council`` field."""
    return {
        "episode_id": episode.episode_id,
        "status": episode.status,
        "stop_reason": episode.stop_reason,
        "pool": episode.pool,
        "reflection_points": [rp.model_dump(mode="json") for rp in episode.reflection_points],
        "recollections": [r.model_dump(mode="json") for r in episode.recollections],
    }


OPEN_PATHS = ("/healthz",)  # every other path, the OpenAPI schema and its pages included, needs the token


def token_error(authorization: str) -> ApiError | None:
    """Why a request may not pass, when ``COUNCIL_API_KEY`` is set and ``authorization`` is not its bearer token."""
    key = os.environ.get("COUNCIL_API_KEY")
    scheme, _, token = authorization.strip().partition(" ")
    if not key or (scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())):
        return None  # the scheme is case-insensitive (RFC 7235), the token is not
    return ApiError(401, "missing or wrong bearer token (COUNCIL_API_KEY)", "invalid_api_key", "authentication_error")


class Guard:
    """ASGI middleware in front of every route: the token first, then a body counted as it streams.

    So neither an unauthenticated upload nor a chunked one of any size is read whole.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request without the token or with a body over the limit; pass the rest on."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        error = token_error(headers.get("authorization", ""))
        if error is None and length is not None and (not length.isdigit() or int(length) > self.limit):
            error = self.too_large()
        if error is not None:
            return await error.response()(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self.too_large().message)
            return message

        await self.app(scope, counted, send)

    def too_large(self) -> ApiError:
        """The 413 for a body over the limit."""
        return ApiError(413, f"request body over {self.limit} bytes", "request_too_large")


@dataclass
class Services:
    """What the routes work with: the runtime, the task queue and the thread that runs (or watches) tasks."""

    rt: CouncilRuntime
    queue: TaskQueue
    worker: TaskThread
    model_ids: list[str]


def services(request: Request) -> Services:
    """The app's services (a FastAPI dependency)."""
    return request.app.state.services


Deps = Annotated[Services, Depends(services)]
router = APIRouter()


def create_app(rt: CouncilRuntime, poll_s: float = 1.0, run_tasks: bool = True, alone: bool = True) -> FastAPI:
    """The HTTP app around ``rt``; its worker (or, with ``run_tasks`` off, its watcher) starts and stops with it.

    ``alone``: no other worker shares the queue (see ``Worker``).
    """
    queue = TaskQueue(rt.db)
    worker: TaskThread = (
        Worker(rt, queue, rt.settings.home / "checkpoints.db", poll_s=poll_s, take_over=alone)
        if run_tasks
        else Watcher(rt, queue, poll_s=min(poll_s, 0.5))
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        worker.stop()
        worker.join(timeout=600)

    app = FastAPI(title="archetype-council", lifespan=lifespan)
    app.add_middleware(Guard)
    app.state.services = Services(rt, queue, worker, [f"council-{rt.pool.name}", "council"])
    for error, handler in HANDLERS.items():
        app.add_exception_handler(error, handler)
    app.include_router(router)
    return app


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    where, message, kind = first_problem(exc.errors(), skip=("body",))
    code = "invalid_json" if kind == "json_invalid" else "invalid_request"
    return ApiError(400, f"{where or 'body'}: {message}", code, param=where).response()


async def _council_error(_: Request, exc: Exception) -> JSONResponse:
    return ApiError(503, str(exc), "unavailable", "server_error").response()


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = "request_too_large" if exc.status_code == 413 else "http_error"
    return ApiError(exc.status_code, str(exc.detail), code).response()


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
    ApiError: _api_error,
    RequestValidationError: _invalid,
    CouncilError: _council_error,
    HTTPException: _http_error,
}


@router.get("/healthz")
async def healthz(s: Deps) -> JSONResponse:
    """200 only while the worker (or watcher) runs and the episode log is the store it opened, and writable."""
    try:
        s.rt.db.check()
        store = "ok"
    except StorageError as exc:
        store = str(exc)
    alive = s.worker.is_alive()
    status = store
    if store == "ok" and not alive:
        status = f"worker stopped {s.worker.failure}".strip()
    body = {"status": status, "worker": alive, "store": store, "tasks": s.queue.counts()}
    return JSONResponse(body, status_code=200 if status == "ok" else 503)


@router.get("/v1/models")
async def models(s: Deps) -> dict[str, Any]:
    """The model ids this server answers to."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "archetype-council"} for m in s.model_ids]
    return {"object": "list", "data": data}


@router.get("/episodes")
async def episodes(s: Deps, limit: int = 20, pool: str | None = None) -> list[dict[str, Any]]:
    """The newest episodes first."""
    return [e.model_dump(mode="json") for e in s.rt.log.list(limit=min(max(limit, 1), 1000), pool=pool)]


@router.get("/episodes/{episode_id}")
async def episode(s: Deps, episode_id: str) -> dict[str, Any]:
    """One episode, by id or unique prefix."""
    try:
        return s.rt.log.get(episode_id).model_dump(mode="json")
    except NotFoundError as exc:
        raise ApiError(404, str(exc), "episode_not_found") from exc


async def _budget(s: Services, body: ChatRequest) -> tuple[str, int, int]:
    """The request's prompt, its token budget and its prompt's tokens; a 4xx if it names another model or won't fit."""
    if body.model not in s.model_ids:
        raise ApiError(
            404, f"model {body.model!r} does not exist; use one of {s.model_ids}", "model_not_found", param="model"
        )
    prompt = body.prompt()
    max_tokens = body.max_completion_tokens or body.max_tokens or s.rt.settings.generation.max_tokens
    prompt_tokens = await asyncio.to_thread(s.rt.writer.backend.count_tokens, prompt)  # a long prompt takes time
    needed = prompt_tokens + max_tokens
    n_ctx = s.rt.settings.models.n_ctx
    if needed > n_ctx:
        raise ApiError(
            400,
            f"the prompt and max_tokens need about {needed} tokens, more than the context window of "
            f"{n_ctx}; shorten the messages or lower max_tokens",
            "context_length_exceeded",
            param="messages",
        )
    return prompt, max_tokens, prompt_tokens


@router.post("/v1/chat/completions")
async def chat(s: Deps, body: ChatRequest) -> Any:  # noqa: ANN401 - JSON or a stream
    """OpenAI's chat completions: one episode per request, streamed as its segments are accepted if asked."""
    prompt, max_tokens, prompt_tokens = await _budget(s, body)
    events: asyncio.Queue[TaskEvent] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    task_id = new_task_id()

    def deliver(event: TaskEvent) -> None:  # called on the worker's thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    s.worker.listen(task_id, deliver)
    s.rt.db.check()  # an episode written to a deleted log would be lost
    task = s.queue.put(prompt, "api", TaskParams(max_tokens=max_tokens, seed=body.seed), task_id=task_id)
    base = {"id": f"chatcmpl-{task.episode_id}", "created": int(time.time()), "model": body.model}
    if body.stream:
        return StreamingResponse(_stream(events, base, s.worker, task.id), media_type="text/event-stream")
    try:
        while not isinstance(event := await events.get(), Ended):
            pass
    finally:
        s.worker.forget(task.id)
    episode = _finished(event)
    return base | {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": episode.final_text}, "finish_reason": "stop"}
        ],
        "usage": _usage(s.rt, prompt_tokens, episode),
        "council": council_field(episode),
    }


def _finished(event: Ended) -> Episode:
    match event:
        case Done(episode):
            return episode
        case Interrupted():
            raise ApiError(
                503, "the daemon is shutting down; the task resumes when it restarts", "shutting_down", "server_error"
            )
        case Failed(ContextOverflowError() as error):
            raise ApiError(400, str(error), "context_length_exceeded", param="messages")
        case Failed(error):
            message = str(error) if isinstance(error, CouncilError) else f"{type(error).__name__}: {error}"
            raise ApiError(500, message, "episode_failed", "server_error")


def _usage(rt: CouncilRuntime, prompt_tokens: int, episode: Episode) -> dict[str, int]:
    completion = rt.writer.backend.count_tokens(episode.final_text)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


async def _stream(
    events: asyncio.Queue[TaskEvent], base: dict[str, Any], worker: TaskThread, task_id: str
) -> AsyncIterator[str]:
    """SSE chunks in OpenAI's shape: accepted text as it is decided, then a final chunk with the council field."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:  # noqa: ANN401
        payload = base | {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(payload | extra)}\n\n"

    sent = ""
    yield chunk({"role": "assistant", "content": ""})
    try:
        while not isinstance(event := await events.get(), Ended):
            match event.event:
                case Voted(answer=str() as answer) | Closed(answer=answer):
                    if answer.startswith(sent) and len(answer) > len(sent):
                        yield chunk({"content": answer[len(sent) :]})
                        sent = answer
        try:
            episode = _finished(event)
        except ApiError as exc:
            yield f"data: {json.dumps(json.loads(bytes(exc.response().body)))}\n\n"
            return
        tail = episode.final_text[len(sent.strip()) :] if episode.final_text.startswith(sent.strip()) else ""
        if tail.strip():
            yield chunk({"content": tail})
        yield chunk({}, "stop", council=council_field(episode))
        yield "data: [DONE]\n\n"
    finally:
        worker.forget(task_id)
