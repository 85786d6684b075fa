"""Topic names of the contract: building them and parsing a frame or enrol topic back into its device id."""

from __future__ import annotations

from dataclasses import dataclass

from broker.errors import TopicError

MAX_DEVICE_ID_LENGTH = 128
_FORBIDDEN_IN_SEGMENT = frozenset("/+#\x00")


def validate_segment(value: str, what: str) -> str:
    """Return `value` when it is a usable single topic level, raise TopicError otherwise."""
    if not value:
        raise TopicError(f"{what} is empty")
    if len(value) > MAX_DEVICE_ID_LENGTH:
        raise TopicError(f"{what} is longer than {MAX_DEVICE_ID_LENGTH} characters")
    bad = _FORBIDDEN_IN_SEGMENT.intersection(value)
    if bad or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise TopicError(f"{what} {value!r} contains a character not allowed in a topic level")
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """All topics of one deployment, under a configurable prefix (default `partsight`)."""

    prefix: str = "partsight"

    def __post_init__(self) -> None:
        if not self.prefix or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise TopicError(f"topic prefix {self.prefix!r} must be non-empty without leading or trailing '/'")
        if "+" in self.prefix or "#" in self.prefix or self.prefix.startswith("$"):
            raise TopicError(f"topic prefix {self.prefix!r} must not contain wildcards or start with '$'")

    def frame(self, device: str) -> str:
        return f"{self.prefix}/{validate_segment(device, 'device id')}/frame"

    def result(self, device: str) -> str:
        return f"{self.prefix}/{validate_segment(device, 'device id')}/result"

    def error(self, device: str) -> str:
        return f"{self.prefix}/{validate_segment(device, 'device id')}/error"

    def event(self, device: str) -> str:
        """Where one decision per object (a physical part seen in several frames) is published."""
        return f"{self.prefix}/{validate_segment(device, 'device id')}/event"

    def enrol(self, device: str) -> str:
        """Where a device sends one photo of a product to enrol (MQTT 5: the product in a user property)."""
        return f"{self.prefix}/{validate_segment(device, 'device id')}/enrol"

    def status(self, component: str, instance: str) -> str:
        component = validate_segment(component, "component")
        return f"{self.prefix}/status/{component}/{validate_segment(instance, 'instance id')}"

    def frame_subscription(self, share_group: str | None = None) -> str:
        """The filter the bridge subscribes to; with a group, a shared subscription that splits the load."""
        return self._subscription("frame", share_group)

    def enrol_subscription(self, share_group: str | None = None) -> str:
        """The bridge's filter for enrolments, shared within the group like the frames'."""
        return self._subscription("enrol", share_group)

    def device_of_frame_topic(self, topic: str) -> str:
        """The device id in `<prefix>/<device>/frame`; TopicError for any other topic."""
        return self._device_of(topic, "frame")

    def device_of_enrol_topic(self, topic: str) -> str:
        """The device id in `<prefix>/<device>/enrol`; TopicError for any other topic."""
        return self._device_of(topic, "enrol")

    def _subscription(self, kind: str, share_group: str | None) -> str:
        topic = f"{self.prefix}/+/{kind}"
        if share_group:
            return f"$share/{validate_segment(share_group, 'share group')}/{topic}"
        return topic

    def _device_of(self, topic: str, kind: str) -> str:
        head, tail = self.prefix + "/", "/" + kind
        if not topic.startswith(head) or not topic.endswith(tail):
            raise TopicError(f"topic {topic!r} is not a {kind} topic under {self.prefix!r}")
        device = topic[len(head) : -len(tail)]
        if device == "status":
            raise TopicError("'status' is reserved and cannot be a device id")
        return validate_segment(device, "device id")
