"""Model versions: list them with their report figures, serve their report plots, activate one (verified first)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from api.auth import Auth
from api.errors import INTERNAL, UNKNOWN_REPORT_FILE, UNKNOWN_VERSION, VERSION_INVALID, ApiError, not_found
from api.services import Services
from api.tokens import ADMIN
from models.errors import ArtifactError, StoreBusy, UnknownVersion
from models.store import versions
from models.store.versions import VersionEntry, list_versions, read_manifest, version_dir

logger = logging.getLogger(__name__)

ACTIVATE_WAIT_S = 30.0  # how long an activation waits for an enrolment in progress to finish

REPORT_TYPES = {".png": "image/png", ".json": "application/json", ".md": "text/markdown; charset=utf-8"}


def version_record(entry: VersionEntry) -> dict[str, Any]:
    """One version as GET /v1/models lists it (its manifest read as JSON; files are verified on activation)."""
    manifest = entry.manifest
    report_files, backbone = manifest.get("report_files"), manifest.get("backbone")
    return {
        "version": entry.version,
        "name": entry.name,
        "created_at": entry.created_at,
        "current": entry.current,
        "backbone": backbone.get("name") if isinstance(backbone, dict) else None,
        "training": manifest.get("training"),
        "enrolment": manifest.get("enrolment"),
        "report_files": [name for name in report_files if isinstance(name, str)]
        if isinstance(report_files, list)
        else [],
        "problem": entry.problem,
    }


# long: one resource's routes, registered together as closures over the same services
def router(services: Services, auth: Auth) -> APIRouter:
    routes = APIRouter(tags=["models"])
    store = services.settings.store

    def folder_of(version: str) -> Path:
        try:
            return version_dir(store, version)
        except UnknownVersion as exc:
            raise not_found(UNKNOWN_VERSION, f"no model version {version[:80]!r}") from exc

    @routes.get(
        "/v1/models",
        dependencies=[Depends(auth.require(None))],
        summary="Model versions, newest first, and which is current",
    )
    def list_models() -> dict[str, Any]:
        entries = list_versions(store)
        current = next((entry.version for entry in entries if entry.current), None)
        return {"current": current, "versions": [version_record(entry) for entry in entries]}

    @routes.get(
        "/v1/models/{version}/report/{file}",
        dependencies=[Depends(auth.require(None))],
        summary="One of the files a version's report_files lists (the training report's plots)",
        response_class=FileResponse,
    )
    def report_file(version: str, file: str) -> FileResponse:
        folder = folder_of(version)
        try:
            listed = read_manifest(folder).get("report_files")
        except ArtifactError as exc:
            raise ApiError(409, VERSION_INVALID, str(exc)) from exc
        suffix = Path(file).suffix.lower()
        if not isinstance(listed, list) or file not in listed or "/" in file or suffix not in REPORT_TYPES:
            raise not_found(UNKNOWN_REPORT_FILE, f"version {version} has no report file {file[:80]!r}")
        path = folder / file
        if not path.is_file():
            raise not_found(UNKNOWN_REPORT_FILE, f"version {version}: {file} is missing")
        return FileResponse(path, media_type=REPORT_TYPES[suffix], headers={"Cache-Control": "private, max-age=3600"})

    @routes.post(
        "/v1/models/{version}/activate",
        dependencies=[Depends(auth.require(ADMIN))],
        summary="Verify a version's files against its manifest, make it current, tell the workers to load it",
    )
    def activate(version: str) -> dict[str, Any]:
        folder_of(version)  # 404 for a name that is no version
        try:
            previous = versions.activate(store, version, timeout_s=ACTIVATE_WAIT_S)
        except ArtifactError as exc:
            logger.warning("refused to activate %s: %s", version, exc)
            raise ApiError(409, VERSION_INVALID, f"version {version} fails verification: {exc}") from exc
        except StoreBusy as exc:
            raise ApiError(503, "busy", f"an enrolment holds the store: {exc}", {"Retry-After": "5"}) from exc
        except OSError as exc:
            raise ApiError(500, INTERNAL, f"cannot move current in {store}: {exc.strerror or exc}") from exc
        announced = services.dispatcher.announce(version, "activate")
        logger.info("version %s is current (was %s); announced to the workers: %s", version, previous, announced)
        return {"version": version, "current": version, "previous": previous, "announced": announced}

    return routes
