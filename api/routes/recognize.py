"""POST /v1/recognize: one frame through the bridge, the queue and a worker; the answer's JSON as the body."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api.auth import Auth
from api.body import IMAGE_TYPES, MULTIPART, read_image
from api.errors import RETRY_AFTER_S, TIMEOUT, ApiError, status_of_contract_code, unavailable
from api.services import Services
from api.tokens import RECOGNIZE
from broker.codes import ErrorCode
from broker.contract import LINE_NAME

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
    ) -> JSONResponse:
        if not services.recognizer.connected:  # said before the body is read
            raise unavailable("the API has no connection to the MQTT broker; retry later")
        image = await read_image(request, settings.max_body_bytes)
        future = services.recognizer.submit(device, image, line)
        try:
            answer = await asyncio.wait_for(asyncio.wrap_future(future), settings.timeout_s)
        except TimeoutError as exc:
            future.cancel()
            raise ApiError(
                504, TIMEOUT, f"no answer within {settings.timeout_s:g} s (PARTSIGHT_API_TIMEOUT_S); retry later"
            ) from exc
        return answer_response(answer)

    return routes
