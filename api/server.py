"""Runs `partsight api`: checks the store, connects to MQTT and Redis, serves the app with uvicorn until SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, ProcessCollector

from api.app import create_app
from api.dispatch import RedisDispatcher
from api.recognize import MqttRecognizer
from api.settings import ApiSettings
from broker.dispatch import redis_client_url
from broker.errors import MqttUnavailable, SettingsError
from broker.settings import redact_url
from broker.topics import Topics
from models.store.versions import current_version, use_redis_lock
from models.store.writer_lock import RedisStoreLocks

logger = logging.getLogger(__name__)

CONNECT_WAIT_S = 5.0  # how long start-up waits for MQTT before saying it is away (and carrying on)
BAD_SETTINGS, CANNOT_LISTEN = 2, 1


def store_problem(settings: ApiSettings) -> str | None:
    """What is wrong with the model store for the API (it lists, activates and writes enrolments there)."""
    store = settings.store
    where = f"PARTSIGHT_MODEL_DIR={settings.model_dir}"
    if not store.exists():
        return (
            f"{where}: {store} does not exist; point it at the model store (the folder `partsight train --out` writes)"
        )
    if not store.is_dir():
        return f"{where}: {store} is not a directory"
    if not os.access(store, os.R_OK | os.W_OK | os.X_OK):
        return f"{where}: {store} must be readable and writable by this user (enrolments and new products go there)"
    return None


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_api(settings: ApiSettings, *, version: str) -> int:
    """Serve as release `version` until SIGTERM/SIGINT; 0 after a clean stop, 2 for bad settings, 1 when the port
    cannot be had."""
    problem = store_problem(settings)
    if problem:
        logger.error("%s", problem)
        return BAD_SETTINGS
    use_redis_lock(RedisStoreLocks.from_url(redis_client_url(settings.redis_url)))  # activations across machines
    if current_version(settings.store) is None:
        logger.warning("%s has no current model version yet: recognitions fail until one is trained", settings.store)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    recognizer = MqttRecognizer(
        settings.mqtt,
        topics=Topics(settings.topic_prefix),
        api_id=settings.api_id,
        max_in_flight=settings.max_in_flight,
    )
    dispatcher = RedisDispatcher(settings.redis_url, visibility_timeout_s=settings.visibility_timeout_s)
    try:
        app = create_app(settings, recognizer=recognizer, dispatcher=dispatcher, version=version, registry=registry)
        sock = listen(settings.host, settings.port)
    except SettingsError as exc:
        logger.error("%s", exc)
        dispatcher.close()
        return BAD_SETTINGS
    except OSError as exc:
        logger.error(
            "cannot listen on %s:%d (PARTSIGHT_API_PORT): %s", settings.host, settings.port, exc.strerror or exc
        )
        dispatcher.close()
        return CANNOT_LISTEN
    say_who_may_call(settings)
    connect(settings, recognizer, dispatcher)
    logger.info(
        "api %s on http://%s:%d (operator page /ui, OpenAPI /docs): store %s, answers on %s",
        settings.api_id,
        settings.host,
        settings.port,
        settings.store,
        settings.reply_topic,
    )
    try:
        stopped_by = serve(app, sock)
    finally:
        recognizer.stop()
        dispatcher.close()
        sock.close()
    logger.info("api stopped%s", f" (signal {stopped_by[0]})" if stopped_by else "")
    return 0


def say_who_may_call(settings: ApiSettings) -> None:
    """Whether tokens guard the API, and so whether it listens beyond this host."""
    if settings.tokens is None:
        logger.warning(
            "PARTSIGHT_API_TOKENS_FILE is not set: listening on %s only, and every local caller has every scope; "
            "give it a tokens file to serve other hosts",
            settings.host,
        )
    else:
        logger.info("%d token(s) from %s; listening on all interfaces", len(settings.tokens), settings.tokens_file)


def connect(settings: ApiSettings, recognizer: MqttRecognizer, dispatcher: RedisDispatcher) -> None:
    """Start MQTT and wait a moment for it; say what answers 503 while MQTT or Redis is away (both keep retrying)."""
    recognizer.start()
    try:
        recognizer.wait_connected(CONNECT_WAIT_S)
    except MqttUnavailable as exc:
        logger.error("%s: POST /v1/recognize answers 503 unavailable until it connects (retrying)", exc)
    if not dispatcher.ping():
        logger.error(
            "Redis at %s does not answer: enrolments answer 503 unavailable until it does (retrying)",
            redact_url(settings.redis_url),
        )


def serve(app: FastAPI, sock: socket.socket) -> list[int]:
    """Run uvicorn on `sock` until SIGTERM/SIGINT; the signals that stopped it (none when it stopped by itself)."""
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", server_header=False, timeout_graceful_shutdown=10
    )
    stopped_by: list[int] = []

    def note_stop(signum: int, frame: FrameType | None) -> None:
        stopped_by.append(signum)

    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the handler found before it: this one
    # notes it, so the connections close cleanly afterwards (the retained status says `offline`) and we exit 0
    previous = {signum: signal.signal(signum, note_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return stopped_by
