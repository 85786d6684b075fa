"""The hot-reload decision: swap in a verified new version, refuse a bad one once, keep serving meanwhile."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from models.bundle import point_current, served_signature
from models.errors import ArtifactError
from tests.unit.test_pipeline import served_model
from worker.metrics import WorkerMetrics
from worker.pipeline import ServedModel
from worker.reload import LOADED, REFUSED, UNCHANGED, ModelReloader, ModelSlot


class Store:
    """A stand-in for the model store: which version `current` names and which versions verify."""

    def __init__(self) -> None:
        self.current = "v1"
        self.manifests = {"v1": "m1", "v2": "m2", "bad": "mb", "v3": "m3"}
        self.tampered = {"bad"}
        self.loads: list[str] = []
        self.unreadable = False

    def signature(self, path: Path) -> tuple[str, str]:
        if self.unreadable:
            raise ArtifactError("store/current points at a missing version")
        return f"store/{self.current}", self.manifests[self.current]

    def load(self, path: Path) -> ServedModel:
        version = path.name
        self.loads.append(version)
        if version in self.tampered:
            raise ArtifactError(f"store/{version}: head.npz has sha256 0bad, the manifest says 600d")
        return served_model(version)


def reloader_for(store: Store) -> tuple[ModelReloader, ModelSlot, WorkerMetrics, list[str]]:
    metrics = WorkerMetrics(CollectorRegistry())
    described: list[str] = []
    slot = ModelSlot(served_model("v1"), store.signature(Path("store")))
    reloader = ModelReloader(
        Path("store"),
        slot,
        load=store.load,
        signature=store.signature,
        reloads=metrics.model_reloads,
        refused=metrics.model_refused,
        on_loaded=lambda model: described.append(model.info.version),
        interval_s=0,
    )
    return reloader, slot, metrics, described


def count(metrics: WorkerMetrics, outcome: str) -> float:
    return metrics.model_reloads.labels(outcome=outcome)._value.get()


def test_nothing_happens_while_current_stays() -> None:
    store = Store()
    reloader, slot, _, _ = reloader_for(store)
    assert reloader.check() == UNCHANGED and store.loads == [] and slot.get().info.version == "v1"


def test_a_new_version_is_loaded_and_swapped_in() -> None:
    store = Store()
    reloader, slot, metrics, described = reloader_for(store)
    store.current = "v2"
    assert reloader.check() == LOADED
    assert slot.get().info.version == "v2" and described == ["v2"] and count(metrics, "loaded") == 1
    assert reloader.check() == UNCHANGED and store.loads == ["v2"]


def test_a_tampered_version_is_refused_once_and_the_old_one_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    reloader, slot, metrics, described = reloader_for(store)
    store.current = "bad"
    assert reloader.check() == REFUSED
    assert slot.get().info.version == "v1" and described == []
    assert metrics.model_refused._value.get() == 1 and count(metrics, "refused") == 1
    assert "still serving m version v1" in caplog.text and "sha256" in caplog.text
    assert reloader.check() == UNCHANGED and store.loads == ["bad"]  # not loaded again and again
    assert count(metrics, "refused") == 1
    store.current = "v3"  # a good version after the bad one
    assert reloader.check() == LOADED and slot.get().info.version == "v3"
    assert metrics.model_refused._value.get() == 0


def test_going_back_to_the_served_version_clears_the_refusal() -> None:
    store = Store()
    reloader, _, metrics, _ = reloader_for(store)
    store.current = "bad"
    reloader.check()
    store.current = "v1"
    assert reloader.check() == UNCHANGED and metrics.model_refused._value.get() == 0 and store.loads == ["bad"]


def test_an_unreadable_store_is_refused_and_serving_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    reloader, slot, metrics, _ = reloader_for(store)
    store.unreadable = True
    assert reloader.check() == REFUSED and reloader.check() == UNCHANGED
    assert slot.get().info.version == "v1" and "missing version" in caplog.text
    store.unreadable = False
    assert reloader.check() == UNCHANGED and metrics.model_refused._value.get() == 0


def test_the_signature_follows_current_and_a_rewritten_manifest(model_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(model_store, store, symlinks=True)
    first = served_signature(store)
    version = Path(first[0]).name
    shutil.copytree(store / version, store / "copy")
    point_current(store, "copy")
    moved = served_signature(store)
    assert moved[0] == str(store / "copy") and moved[1] == first[1]
    manifest = store / "copy" / "manifest.json"
    manifest.write_text(manifest.read_text().replace(version, "copy"))
    assert served_signature(store)[1] != first[1]
    point_current(store, "missing")
    with pytest.raises(ArtifactError):
        served_signature(store)
