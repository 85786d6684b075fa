"""Lines and devices: what each line makes, and which line a device is on. Kept in the model store, not in a
version (models.store.plant_lines); every change is announced to the workers, which see it within a second."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Auth
from api.errors import ApiError
from api.services import Services
from api.tokens import ADMIN
from models.errors import LineError, StoreBusy
from models.store import plant_lines as store_lines
from models.store.plant_lines import Line, Lines, read_lines
from models.store.versions import current_version

logger = logging.getLogger(__name__)

STATUS = {
    store_lines.UNKNOWN_LINE: 404,
    store_lines.UNKNOWN_PRODUCT: 422,
    store_lines.UNKNOWN_CATEGORY: 422,
    store_lines.BAD_LINE: 422,
    store_lines.BAD_DEVICE: 422,
    store_lines.LINE_IN_USE: 409,
}


class LineBody(BaseModel):
    """What a line makes: products by id and/or whole categories (at least one of either)."""

    model_config = ConfigDict(extra="forbid")
    products: list[str] = Field(default_factory=list, max_length=10_000)
    categories: list[str] = Field(default_factory=list, max_length=1_000)


class DeviceBody(BaseModel):
    """The line a device is on; null: none (its frames are answered among the whole catalog)."""

    model_config = ConfigDict(extra="forbid")
    line: str | None


def line_record(line: Line, lines: Lines, rankers: Mapping[str, list[dict[str, Any]]] | None) -> dict[str, Any]:
    """A line as the API shows it: what it makes, its devices, and each worker's last try at its own ranker for
    this edit of it (`rankers`: by line; null when Redis did not say)."""
    return {
        **line.record(),
        "devices": lines.devices_on(line.name),
        "rankers": None if rankers is None else rankers.get(line.name, []),
    }


def api_error(exc: LineError | StoreBusy) -> ApiError:
    if isinstance(exc, StoreBusy):
        return ApiError(503, "busy", f"the store's lines are being changed: {exc}", {"Retry-After": "1"})
    return ApiError(STATUS.get(exc.code, 422), exc.code, exc.message)


# long: one resource's routes, registered together as closures over the same services
def router(services: Services, auth: Auth) -> APIRouter:
    routes = APIRouter(tags=["lines"])
    store = services.settings.store

    def current() -> Lines:
        try:
            return read_lines(store)
        except LineError as exc:
            raise ApiError(500, exc.code, exc.message) from exc

    def rankers(*found: Line) -> dict[str, list[dict[str, Any]]] | None:
        return services.dispatcher.line_rankers(
            [(line.name, line.updated_at) for line in found], current_version(store)
        )

    def announce(what: str) -> bool:
        return services.dispatcher.announce(current_version(store) or "", f"lines: {what}")

    @routes.get("/v1/lines", dependencies=[Depends(auth.require(None))], summary="Every line and its devices")
    def list_lines() -> dict[str, Any]:
        lines = current()
        ordered = [line for _, line in sorted(lines.lines.items())]
        states = rankers(*ordered)
        return {"lines": [line_record(line, lines, states) for line in ordered]}

    @routes.get("/v1/lines/{line}", dependencies=[Depends(auth.require(None))], summary="One line and its devices")
    def get_line(line: str) -> dict[str, Any]:
        lines = current()
        found = lines.lines.get(line)
        if found is None:
            raise ApiError(404, store_lines.UNKNOWN_LINE, f"there is no line {line[:80]!r}")
        return line_record(found, lines, rankers(found))

    @routes.put(
        "/v1/lines/{line}",
        dependencies=[Depends(auth.require(ADMIN))],
        summary="Create or replace a line: the products and categories it makes (all in the current catalog)",
    )
    def put_line(line: str, body: LineBody) -> dict[str, Any]:
        catalog = services.products.catalog()
        try:
            created = line not in current().lines
            saved = store_lines.put_line(
                store,
                line,
                products=body.products,
                categories=body.categories,
                known_products=catalog,
                known_categories={str(record.get("category")) for record in catalog.values()},
            )
        except (LineError, StoreBusy) as exc:
            raise api_error(exc) from exc
        announced = announce(line)
        logger.info(
            "line %s %s: %d product(s), %d categories",
            line,
            "created" if created else "replaced",
            len(saved.products),
            len(saved.categories),
        )
        return {**line_record(saved, current(), {}), "created": created, "announced": announced}

    @routes.delete("/v1/lines/{line}", dependencies=[Depends(auth.require(ADMIN))], summary="Remove a line")
    def delete_line(line: str) -> dict[str, Any]:
        try:
            removed = store_lines.delete_line(store, line)
        except (LineError, StoreBusy) as exc:
            raise api_error(exc) from exc
        logger.info("line %s removed", line)
        return {"line": removed.name, "deleted": True, "announced": announce(line)}

    @routes.get("/v1/devices", dependencies=[Depends(auth.require(None))], summary="Every device on a line")
    def list_devices() -> dict[str, Any]:
        return {"devices": [{"device": d, "line": line} for d, line in sorted(current().devices.items())]}

    @routes.get("/v1/devices/{device}", dependencies=[Depends(auth.require(None))], summary="The line of a device")
    def get_device(device: str) -> dict[str, Any]:
        return {"device": device, "line": current().devices.get(device)}

    @routes.put(
        "/v1/devices/{device}",
        dependencies=[Depends(auth.require(ADMIN))],
        summary="Put a device on a line (null: none; its frames are then answered among the whole catalog)",
    )
    def put_device(device: str, body: DeviceBody) -> dict[str, Any]:
        try:
            store_lines.set_device_line(store, device, body.line)
        except (LineError, StoreBusy) as exc:
            raise api_error(exc) from exc
        logger.info("device %s is on line %s", device, body.line)
        return {"device": device, "line": body.line, "announced": announce(f"device {device}")}

    return routes
