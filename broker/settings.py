"""Settings read once at start-up from the environment, then passed down as frozen records."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

from broker.contract import MAX_WINDOW_FRAMES
from broker.errors import SettingsError

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
PROTOCOLS = ("5", "3.1.1")
DEFAULT_WINDOW_FRAMES = 32  # the most frames one task carries; 1: a task per frame
N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    protocol: str = "5"
    ca_file: str | None = None
    keepalive: int = 30

    @classmethod
    def from_url(cls, url: str, *, protocol: str = "5", ca_file: str | None = None) -> MqttSettings:
        """Parse `mqtt://user:pass@host:port` or `mqtts://...` (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise SettingsError(f"MQTT URL must start with mqtt:// or mqtts://, got {parts.scheme or 'nothing'!r}")
        if not parts.hostname:
            raise SettingsError("MQTT URL has no host")
        if protocol not in PROTOCOLS:
            raise SettingsError(f"MQTT protocol must be one of {PROTOCOLS}, got {protocol!r}")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise SettingsError(f"MQTT URL has a bad port: {exc}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            protocol=protocol,
            ca_file=ca_file,
        )

    @property
    def display(self) -> str:
        """Where it connects, safe to log: never the password."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port} (MQTT {self.protocol})"


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def _env_number(env: Mapping[str, str], name: str, default: N, *, minimum: N, convert: type[N], kind: str) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = convert(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    return _env_number(env, name, default, minimum=minimum, convert=int, kind="an integer")


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    return _env_number(env, name, default, minimum=minimum, convert=float, kind="a number")


def secret_from_file(env: Mapping[str, str], name: str) -> str | None:
    """The content of the file `<name>_FILE` points at (a mounted secret), without its final newline."""
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    except OSError as exc:
        raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc


def _with_password(url: str, password: str | None) -> str:
    if password is None:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(unquote(parts.username), safe="") if parts.username else ""
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


def mqtt_from_env(env: Mapping[str, str]) -> MqttSettings:
    """PARTSIGHT_MQTT_URL; a password in PARTSIGHT_MQTT_PASSWORD_FILE replaces the URL's."""
    url = _with_password(
        env.get("PARTSIGHT_MQTT_URL", DEFAULT_MQTT_URL), secret_from_file(env, "PARTSIGHT_MQTT_PASSWORD")
    )
    return MqttSettings.from_url(
        url,
        protocol=env.get("PARTSIGHT_MQTT_PROTOCOL", "5"),
        ca_file=env.get("PARTSIGHT_MQTT_CA_FILE") or None,
    )


def redis_url_from_env(env: Mapping[str, str]) -> str:
    """PARTSIGHT_REDIS_URL; a password in PARTSIGHT_REDIS_PASSWORD_FILE replaces the URL's."""
    return _with_password(
        env.get("PARTSIGHT_REDIS_URL", DEFAULT_REDIS_URL), secret_from_file(env, "PARTSIGHT_REDIS_PASSWORD")
    )


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    mqtt: MqttSettings
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    topic_prefix: str = "partsight"
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    metrics_port: int = 9301
    bridge_id: str = "bridge"
    share_group: str | None = None
    max_queue_length: int = 1000
    # enrolments waiting in Redis (each carries its photo, up to max_payload_bytes) beyond which one is refused
    max_enrol_queue_length: int = 256
    receive_maximum: int = 64
    session_expiry_s: int = 7 * 24 * 3600
    visibility_timeout_s: int = 60
    redeliver_after_s: int = 120
    frame_ttl_s: int = 24 * 3600
    max_tracked_devices: int = 1000
    window_frames: int = DEFAULT_WINDOW_FRAMES
    window_ms: float = 5.0  # the longest a window keeps collecting while frames keep arriving
    window_bytes: int = 16 * 1024 * 1024  # a window closes once its images reach this size

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BridgeSettings:
        env = os.environ if env is None else env
        visibility = env_int(env, "PARTSIGHT_VISIBILITY_TIMEOUT_S", 60, minimum=2)
        return cls(
            mqtt=mqtt_from_env(env),
            redis_url=redis_url_from_env(env),
            topic_prefix=env.get("PARTSIGHT_TOPIC_PREFIX", "partsight"),
            max_payload_bytes=env_int(env, "PARTSIGHT_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES, minimum=1),
            metrics_port=env_int(env, "PARTSIGHT_BRIDGE_METRICS_PORT", 9301),
            bridge_id=env.get("PARTSIGHT_BRIDGE_ID") or socket.gethostname(),
            share_group=env.get("PARTSIGHT_SHARE_GROUP") or None,
            max_queue_length=env_int(env, "PARTSIGHT_MAX_QUEUE_LENGTH", 1000, minimum=1),
            max_enrol_queue_length=env_int(env, "PARTSIGHT_MAX_ENROL_QUEUE_LENGTH", 256, minimum=1),
            receive_maximum=env_int(env, "PARTSIGHT_MQTT_RECEIVE_MAXIMUM", 64, minimum=1),
            visibility_timeout_s=visibility,
            redeliver_after_s=env_int(env, "PARTSIGHT_REDELIVER_AFTER_S", 2 * visibility, minimum=1),
            frame_ttl_s=env_int(env, "PARTSIGHT_FRAME_TTL_S", 24 * 3600, minimum=60),
            max_tracked_devices=env_int(env, "PARTSIGHT_MAX_TRACKED_DEVICES", 1000),
            window_frames=window_frames_from_env(env),
            window_bytes=env_int(env, "PARTSIGHT_WINDOW_BYTES", 16 * 1024 * 1024, minimum=1),
            window_ms=env_float(env, "PARTSIGHT_WINDOW_MS", 5.0),
        )


def window_frames_from_env(env: Mapping[str, str]) -> int:
    frames = env_int(env, "PARTSIGHT_WINDOW_FRAMES", DEFAULT_WINDOW_FRAMES, minimum=1)
    if frames > MAX_WINDOW_FRAMES:
        raise SettingsError(f"PARTSIGHT_WINDOW_FRAMES must be at most {MAX_WINDOW_FRAMES}, got {frames}")
    return frames
