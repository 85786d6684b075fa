"""Hot model reload while a camera streams: a tampered new version is refused and the old one keeps answering;
a good one is swapped in without a restart; every frame is answered once throughout."""

from __future__ import annotations

import shutil
import time

import pytest

from models.bundle import point_current
from partsight.testing.harness import copy_version, metric, readyz, scrape, wait_for

from .test_faults import every_frame_answered_once, steady_camera

pytestmark = pytest.mark.integration


def versions_answering(listener, since: float = 0.0) -> list[str]:  # type: ignore[no-untyped-def]
    arrivals = {frame_id: at for at, topic, frame_id in listener.arrivals if topic.endswith("/result")}
    return [
        doc["model"]["version"]
        for topic, doc, _ in listener.messages
        if topic.endswith("/result") and arrivals.get(doc["frame_id"], 0.0) >= since
    ]


def test_a_tampered_version_is_refused_and_a_good_one_swapped_in_while_frames_stream(
    own_stack, model_store, camera_photos, tmp_path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(model_store, store, symlinks=True)
    original = (store / "current").resolve().name
    stack = own_stack
    stack.env.update(PARTSIGHT_MODEL_DIR=str(store), PARTSIGHT_MODEL_RELOAD_S="0.3")
    stack.start()
    device = "reload-cam"
    images = [path.read_bytes() for path, _ in camera_photos]
    frame_ids = [f"r-{i:03d}" for i in range(120)]
    port = stack.worker_port

    def reloads(outcome: str) -> float:
        return metric(port, "partsight_worker_model_reloads_total", outcome=outcome) or 0.0

    with stack.listen(device) as listener:
        camera = steady_camera(stack, device, images, frame_ids, interval_s=0.1)
        wait_for(lambda: len(listener.messages) >= 10, 30, "first answers")

        copy_version(store, original, "tampered", tamper=True)
        point_current(store, "tampered")
        wait_for(lambda: reloads("refused") == 1, 20, "the tampered version refused")
        refused_at = time.time()
        assert metric(port, "partsight_worker_model_refused") == 1
        assert readyz(port)[0] == 200  # still serving: the refusal is not an outage
        wait_for(lambda: versions_answering(listener, since=refused_at + 0.5), 20, "answers after the refusal")
        assert set(versions_answering(listener, since=refused_at)) == {original}

        copy_version(store, original, "good")
        point_current(store, "good")
        wait_for(lambda: reloads("loaded") == 1, 30, "the good version loaded")
        loaded_at = time.time()
        assert metric(port, "partsight_worker_model_refused") == 0
        assert [labels["version"] for labels in model_info(port)] == ["good"]  # the old version's labels are gone
        camera.join(60)
        every_frame_answered_once(stack, listener, frame_ids)

    assert reloads("refused") == 1, "a refused version was tried again"
    assert set(versions_answering(listener, since=loaded_at + 1.0)) == {"good"}
    assert "tampered" not in versions_answering(listener)
    assert len(set(versions_answering(listener))) == 2
    log = stack.worker.log()
    assert f"new model refused, still serving fashion-test version {original}" in log
    assert "head.npz has sha256" in log
    assert stack.worker.alive


def model_info(port: int) -> list[dict[str, str]]:
    """The labels of every partsight_model_info sample a worker exports."""
    return [dict(labels) for (name, labels) in scrape(port) if name == "partsight_model_info"]
