"""A small model store for the API's tests, written as plain files the way models.bundle lays a version out
(manifest with every file's sha256, catalog, training figures, report files), without numpy: the API never loads a
head, it lists, verifies and points `current`. Plus fakes of the API's two collaborators."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from api.recent_objects import RecentObjects

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32  # enough of a PNG for a content-type test


def write_version(
    store: Path,
    version: str,
    products: dict[str, str],
    *,
    created_at: str = "2025-01-01T00:00:00Z",
    current: bool = True,
) -> Path:
    """A version of `products` (id -> category) under `store`; `current` moves to it unless told otherwise."""
    folder = store / version
    folder.mkdir(parents=True)
    records = [{"product": p, "name": p.title(), "category": c, "sku": f"SKU-{p}"} for p, c in sorted(products.items())]
    files = {
        "head.npz": b"PK\x05\x06" + b"\x00" * 18 + version.encode(),
        "labels.json": json.dumps(
            {"products": sorted(products), "categories": [products[p] for p in sorted(products)]}
        ),
        "catalog.json": json.dumps({"products": records}),
        "report.json": json.dumps({"cv_accuracy": 0.9}),
        "confusion_matrix.png": PNG,
    }
    for name, content in files.items():
        (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
    manifest = {
        "format": 2,
        "name": "api-test",
        "version": version,
        "created_at": created_at,
        "backbone": {"name": "efficientnet_lite0"},
        "head": {"structure": "flat", "classifiers": [], "product_threshold": 0.5, "category_threshold": 0.5},
        "files": {
            name: {
                "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                "bytes": (folder / name).stat().st_size,
            }
            for name in files
        },
        "training": {
            "cv_accuracy": 0.91,
            "products": len(products),
            "images": 20 * len(products),
            "open_set": {"auroc": 0.88},
        },
        "report_files": ["report.json", "confusion_matrix.png"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if current:
        link = store / ".current.tmp"
        link.symlink_to(version)
        os.replace(link, store / "current")
    return folder


def result_for(device: str, product: str | None = "p1") -> dict[str, Any]:
    return {
        "schema": "partsight/1",
        "frame_id": "f",
        "device": device,
        "status": "recognized" if product else "unknown",
        "product": product,
        "top_k": [{"product": "p1", "score": 0.8}, {"product": "p2", "score": 0.1}],
        "matches": [{"product": "p1", "photo": "tops/p1/a.png", "similarity": 0.9}],
    }


def error_for(device: str, code: str) -> dict[str, Any]:
    return {"schema": "partsight/1", "frame_id": "f", "device": device, "error": {"code": code, "message": code}}


class FakeRecognizer:
    """Answers each frame at once with `reply(device, image)`, or never (`hang`)."""

    def __init__(self) -> None:
        self.connected = True
        self.in_flight = 0
        self.hang = False
        self.frames: list[tuple[str, bytes]] = []
        self.objects: list[tuple[str | None, bool]] = []  # each frame's object and object_end
        self.events = RecentObjects()
        self.reply: Any = lambda device, image: result_for(device)
        self.pending: list[Future[dict[str, Any]]] = []

    def submit(
        self,
        device: str,
        image: bytes,
        line: str | None = None,
        *,
        object_name: str | None = None,
        object_end: bool = False,
    ) -> Future[dict[str, Any]]:
        self.frames.append((device, image))
        self.objects.append((object_name, object_end))
        future: Future[dict[str, Any]] = Future()
        if self.hang:
            self.pending.append(future)
        else:
            future.set_result(self.reply(device, image))
        return future

    def recent_objects(self, device: str | None, limit: int) -> list[dict[str, Any]]:
        return self.events.newest(device, limit)


class FakeDispatcher:
    def __init__(self) -> None:
        self.enrolled: list[str] = []
        self.announced: list[tuple[str, str]] = []
        self.rankers: dict[str, list[dict[str, Any]]] = {}  # by line: as the workers recorded them
        self.down = False

    def enrol(self, enrolment: str) -> None:
        if self.down:
            raise ConnectionError("Redis is away")
        self.enrolled.append(enrolment)

    def announce(self, version: str, reason: str) -> bool:
        self.announced.append((version, reason))
        return not self.down

    def ping(self) -> bool:
        return not self.down

    def line_rankers(
        self, lines: Sequence[tuple[str, str]], version: str | None
    ) -> dict[str, list[dict[str, Any]]] | None:
        if self.down:
            return None
        return {
            name: [s for s in self.rankers.get(name, []) if (s["line_updated_at"], s["version"]) == (at, version)]
            for name, at in lines
        }

    def close(self) -> None:
        return None
