"""Settings of `partsight api`, read once at start-up from the environment, then passed down."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from api.products import DEFAULT_PENDING_DAYS
from api.tokens import TokenTable, load_tokens
from broker.errors import SettingsError, TopicError
from broker.settings import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_REDIS_URL,
    MqttSettings,
    env_float,
    env_int,
    mqtt_from_env,
    redis_url_from_env,
)
from broker.topics import Topics, validate_segment
from models.store.review_location import DEFAULT_REVIEW, ReviewSettings
from models.store.versions import DEFAULT_STORE, MANIFEST

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # one enrolment's photos together
DEFAULT_MAX_IN_FLIGHT = 256  # recognitions waiting for their answer; more are answered 503 overloaded
LOOPBACK, ALL_INTERFACES = "127.0.0.1", "0.0.0.0"  # every interface: only with tokens


@dataclass(frozen=True, slots=True)
class ApiSettings:
    mqtt: MqttSettings
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    topic_prefix: str = "partsight"
    api_id: str = "api"
    port: int = DEFAULT_PORT
    tokens_file: Path | None = None
    tokens: TokenTable | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_body_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES  # one image: a recognised frame, or each enrolment photo
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES  # one enrolment request's body, all its photos
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    model_dir: Path = Path(DEFAULT_STORE)
    review: ReviewSettings = DEFAULT_REVIEW  # a directory, or an s3:// bucket, and its bounds
    pending_product_days: float = DEFAULT_PENDING_DAYS  # a product posted without photos is kept this long
    visibility_timeout_s: int = 60

    @property
    def host(self) -> str:
        """Every interface with tokens to check; loopback only without them."""
        return ALL_INTERFACES if self.tokens is not None else LOOPBACK

    @property
    def reply_topic(self) -> str:
        """Where workers answer this API instance's frames (their MQTT 5 response topic)."""
        return f"{self.topic_prefix}/api/{self.api_id}/answers"

    @property
    def store(self) -> Path:
        """The model store: PARTSIGHT_MODEL_DIR, or the store above it when it names one version."""
        return self.model_dir.parent if (self.model_dir / MANIFEST).is_file() else self.model_dir

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if env is None else env
        mqtt = mqtt_from_env(env)
        if mqtt.protocol != "5":
            raise SettingsError(
                "the API needs MQTT 5 (workers answer it on a response topic); "
                f"PARTSIGHT_MQTT_PROTOCOL is {mqtt.protocol!r}"
            )
        prefix = env.get("PARTSIGHT_TOPIC_PREFIX", "partsight")
        api_id = env.get("PARTSIGHT_API_ID") or socket.gethostname()
        try:
            Topics(prefix)
            validate_segment(api_id, "PARTSIGHT_API_ID")
        except TopicError as exc:
            raise SettingsError(str(exc)) from exc
        tokens_path = env.get("PARTSIGHT_API_TOKENS_FILE") or None
        max_body = env_int(
            env,
            "PARTSIGHT_API_MAX_BODY_BYTES",
            env_int(env, "PARTSIGHT_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES, minimum=1),
            minimum=1,
        )
        max_upload = env_int(env, "PARTSIGHT_API_MAX_UPLOAD_BYTES", max(DEFAULT_MAX_UPLOAD_BYTES, max_body), minimum=1)
        if max_upload < max_body:
            raise SettingsError(
                f"PARTSIGHT_API_MAX_UPLOAD_BYTES ({max_upload}) must be at least PARTSIGHT_API_MAX_BODY_BYTES "
                f"({max_body}): an enrolment carries at least one photo"
            )
        model_dir = Path(env.get("PARTSIGHT_MODEL_DIR", DEFAULT_STORE))
        port = env_int(env, "PARTSIGHT_API_PORT", DEFAULT_PORT)
        if port > 65535:
            raise SettingsError(f"PARTSIGHT_API_PORT must be at most 65535, got {port}")
        timeout = env_float(env, "PARTSIGHT_API_TIMEOUT_S", DEFAULT_TIMEOUT_S, minimum=0.1)
        return cls(
            mqtt=mqtt,
            redis_url=redis_url_from_env(env),
            topic_prefix=prefix,
            api_id=api_id,
            port=port,
            tokens_file=Path(tokens_path) if tokens_path else None,
            tokens=load_tokens(Path(tokens_path)) if tokens_path else None,
            timeout_s=timeout,
            max_body_bytes=max_body,
            max_upload_bytes=max_upload,
            max_in_flight=env_int(env, "PARTSIGHT_API_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT, minimum=1),
            model_dir=model_dir,
            review=ReviewSettings.from_env(env, model_dir),
            pending_product_days=env_float(env, "PARTSIGHT_PENDING_PRODUCT_DAYS", DEFAULT_PENDING_DAYS, minimum=0.001),
            visibility_timeout_s=env_int(env, "PARTSIGHT_VISIBILITY_TIMEOUT_S", 60, minimum=2),
        )
