"""The fault matrix as tests: each fault strikes while a camera streams 10 frames/s; afterwards every frame
sent has exactly one answer (a result or an error with its code): none lost, none answered twice."""

from __future__ import annotations

import pytest

from partsight.testing.fault_matrix import SCENARIOS, Scenario, stream_through

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_frame_is_answered_exactly_once_through_the_fault(
    scenario: Scenario, mqtt_server, redis, model_store, camera_photos, tmp_path
) -> None:
    images = [path.read_bytes() for path, _ in camera_photos]
    outcome = stream_through(
        scenario, mqtt=mqtt_server, redis=redis, model_dir=model_store, logs=tmp_path / "logs", images=images
    )
    assert outcome.sent >= 40, outcome  # the camera streamed before, during and after the fault
    assert outcome.lost == 0 and outcome.answered == outcome.sent, outcome
    assert outcome.duplicated <= scenario.allowed_duplicates, outcome
    if scenario.name == "bridge-cut-30s":  # the cut did bite: frames sent during it waited for the heal
        assert outcome.worst_latency_s > 20, outcome
