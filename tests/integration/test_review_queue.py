"""The review queue end to end: real photos through the bridge and a worker land in the review store with the exact
bytes the device sent and the answer it got, and the worker counts them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from models.store.review_dir import DirectoryReviewStore
from models.store.review_items import ALL
from partsight.testing.harness import metric, publisher, wait_for
from partsight.testing.servers import ServerProcess
from partsight.testing.stack import make_stack

pytestmark = pytest.mark.integration


def test_answered_frames_are_kept_for_review_with_their_image_and_answer(
    mqtt_server: ServerProcess,
    redis: ServerProcess,
    model_store: Path,
    camera_photos: list[tuple[Path, str]],
    tmp_path: Path,
) -> None:
    review = tmp_path / "review"
    # a margin above 1 keeps every recognised frame too, so all three are eligible whatever the model says
    stack = make_stack(
        mqtt_server,
        redis,
        model_store,
        tmp_path / "logs",
        PARTSIGHT_REVIEW_STORE=str(review),
        PARTSIGHT_REVIEW_MARGIN="1.01",
    )
    try:
        stack.start()
        device = "review-cam"
        photos = [path.read_bytes() for path, _ in camera_photos[:3]]
        frame_ids = [uuid.uuid4().hex for _ in photos]
        with stack.listen(device) as listener:
            client = publisher("127.0.0.1", stack.mqtt_port)
            try:
                stack.send(client, device, frame_ids, photos)
                results = {frame_id: listener.wait_frame(frame_id)[1] for frame_id in frame_ids}
            finally:
                client.loop_stop()
                client.disconnect()
        assert all(result["status"] in ("recognized", "unknown") for result in results.values()), results
        store = DirectoryReviewStore(review, max_items=100, max_bytes=1 << 30, max_age_s=3600)  # read as the API will
        wait_for(lambda: len(store.list(status=ALL)) == 3, 10, "three review items")
        items = {item["frame_id"]: item for item in store.list()}
        assert set(items) == set(frame_ids)
        for frame_id, image in zip(frame_ids, photos, strict=True):
            item, result = items[frame_id], results[frame_id]
            assert (item["device"], item["status"], item["received_at"]) == (device, "open", result["received_at"])
            assert item["answer"] == result  # the result JSON exactly as the device got it
            assert (item["answer"]["status"], item["answer"]["product"]) == (result["status"], result["product"])
            assert store.image(item["id"]) == (image, "image/jpeg")  # the very bytes the camera sent
        wait_for(lambda: metric(stack.worker_port, "partsight_worker_review_kept_total") == 3, 10, "kept_total 3")
        assert metric(stack.worker_port, "partsight_worker_review_items") == 3
        assert metric(stack.worker_port, "partsight_worker_review_bytes") == sum(map(len, photos))
        assert metric(stack.worker_port, "partsight_worker_review_dropped_total", reason="busy") == 0
    finally:
        stack.stop()
