"""Stable error codes of the wire contract: devices and dashboards match on these strings."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_UNDECODABLE = "image_undecodable"
    IMAGE_TOO_LARGE = "image_too_large"
    BAD_ENVELOPE = "bad_envelope"
    BAD_METADATA = "bad_metadata"
    BAD_ENROLMENT = "bad_enrolment"  # an enrolment's product or catalog record does not fit the contract
    UNKNOWN_LINE = "unknown_line"  # the frame names a line (or its device is on one) the store does not have
    OVERLOADED = "overloaded"
    INTERNAL = "internal"
