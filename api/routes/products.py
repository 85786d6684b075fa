"""Products and their enrolments: the catalog, new records, photos that enrol a product, an enrolment's state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Auth
from api.body import read_photos
from api.errors import (
    INTERNAL,
    PRODUCT_ENROLLED,
    PRODUCT_EXISTS,
    UNKNOWN_ENROLMENT,
    UNKNOWN_PRODUCT,
    ApiError,
    bad_request,
    not_found,
)
from api.services import Services, product_id
from api.tokens import ENROL
from models.errors import EnrolmentError, UnknownEnrolment
from models.store.enrolment_requests import MAX_PHOTOS, check_catalog_record, check_product_id


class CatalogRecord(BaseModel):
    """A catalog record: `product`, `name` and `category`; further fields travel into results as they are."""

    model_config = ConfigDict(extra="allow")
    product: str = Field(description="1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    name: str
    category: str


# long: one resource's routes, registered together as closures over the same services
def router(services: Services, auth: Auth) -> APIRouter:
    routes = APIRouter(tags=["products"])
    settings = services.settings
    products = services.products

    @routes.get("/v1/products", dependencies=[Depends(auth.require(None))], summary="Every product, enrolled or not")
    def list_products() -> dict[str, Any]:
        return {"products": products.listing()}

    @routes.get("/v1/products/{product}", dependencies=[Depends(auth.require(None))], summary="One product")
    def get_product(product: str) -> dict[str, Any]:
        found = products.get(product_id(product))
        if found is None:
            raise not_found(UNKNOWN_PRODUCT, f"no product {product!r}")
        return found

    @routes.post(
        "/v1/products",
        dependencies=[Depends(auth.require(ENROL))],
        status_code=201,
        summary="A new product's catalog record, kept until its first photos enrol it",
    )
    def add_product(record: CatalogRecord) -> JSONResponse:
        document = record.model_dump()
        try:
            product = check_product_id(document["product"])
            checked = check_catalog_record(product, document)
        except EnrolmentError as exc:
            raise bad_request(exc.message) from exc
        if product in products.catalog():
            raise ApiError(409, PRODUCT_EXISTS, f"{product} is in the current model's catalog already")
        created = products.add_pending(checked)
        return JSONResponse({**checked, "enrolled": False}, status_code=201 if created else 200)

    @routes.delete(
        "/v1/products/{product}",
        dependencies=[Depends(auth.require(ENROL))],
        summary="Forget a product posted and never enrolled (a product in the catalog stays: train without it)",
    )
    def delete_product(product: str) -> dict[str, Any]:
        product = product_id(product)
        if product in products.catalog():
            raise ApiError(
                409,
                PRODUCT_ENROLLED,
                f"{product} is in the current model version; a full training without it removes it",
            )
        if not products.remove_pending(product):
            raise not_found(UNKNOWN_PRODUCT, f"no product {product!r} waits for photos")
        return {"product": product, "deleted": True}

    @routes.post(
        "/v1/products/{product}/photos",
        dependencies=[Depends(auth.require(ENROL))],
        status_code=202,
        summary="Enrol photos of a product (multipart, one or more `photo` files): a new model version in seconds",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"photo": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                            "required": ["photo"],
                        }
                    }
                },
            }
        },
    )
    async def add_photos(product: str, request: Request) -> JSONResponse:
        product = product_id(product)
        known, record = await run_in_threadpool(products.record_for_enrolment, product)
        if not known:  # refused before a byte of the photos is read
            raise not_found(UNKNOWN_PRODUCT, f"no product {product!r}: POST its catalog record to /v1/products first")
        photos = await read_photos(request, settings.max_body_bytes, MAX_PHOTOS)
        enrolment = await run_in_threadpool(services.enrol, product, photos, record, "api")
        return JSONResponse(
            {"enrolment": enrolment}, status_code=202, headers={"Location": f"/v1/enrolments/{enrolment}"}
        )

    @routes.get("/v1/enrolments", dependencies=[Depends(auth.require(ENROL))], summary="Recent enrolments")
    def list_enrolments(limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
        try:
            return {"enrolments": services.enrolments.list(limit)}
        except EnrolmentError as exc:  # the enrolments folder cannot be read
            raise ApiError(500, INTERNAL, exc.message) from exc

    @routes.get(
        "/v1/enrolments/{enrolment}",
        dependencies=[Depends(auth.require(ENROL))],
        summary="An enrolment: queued, running, done (the version it made) or failed (why)",
    )
    def get_enrolment(enrolment: str) -> dict[str, Any]:
        try:
            return services.enrolments.get(enrolment)
        except UnknownEnrolment as exc:
            raise not_found(UNKNOWN_ENROLMENT, exc.message) from exc
        except EnrolmentError as exc:  # the store cannot be read, or the stored request is corrupt
            raise ApiError(500, INTERNAL, exc.message) from exc

    return routes
