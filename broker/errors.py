"""Exceptions of the broker package.

BrokerError                 base of everything raised here
├── SettingsError           a setting from the environment is missing or malformed
├── TopicError              a topic or a device id that does not fit the contract
├── FrameRejected           a frame the bridge refuses; carries the contract's error code
├── MqttUnavailable         the MQTT broker could not be reached or refused us
└── PublishFailed           paho did not take a message (bad topic or payload, or it refused it): it is not sent
"""

from __future__ import annotations

from broker.codes import ErrorCode


class BrokerError(Exception):
    """Base of the broker package's exceptions."""


class SettingsError(BrokerError):
    """A setting is missing or malformed."""


class TopicError(BrokerError):
    """A topic or device id does not fit the contract."""


class FrameRejected(BrokerError):
    """A frame the service refuses, with the stable error code that goes on the error topic."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MqttUnavailable(BrokerError):
    """The MQTT broker could not be reached or refused us."""


class PublishFailed(BrokerError):
    """paho did not take a message, so it is not sent and no acknowledgement will come.

    `rc` is paho's return code when paho refused it, None when the topic, QoS or payload was invalid.
    """

    def __init__(self, message: str, *, rc: int | None = None) -> None:
        super().__init__(message)
        self.rc = rc
