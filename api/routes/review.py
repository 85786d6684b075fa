"""The review queue: frames the service could not name, their images, and the operator's label or dismissal.

Labelling an item records the label and enrols its image for that product (source "review").
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from api.auth import Auth
from api.body import IMAGE_TYPES, SUFFIXES
from api.errors import ALREADY_LABELLED, INTERNAL, UNKNOWN_ITEM, UNKNOWN_PRODUCT, ApiError, bad_request, not_found
from api.services import Services, product_id
from api.tokens import ADMIN
from models.errors import ReviewError, UnknownItem
from models.store.review_items import LABELLED, OPEN


class ReviewAction(BaseModel):
    """`{"label": PRODUCT}` (which enrols the item's image) or `{"dismiss": true}`."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = None
    dismiss: bool | None = None


def router(services: Services, auth: Auth) -> APIRouter:
    routes = APIRouter(tags=["review"], dependencies=[Depends(auth.require(ADMIN))])
    review = services.review

    def item_of(item: str) -> dict[str, Any]:
        try:
            return review.get(item)
        except UnknownItem as exc:
            raise not_found(UNKNOWN_ITEM, f"no review item {item[:80]!r}") from exc
        except ReviewError as exc:
            raise ApiError(500, INTERNAL, str(exc)) from exc

    @routes.get("/v1/review", summary="Review items, newest first")
    def list_items(
        limit: int = Query(50, ge=1, le=1000), status: str = Query(OPEN, description="open, labelled, dismissed or all")
    ) -> dict[str, Any]:
        try:
            return {"items": review.list(limit=limit, status=status)}
        except ReviewError as exc:
            raise bad_request(str(exc)) from exc

    @routes.get("/v1/review/{item}/image", summary="The image exactly as the device sent it", response_class=Response)
    def item_image(item: str) -> Response:
        item_of(item)
        try:
            data, kind = review.image(item)
        except UnknownItem as exc:
            raise not_found(UNKNOWN_ITEM, f"no review item {item[:80]!r}") from exc
        except ReviewError as exc:
            raise ApiError(500, INTERNAL, str(exc)) from exc
        media = kind if kind in IMAGE_TYPES else "application/octet-stream"
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @routes.post("/v1/review/{item}", summary='Label an item ({"label": PRODUCT}: enrols its image) or dismiss it')
    def act(item: str, action: ReviewAction) -> JSONResponse:
        record = item_of(item)
        if (action.label is not None) == (action.dismiss is True):
            raise bad_request('send {"label": PRODUCT} or {"dismiss": true}')
        if record.get("status") == LABELLED:
            raise ApiError(409, ALREADY_LABELLED, f"item {item} is labelled {record.get('label')!r} already")
        try:
            if action.label is None:
                return JSONResponse(review.dismiss(item))
            product = product_id(action.label)
            known, catalog_record = services.products.record_for_enrolment(product)
            if not known:
                raise not_found(
                    UNKNOWN_PRODUCT, f"no product {product!r}: POST its catalog record to /v1/products first"
                )
            data, kind = review.image(item)
            photo = f"review-{item}{SUFFIXES.get(kind, '')}"
            enrolment = services.enrol(product, [(photo, data)], catalog_record, "review")
            return JSONResponse({**review.label(item, product), "enrolment": enrolment}, status_code=202)
        except UnknownItem as exc:
            raise not_found(UNKNOWN_ITEM, f"no review item {item[:80]!r}") from exc
        except ReviewError as exc:
            raise bad_request(str(exc)) from exc

    return routes
