"""The HTTP API's errors: each becomes `{"error": {"code", "message"}}` with its status and headers.

ApiError                    base of everything raised here; `status`, `code`, `message`, `headers`

Settings problems at start-up are broker.errors.SettingsError, as in every partsight process (exit code 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.codes import ErrorCode

# the API's own codes, beside the contract's (broker.codes.ErrorCode), which it answers as they come
BAD_REQUEST = "bad_request"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
UNKNOWN_PRODUCT = "unknown_product"
UNKNOWN_ENROLMENT = "unknown_enrolment"
UNKNOWN_ITEM = "unknown_item"
UNKNOWN_VERSION = "unknown_version"
UNKNOWN_REPORT_FILE = "unknown_report_file"
PRODUCT_EXISTS = "product_exists"
PRODUCT_ENROLLED = "product_enrolled"
VERSION_INVALID = "version_invalid"
ALREADY_LABELLED = "already_labelled"
TIMEOUT = "timeout"
UNAVAILABLE = "unavailable"
INTERNAL = str(ErrorCode.INTERNAL)
RETRY_AFTER_S = 1  # what an `overloaded` answer asks a client to wait

# the HTTP status of each contract code a worker or the bridge answers a frame with
CONTRACT_STATUS = {
    str(ErrorCode.PAYLOAD_TOO_LARGE): 413,
    str(ErrorCode.UNSUPPORTED_FORMAT): 415,
    str(ErrorCode.IMAGE_UNDECODABLE): 422,
    str(ErrorCode.IMAGE_TOO_LARGE): 422,
    str(ErrorCode.BAD_ENVELOPE): 422,
    str(ErrorCode.BAD_METADATA): 422,
    str(ErrorCode.UNKNOWN_LINE): 404,
    str(ErrorCode.OVERLOADED): 503,
    str(ErrorCode.INTERNAL): 500,
}


class ApiError(Exception):
    """An answer other than success: HTTP `status`, a stable `code`, a message for people, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, code, message)


def bad_request(message: str) -> ApiError:
    return ApiError(422, BAD_REQUEST, message)


def payload_too_large(size: int | None, limit: int) -> ApiError:
    said = f"{size} bytes" if size is not None else "more than that"
    return ApiError(413, str(ErrorCode.PAYLOAD_TOO_LARGE), f"the body is {said}; the limit is {limit} bytes")


def unsupported_format(message: str) -> ApiError:
    return ApiError(415, str(ErrorCode.UNSUPPORTED_FORMAT), message)


def overloaded(message: str) -> ApiError:
    return ApiError(503, str(ErrorCode.OVERLOADED), message, {"Retry-After": str(RETRY_AFTER_S)})


def unavailable(message: str) -> ApiError:
    return ApiError(503, UNAVAILABLE, message, {"Retry-After": str(RETRY_AFTER_S)})


def status_of_contract_code(code: str) -> int:
    """The HTTP status of an answer that carries a contract error code (500 for a code this API does not know)."""
    return CONTRACT_STATUS.get(code, 500)
