"""The one place that builds paho clients: protocol, credentials, TLS, session, last will, reconnects.

Bridge, worker publisher and the camera all connect through `MqttConnection`, so they share the
retained `online`/`offline` status, the reconnect backoff and the logging of refused connections.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.errors import MqttUnavailable, PublishFailed
from broker.settings import MqttSettings

logger = logging.getLogger(__name__)

ONLINE = "online"
# publish() results after which paho holds a QoS 1 message until the broker acknowledges it
PAHO_KEEPS_MESSAGE = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
OFFLINE = "offline"


def _connect_properties(session_expiry_s: int, receive_maximum: int | None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        properties.ReceiveMaximum = receive_maximum
    return properties


class MqttConnection:
    """A paho client with a retained status topic, automatic resubscription and state callbacks.

    `persistent=True` keeps the broker-side session (QoS 1 messages queued while we are away arrive
    when we return); it needs a stable `client_id`.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        status_topic: str | None = None,
        persistent: bool = False,
        manual_ack: bool = False,
        session_expiry_s: int = 0,
        receive_maximum: int | None = None,
        on_state: Callable[[bool], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.status_topic = status_topic
        self._persistent = persistent
        self._session_expiry_s = session_expiry_s if persistent else 0
        self._receive_maximum = receive_maximum
        self._on_state = on_state
        self._on_reconnect = on_reconnect
        self._subscriptions: list[tuple[str, int]] = []
        self._acks_lock = threading.Lock()
        self._ack_callbacks: dict[int, Callable[[bool], None]] = {}
        self._connected = threading.Event()
        self._ever_connected = False
        self._stopping = False
        self._lock = threading.Lock()
        self.reconnects = 0
        v5 = settings.protocol == "5"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else not persistent,
            manual_ack=manual_ack,
        )
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self.client.tls_set(ca_certs=settings.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if status_topic:
            self.client.will_set(status_topic, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._handle_connect
        self.client.on_disconnect = self._handle_disconnect
        self.client.on_publish = self._handle_publish
        # paho takes this reentrant lock around its outgoing messages and runs on_publish under it
        self._paho_outgoing_lock: Any = getattr(self.client, "_out_message_mutex", None) or contextlib.nullcontext()

    @property
    def is_v5(self) -> bool:
        return self.settings.protocol == "5"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now if connected, and again after every reconnect."""
        with self._lock:
            self._subscriptions.append((topic, qos))
        if self.connected:
            self.client.subscribe(topic, qos)

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting with backoff."""
        kwargs: dict[str, Any] = {}
        if self.is_v5:
            kwargs["clean_start"] = not self._persistent
            kwargs["properties"] = _connect_properties(self._session_expiry_s, self._receive_maximum)
        logger.info("connecting to %s", self.settings.display)
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive, **kwargs)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> None:
        if not self._connected.wait(timeout):
            raise MqttUnavailable(f"no connection to {self.settings.display} after {timeout:.0f} s")

    def stop(self) -> None:
        """Say `offline` ourselves (the will only fires on an unclean loss) and disconnect."""
        self._stopping = True
        if self.status_topic and self.connected:
            info = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                logger.warning("could not publish offline status before disconnecting")
        self.client.disconnect()
        self.client.loop_stop()

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
        on_acked: Callable[[bool], None] | None = None,
    ) -> int:
        """Publish and return the message id; `on_acked(ok)` runs in paho's network thread the moment the
        broker acknowledges (QoS 1/2).

        Raises PublishFailed when paho did not take the message (an invalid topic, QoS or payload, or a return
        code after which paho does not keep it): it is not sent and `on_acked` never runs. A message paho keeps
        while disconnected (QoS 1, MQTT_ERR_NO_CONN) is not a failure: it is sent again on reconnect, and its
        callback waits for that PUBACK.

        Acting inside the acknowledgement, rather than after a waiting thread wakes up, keeps the window
        between "the broker has it" and "we recorded that" as short as it can be. `on_acked` is registered
        while paho's outgoing-message lock is held: paho handles a PUBACK under that lock, so no
        acknowledgement can slip in before its callback is there.
        """
        with self._paho_outgoing_lock:
            try:
                info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
            except ValueError as exc:  # the only exception paho's publish documents
                raise PublishFailed(str(exc)) from exc
            if info.rc not in PAHO_KEEPS_MESSAGE:
                raise PublishFailed(f"paho error {info.rc}", rc=info.rc)
            if on_acked is not None and qos > 0:
                with self._acks_lock:
                    self._ack_callbacks[info.mid] = on_acked
        return info.mid

    def _handle_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._acks_lock:
            callback = self._ack_callbacks.pop(mid, None)
        if callback is None:
            return
        ok = not getattr(reason, "is_failure", False)
        if not ok:
            logger.warning("the broker refused a publish: %s", reason)
        try:
            callback(ok)
        except Exception:  # never let a callback kill paho's network thread
            logger.exception("acknowledgement callback failed")

    def _handle_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            logger.error("MQTT broker %s refused the connection: %s", self.settings.display, reason)
            return
        if self._ever_connected:
            self.reconnects += 1
            if self._on_reconnect:
                self._on_reconnect()
            logger.info("reconnected to %s (session present: %s)", self.settings.display, flags.session_present)
        else:
            logger.info("connected to %s (session present: %s)", self.settings.display, flags.session_present)
        self._ever_connected = True
        with self._lock:
            subscriptions = list(self._subscriptions)
        for topic, qos in subscriptions:
            client.subscribe(topic, qos)
        if self.status_topic:
            client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        self._connected.set()
        if self._on_state:
            self._on_state(True)

    def _handle_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and self._stopping:
            logger.info("disconnected from %s", self.settings.display)
        elif was_connected:
            logger.warning("lost the connection to %s: %s; reconnecting with backoff", self.settings.display, reason)
        if self._on_state:
            self._on_state(False)


def response_properties(correlation_data: bytes | None) -> Properties | None:
    """PUBLISH properties for an MQTT 5 reply that carries the request's correlation data."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.ContentType = "application/json"
    if correlation_data is not None:
        properties.CorrelationData = correlation_data
    return properties


def user_properties(properties: Properties | None) -> dict[str, str]:
    """MQTT 5 user properties as a dict (the last value wins for a repeated key)."""
    pairs: Sequence[tuple[str, str]] = getattr(properties, "UserProperty", None) or []
    return {str(key): str(value) for key, value in pairs}
