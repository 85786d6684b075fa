"""bench.worker_profile: py-spy's stacks charged to the stages of a frame, scaled to the worker's CPU time."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.worker_profile import OTHER, WAITING, cpu_ms_per_frame, read_raw, stage_of


def frame(function: str, path: str, line: int = 1) -> str:
    return f"{function} ({path}:{line})"


ROOT = frame("_bootstrap", "threading.py")
RUN = frame("run", "/work/main/worker/pipeline.py")


@pytest.mark.parametrize(
    ("leaf", "stage"),
    [
        (frame("decode_image", "/work/main/models/extract/decode.py"), "decode"),
        (frame("ImageFile.load", "/venv/lib/python3.11/site-packages/PIL/ImageFile.py"), "decode"),
        (frame("Session.run", "onnxruntime/capi/onnxruntime_inference_collection.py"), "engine"),
        (frame("similarities", "/work/main/models/answer/gallery.py"), "gallery"),
        (frame("matches", "/work/main/models/answer/gallery.py"), "matches"),
        (frame("best_by_product", "/work/main/models/answer/gallery.py"), "novelty"),
        (frame("predict_proba", "/venv/lib/python3.11/site-packages/sklearn/linear_model/_base.py"), "head"),
        (frame("ReviewStore.add", "/work/main/models/store/review_store.py"), "review"),
        (frame("Client.publish", "/venv/lib/python3.11/site-packages/paho/mqtt/client.py"), "publish"),
        (frame("Condition.wait", "threading.py"), WAITING),
        (frame("helper", "/work/main/worker/pipeline.py"), OTHER),
    ],
)
def test_a_sample_is_charged_to_the_innermost_frame_that_names_a_stage(leaf: str, stage: str) -> None:
    assert stage_of([ROOT, RUN, leaf]) == stage


def test_a_library_frame_inside_a_stage_is_that_stage() -> None:
    inner_numpy = frame("dot", "/venv/lib/python3.11/site-packages/numpy/core/multiarray.py")
    assert stage_of([ROOT, RUN, frame("similarities", "/m/models/answer/gallery.py"), inner_numpy]) == "gallery"


def test_samples_are_scaled_to_the_process_cpu_and_waits_left_out() -> None:
    raw = "\n".join(
        [
            f"{ROOT};{frame('Session.run', 'onnxruntime/capi/x.py')} 60",
            f"{ROOT};{frame('decode_image', '/m/models/extract/decode.py')} 20",
            f"{ROOT};{frame('Condition.wait', 'threading.py')} 500",
            "not a sample line",
        ]
    )
    samples = read_raw(raw)
    assert samples == Counter({"engine": 60, "decode": 20, WAITING: 500})
    per_frame = cpu_ms_per_frame(samples, frames=100, process_cpu_s=0.8)  # 8 CPU-ms a frame in all
    assert per_frame == pytest.approx({"engine": 6.0, "decode": 2.0})
    assert list(per_frame) == ["engine", "decode"]  # the largest first
    assert cpu_ms_per_frame(Counter(), frames=100, process_cpu_s=1.0) == {}
