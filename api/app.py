"""The FastAPI application: every route of the HTTP contract, its error bodies, limits and metrics.

`create_app` takes its collaborators (the recognizer that talks MQTT, the dispatcher that talks Redis) so tests
run the whole app over a real store without a network. Every error is `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import logging
import math
import os
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Scope

from api.auth import Auth
from api.body import MULTIPART, MULTIPART_SLACK, media_type
from api.dispatch import Dispatcher
from api.errors import BAD_REQUEST, INTERNAL, METHOD_NOT_ALLOWED, NOT_FOUND, ApiError, error_body
from api.metrics import ApiMetrics
from api.middleware import BodyLimit, LimitFor, Observe, header
from api.products import Products
from api.recognize import Recognizer
from api.routes import docs, lines, models, products, recognize, review, ui
from api.services import Services
from api.settings import ApiSettings
from broker.errors import SettingsError
from models.errors import EnrolmentError, ReviewError
from models.store.enrolment_requests import EnrolmentStore
from models.store.review_store import ReviewStore

logger = logging.getLogger(__name__)

JSON_BODY_LIMIT = 1024 * 1024  # a catalog record or a review action
PHOTOS_PATH = re.compile(r"\A/v1/products/[^/]+/photos\Z")
HTTP_CODES = {400: BAD_REQUEST, 404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}
DESCRIPTION = """Recognise images, enrol products, manage model versions and the review queue.

Send `Authorization: Bearer <token>` (tokens and scopes: PARTSIGHT_API_TOKENS_FILE). Every error is
`{"error": {"code": ..., "message": ...}}`."""


def body_limits(settings: ApiSettings) -> LimitFor:
    """The most bytes each route reads: one image, an enrolment's photos, or a small JSON document."""

    def limit_for(scope: Scope) -> int:
        path = str(scope.get("path", ""))
        if path == "/v1/recognize":
            multipart = media_type(header(scope, b"content-type")) == MULTIPART
            return settings.max_body_bytes + (MULTIPART_SLACK if multipart else 0)
        if PHOTOS_PATH.match(path):
            return settings.max_upload_bytes
        return JSON_BODY_LIMIT

    return limit_for


def open_stores(settings: ApiSettings) -> tuple[EnrolmentStore, ReviewStore]:
    try:
        enrolments = EnrolmentStore(settings.store)
    except EnrolmentError as exc:
        raise SettingsError(f"PARTSIGHT_MODEL_DIR: {exc}") from exc
    try:
        review_store = settings.review.open()  # a directory, or an s3:// bucket (checked: exists, credentials)
    except ReviewError as exc:
        raise SettingsError(f"PARTSIGHT_REVIEW_STORE: {exc}") from exc
    return enrolments, review_store


def add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
            for error in exc.errors()
        ]
        return JSONResponse(error_body(BAD_REQUEST, "; ".join(problems) or "invalid request"), status_code=422)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, ApiError):  # raised while FastAPI read a body (e.g. over the limit)
            return await api_error(request, exc.__cause__)
        code = HTTP_CODES.get(exc.status_code, BAD_REQUEST if exc.status_code < 500 else INTERNAL)
        message = str(exc.detail) if exc.status_code != 404 else f"no route {request.url.path[:200]!r}"
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unexpected failure answering %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(INTERNAL, "internal error; see the API's log"), status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


def add_operations_routes(app: FastAPI, services: Services, registry: CollectorRegistry) -> None:
    """/healthz, /readyz and /metrics, and the gauges the metrics read when scraped."""
    settings, recognizer, dispatcher = services.settings, services.recognizer, services.dispatcher

    @app.get("/healthz", tags=["operations"], response_class=PlainTextResponse, summary="Alive")
    def healthz() -> str:
        return "ok\n"

    @app.get("/readyz", tags=["operations"], summary="Able to serve: MQTT connected, Redis answers, store readable")
    def readyz() -> JSONResponse:
        checks = {
            "mqtt": recognizer.connected,
            "redis": dispatcher.ping(),
            "store": settings.store.is_dir() and os.access(settings.store, os.R_OK | os.X_OK),
        }
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response, summary="Prometheus metrics")
    def metrics_text() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def review_items() -> float:
        try:
            return float(services.review.stats()[0])
        except ReviewError:
            return math.nan

    services.metrics.watch(
        review_items=review_items,
        in_flight=lambda: float(recognizer.in_flight),
        mqtt_connected=lambda: 1.0 if recognizer.connected else 0.0,
    )


def forget_stale_products(catalog: Products) -> None:
    """Drop from products.json, once at start-up, the records enrolled since and those that waited too long (until
    then only a post or a delete rewrote the file); a store the API cannot write is left as it is."""
    try:
        dropped = catalog.prune()
    except OSError as exc:
        logger.warning("products.json was not tidied: %s", exc)
        return
    if dropped:
        logger.info("products.json: %s record(s) enrolled since or past their days dropped", dropped)


def create_app(
    settings: ApiSettings,
    *,
    recognizer: Recognizer,
    dispatcher: Dispatcher,
    version: str,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The app over `settings.store`, saying it is release `version` (given by the entry point); SettingsError when
    the store or the review store cannot be opened."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ApiMetrics(registry)
    enrolments, review_store = open_stores(settings)
    catalog = Products(settings.store, pending_days=settings.pending_product_days)
    forget_stale_products(catalog)
    services = Services(
        settings=settings,
        recognizer=recognizer,
        dispatcher=dispatcher,
        metrics=metrics,
        products=catalog,
        enrolments=enrolments,
        review=review_store,
    )
    auth = Auth(settings.tokens)
    app = FastAPI(title="partsight", version=version, description=DESCRIPTION, redoc_url=None, docs_url=None)
    routers = [
        *(area.router(services, auth) for area in (recognize, products, models, lines, review)),
        ui.router(),
        docs.router(),
    ]
    for router in routers:
        app.include_router(router)

    add_operations_routes(app, services, registry)
    # the routes by their path templates, for the metrics' route label (included routers' own route objects)
    templates = [route for route in app.router.routes if isinstance(route, Route)]
    templates += [route for router in routers for route in router.routes if isinstance(route, Route)]
    metrics.precreate_routes(route.path for route in templates)
    add_error_handlers(app)
    app.add_middleware(BodyLimit, limit_for=body_limits(settings))
    app.add_middleware(Observe, metrics=metrics, routes=templates)
    app.state.services = services
    return app
