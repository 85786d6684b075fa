"""POST /v1/recognize: one frame through the bridge, the queue and a worker; the answer's JSON as the body."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api.auth import Auth
from api.body import IMAGE_TYPES, MULTIPART, read_image
from api.errors import RETRY_AFTER_S, TIMEOUT, ApiError, bad_request, status_of_contract_code, unavailable
from api.services import Services
from api.tokens import RECOGNIZE
from broker.codes import ErrorCode
from broker.contract import LINE_NAME, OBJECT_NAME

logger = logging.getLogger(__name__)

BINARY = {"schema": {"type": "string", "format": "binary"}}
REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            **{kind: BINARY for kind in IMAGE_TYPES},
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }
            },
        },
    }
}


def answer_response(answer: dict[str, Any]) -> JSONResponse:
    """A result as 200; an error message with the status its contract code maps to."""
    error = answer.get("error")
    if not isinstance(error, dict):
        return JSONResponse(answer)
    code = str(error.get("code"))
    headers = {"Retry-After": str(RETRY_AFTER_S)} if code == ErrorCode.OVERLOADED else None
    return JSONResponse(answer, status_code=status_of_contract_code(code), headers=headers)


def router(services: Services, auth: Auth) -> APIRouter:
    routes = APIRouter(tags=["recognition"])
    settings = services.settings

    @routes.post(
        "/v1/recognize",
        dependencies=[Depends(auth.require(RECOGNIZE))],
        openapi_extra=REQUEST_BODY,
        summary="Recognise one image: the same JSON as an MQTT result",
    )
    async def recognize(
        request: Request,
        device: str = Query(min_length=1, max_length=128, description="the device id it is from"),
        line: str | None = Query(
            None,
            pattern=f"^{LINE_NAME}$",
            description="answer only among this line's products (default: the device's line, else the catalog)",
        ),
        part: str | None = Query(
            None,
            alias="object",
            pattern=f"^{OBJECT_NAME}$",
            description="the physical part this frame shows: frames of one device and object get one decision, "
            "published as an event on <prefix>/<device>/event (default: the worker groups the device's frames)",
        ),
        object_end: bool = Query(False, description="this is the object's last frame: decide it now"),
    ) -> JSONResponse:
        if object_end and part is None:
            raise bad_request("object_end needs the object it ends")
        if not services.recognizer.connected:  # said before the body is read
            raise unavailable("the API has no connection to the MQTT broker; retry later")
        image = await read_image(request, settings.max_body_bytes)
        future = services.recognizer.submit(device, image, line, object_name=part, object_end=object_end)
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(future), settings.timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise ApiError(
                504, TIMEOUT, f"no answer within {settings.timeout_s:g} s (PARTSIGHT_API_TIMEOUT_S); retry later"
            ) from exc
        return answer_response(answer)

    @routes.get(
        "/v1/objects",
        dependencies=[Depends(auth.require(RECOGNIZE))],
        summary="The newest objects decided (one event per part), newest first",
    )
    def recent_objects(
        device: str | None = Query(None, min_length=1, max_length=128, description="only this device's"),
        limit: int = Query(20, ge=1, le=200, description="at most this many"),
    ) -> dict[str, Any]:
        """The object events this API heard on `<prefix>/+/event` since it started (20 a device, 200 devices)."""
        return {"objects": services.recognizer.recent_objects(device, limit)}

    return routes
