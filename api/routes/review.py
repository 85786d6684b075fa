"""The review queue: frames the service could not name, their images, and the operator's label or dismissal.

Labelling an item records the label and enrols its image for that product (source "review"). The queue can be read
grouped into clusters of look-alikes (api.review_clusters), and a cluster's items labelled or dismissed at once:
labelling enrols a few of them (the most typical, then the most unlike), not all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Auth
from api.body import IMAGE_TYPES, SUFFIXES
from api.errors import (
    ALREADY_LABELLED,
    INTERNAL,
    UNKNOWN_ITEM,
    UNKNOWN_PRODUCT,
    ApiError,
    bad_request,
    not_found,
)
from api.review_clusters import clusters, enrol_choice, features_available, public
from api.services import Services, product_id
from api.tokens import ADMIN
from models.errors import ReviewError, UnknownItem
from models.store.review_items import LABELLED, OPEN
from models.store.review_store import ReviewStore

logger = logging.getLogger(__name__)

FRAME, CLUSTER = "frame", "cluster"  # GET /v1/review?group=
DEFAULT_SCAN, MAX_SCAN = 1000, 2000  # items grouped into clusters: the newest `scan` of them
MAX_BATCH_ITEMS = 5000


class ReviewBatch(BaseModel):
    """`{"items": [ID, ...], "label": PRODUCT}` (enrols a few of their images) or `{"items": [...], "dismiss": true}`:
    a cluster's items at once."""

    model_config = ConfigDict(extra="forbid")
    items: list[str] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    label: str | None = None
    dismiss: bool | None = None


class ReviewAction(BaseModel):
    """`{"label": PRODUCT}` (which enrols the item's image) or `{"dismiss": true}`."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = None
    dismiss: bool | None = None


def open_items(review: ReviewStore, ids: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The records of the items still open, and why each other one is skipped (gone, unreadable, labelled,
    dismissed)."""
    records, skipped = [], []
    for item in dict.fromkeys(ids):
        try:
            record = review.get(item)
        except UnknownItem:
            skipped.append({"id": item[:80], "reason": "gone"})
            continue
        except ReviewError as exc:  # a corrupt item.json: that item only
            logger.warning("review item %s skipped: %s", item, exc)
            skipped.append({"id": item, "reason": "unreadable"})
            continue
        if record.get("status") == OPEN:
            records.append(record)
        else:
            skipped.append({"id": item, "reason": str(record.get("status"))})
    return records, skipped


def known_product(services: Services, label: str) -> tuple[str, dict[str, Any] | None]:
    product = product_id(label)
    known, catalog_record = services.products.record_for_enrolment(product)
    if not known:
        raise not_found(UNKNOWN_PRODUCT, f"no product {product!r}: POST its catalog record to /v1/products first")
    return product, catalog_record


def photo_of(review: ReviewStore, record: Mapping[str, Any]) -> tuple[str, bytes]:
    data, kind = review.image(record["id"])
    return f"review-{record['id']}{SUFFIXES.get(kind, '')}", data


def photos_to_enrol(
    review: ReviewStore, records: list[dict[str, Any]], skipped: list[dict[str, str]]
) -> tuple[list[dict[str, Any]], list[tuple[str, bytes]], set[str]]:
    """The items still there, the photos of those worth enrolling (api.review_clusters.enrol_choice) and their ids;
    an item removed before its image is read is skipped, and the choice made again without it."""
    while records:
        chosen = [records[i] for i in enrol_choice(records)]
        try:
            return records, [photo_of(review, record) for record in chosen], {record["id"] for record in chosen}
        except UnknownItem:
            gone = {record["id"] for record in chosen if not review.exists(record["id"])}
            skipped.extend({"id": item, "reason": "gone"} for item in sorted(gone))
            records = [record for record in records if record["id"] not in gone]
    return [], [], set()


def act_on_items(review: ReviewStore, services: Services, batch: ReviewBatch) -> JSONResponse:
    """Label (enrolling a few) or dismiss the batch's items that are still open; the others are skipped, named."""
    records, skipped = open_items(review, batch.items)
    done: list[str] = []

    def close(record: dict[str, Any], changed: dict[str, Any] | None) -> None:
        if changed is None:  # labelled, dismissed or evicted since it was read
            skipped.append({"id": record["id"], "reason": "changed"})
        else:
            done.append(record["id"])

    if batch.label is None:
        for record in records:
            close(record, review.dismiss_if_open(record["id"]))
        return JSONResponse({"dismissed": done, "skipped": skipped})
    product, catalog_record = known_product(services, batch.label)
    records, photos, enrolled = photos_to_enrol(review, records, skipped)
    if not records:
        raise ApiError(409, ALREADY_LABELLED, f"none of the {len(skipped)} item(s) is open: {skipped[:3]}")
    enrolment = services.enrol(product, photos, catalog_record, "review")
    for record in records:
        close(record, review.label_if_open(record["id"], product, enrolled=record["id"] in enrolled))
    body = {"labelled": done, "enrolled": sorted(enrolled), "skipped": skipped, "enrolment": enrolment}
    return JSONResponse(body, status_code=202)


def add_batch_route(routes: APIRouter, services: Services) -> None:
    """POST /v1/review/batch: a cluster's items labelled (a few enrolled) or dismissed at once."""

    @routes.post(
        "/v1/review/batch",
        summary='A cluster\'s items at once: {"items": [...], "label": PRODUCT} (enrols a few) or "dismiss": true',
    )
    def act_on_many(batch: ReviewBatch) -> JSONResponse:
        if (batch.label is not None) == (batch.dismiss is True):
            raise bad_request('send {"items": [...], "label": PRODUCT} or {"items": [...], "dismiss": true}')
        try:
            return act_on_items(services.review, services, batch)
        except ReviewError as exc:
            raise bad_request(str(exc)) from exc


def router(services: Services, auth: Auth) -> APIRouter:  # long: the queue's four routes over one store
    routes = APIRouter(tags=["review"], dependencies=[Depends(auth.require(ADMIN))])
    review = services.review

    def item_of(item: str) -> dict[str, Any]:
        try:
            return public(review.get(item))
        except UnknownItem as exc:
            raise not_found(UNKNOWN_ITEM, f"no review item {item[:80]!r}") from exc
        except ReviewError as exc:
            raise ApiError(500, INTERNAL, str(exc)) from exc

    @routes.get("/v1/review", summary="Review items, newest first, or grouped into clusters of look-alikes")
    def list_items(
        limit: int = Query(50, ge=1, le=1000, description="items, or clusters with group=cluster"),
        status: str = Query(OPEN, description="open, labelled, dismissed or all"),
        group: str = Query(
            FRAME, description="frame: one entry per item; cluster: items grouped by look-alikes and by object"
        ),
        scan: int = Query(
            DEFAULT_SCAN, ge=1, le=MAX_SCAN, description="with group=cluster: how many of the newest items are grouped"
        ),
    ) -> dict[str, Any]:
        if group not in (FRAME, CLUSTER):
            raise bad_request(f"group must be {FRAME} or {CLUSTER}, got {group[:40]!r}")
        try:
            records = review.list(limit=scan if group == CLUSTER else limit, status=status)
        except ReviewError as exc:
            raise bad_request(str(exc)) from exc
        if group == FRAME:
            return {"items": [public(record) for record in records]}
        found = clusters(records)
        return {
            "grouped_by": ["features", "object"] if features_available() else ["object"],
            "clusters": found[:limit],
            "clusters_total": len(found),
            "items_grouped": len(records),
            "more_items": len(records) >= scan,  # older items of this status were not read: raise `scan` to see them
        }

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

    add_batch_route(routes, services)  # before /v1/review/{item}, which would take "batch" for an id

    @routes.post("/v1/review/{item}", summary='Label an item ({"label": PRODUCT}: enrols its image) or dismiss it')
    def act(item: str, action: ReviewAction) -> JSONResponse:
        record = item_of(item)
        if (action.label is not None) == (action.dismiss is True):
            raise bad_request('send {"label": PRODUCT} or {"dismiss": true}')
        if record.get("status") == LABELLED:
            raise ApiError(409, ALREADY_LABELLED, f"item {item} is labelled {record.get('label')!r} already")
        try:
            if action.label is None:
                return JSONResponse(public(review.dismiss(item)))
            product, catalog_record = known_product(services, action.label)
            enrolment = services.enrol(product, [photo_of(review, record)], catalog_record, "review")
            return JSONResponse({**public(review.label(item, product)), "enrolment": enrolment}, status_code=202)
        except UnknownItem as exc:
            raise not_found(UNKNOWN_ITEM, f"no review item {item[:80]!r}") from exc
        except ReviewError as exc:
            raise bad_request(str(exc)) from exc

    return routes
