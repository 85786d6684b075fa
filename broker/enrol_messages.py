"""Enrolment over MQTT: one photo on `<prefix>/<device>/enrol`, the product it shows in MQTT 5 user properties.

Admission is pure logic, like a frame's: size first, then the frame id, the product id and the catalog record.
The bridge sends what it admits to the workers as the `partsight.enrol` task; what it refuses is answered on
the device's error topic in the same shape as a worker's failed enrolment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.admission import Inbound
from broker.codes import ErrorCode
from broker.contract import SCHEMA_VERSION, image_digest, rfc3339, validate_frame_id
from broker.errors import FrameRejected

# models.store.enrolment_requests.PRODUCT_ID, copied so the bridge never imports the model package
# (a test keeps them equal)
PRODUCT_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
MAX_CATALOG_BYTES = 16 * 1024  # a catalog record is a few fields, not a document
PRODUCT_PROPERTY, CATALOG_PROPERTY, FRAME_ID_PROPERTY = "product", "catalog", "frame_id"


@dataclass(frozen=True, slots=True)
class EnrolRequest:
    """One admitted enrolment photo, as the bridge hands it to a worker."""

    device: str
    frame_id: str
    product: str
    photo: bytes = field(repr=False)
    received_at: float
    catalog: Mapping[str, Any] | None = None

    def to_task_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the enrol task; msgpack carries the photo's bytes as they are."""
        return {
            "device": self.device,
            "frame_id": self.frame_id,
            "product": self.product,
            "catalog": dict(self.catalog) if self.catalog is not None else None,
            "photo": self.photo,
            "received_at": self.received_at,
        }

    @classmethod
    def from_task_kwargs(cls, kwargs: Mapping[str, Any]) -> EnrolRequest:
        photo = kwargs["photo"]
        if isinstance(photo, str):  # a json-serialised task carries base64 text
            photo = base64.b64decode(photo)
        catalog = kwargs.get("catalog")
        return cls(
            device=str(kwargs["device"]),
            frame_id=str(kwargs["frame_id"]),
            product=str(kwargs["product"]),
            photo=bytes(photo),
            received_at=float(kwargs["received_at"]),
            catalog=dict(catalog) if catalog is not None else None,
        )

    @property
    def task_id(self) -> str:
        """The same for a message the broker delivers again (the bridge died before its PUBACK) and for a send
        retried after Redis failed mid-write, so a worker can tell a repeat from a new enrolment."""
        seed = f"{self.device}\x00{self.frame_id}\x00{self.product}\x00{image_digest(self.photo)}"
        return "enrol-" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def check_product(value: object) -> str:
    if not isinstance(value, str) or not PRODUCT_ID.match(value):
        raise FrameRejected(
            ErrorCode.BAD_ENROLMENT,
            f"product {str(value)[:80]!r} must be 1 to 128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit",
        )
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_catalog(product: str, raw: str) -> dict[str, Any]:
    """The `catalog` user property: a JSON object with non-empty string `name` and `category` (and any further
    fields); its `product`, if given, must be the enrolment's. The rule of
    models.store.enrolment_requests.check_catalog_record."""
    if len(raw.encode("utf-8")) > MAX_CATALOG_BYTES:
        raise FrameRejected(ErrorCode.BAD_ENROLMENT, f"the catalog record is over {MAX_CATALOG_BYTES} bytes")
    try:
        record = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError is one, NaN and Infinity too
        raise FrameRejected(ErrorCode.BAD_ENROLMENT, f"the catalog record is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise FrameRejected(ErrorCode.BAD_ENROLMENT, "the catalog record must be a JSON object")
    if record.setdefault("product", product) != product:
        named = str(record["product"])[:80]
        raise FrameRejected(ErrorCode.BAD_ENROLMENT, f"the catalog record names product {named!r}, not {product!r}")
    for name in ("name", "category"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise FrameRejected(ErrorCode.BAD_ENROLMENT, f"the catalog record needs a non-empty string {name!r}")
        record[name] = value.strip()
    return record


def admit_enrolment(message: Inbound, *, device: str, max_payload_bytes: int, received_at: float) -> EnrolRequest:
    """Turn an inbound message on `device`'s enrol topic into an EnrolRequest, or raise FrameRejected.

    Without a `frame_id` property the photo's digest stands in for it: a message delivered twice keeps its id.
    """
    size = len(message.payload)
    if size > max_payload_bytes:
        raise FrameRejected(ErrorCode.PAYLOAD_TOO_LARGE, f"payload is {size} bytes, the limit is {max_payload_bytes}")
    if size == 0:
        raise FrameRejected(ErrorCode.UNSUPPORTED_FORMAT, "payload is empty: an enrolment carries one photo")
    properties = message.user_properties
    frame_id = properties.get(FRAME_ID_PROPERTY)
    frame_id = validate_frame_id(frame_id) if frame_id is not None else image_digest(message.payload)
    if PRODUCT_PROPERTY not in properties:
        raise FrameRejected(
            ErrorCode.BAD_ENROLMENT,
            "an enrolment needs the MQTT 5 user property 'product' (MQTT 3.1.1 cannot carry user properties: "
            "enrol over MQTT 5, or through the HTTP API)",
        )
    product = check_product(properties[PRODUCT_PROPERTY])
    raw_catalog = properties.get(CATALOG_PROPERTY)
    catalog = parse_catalog(product, raw_catalog) if raw_catalog is not None else None
    return EnrolRequest(
        device=device,
        frame_id=frame_id,
        product=product,
        photo=message.payload,
        received_at=received_at,
        catalog=catalog,
    )


def enrol_hints(message: Inbound, max_payload_bytes: int) -> tuple[str | None, str | None]:
    """The frame id and product a refused enrolment claimed, where sane, so its error can name them."""
    properties = message.user_properties
    frame_id: str | None = None
    try:
        if FRAME_ID_PROPERTY in properties:
            frame_id = validate_frame_id(properties[FRAME_ID_PROPERTY])
        elif 0 < len(message.payload) <= max_payload_bytes:
            frame_id = image_digest(message.payload)
    except FrameRejected:
        frame_id = None
    try:
        product = check_product(properties.get(PRODUCT_PROPERTY))
    except FrameRejected:
        product = None
    return frame_id, product


def enrolment_refusal(
    *, device: str, frame_id: str | None, product: str | None, code: ErrorCode, message: str, at: float
) -> dict[str, Any]:
    """What the bridge publishes on the error topic for an enrolment it refuses: the worker's failed-enrolment
    message (no enrolment was made, so no id and no version), with the time like any error message."""
    return {
        "schema": SCHEMA_VERSION,
        "type": "enrolment",
        "device": device,
        "frame_id": frame_id,
        "enrolment": None,
        "product": product,
        "state": "failed",
        "version": None,
        "error": {"code": str(code), "message": message},
        "at": rfc3339(at),
    }
