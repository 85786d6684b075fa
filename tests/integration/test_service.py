"""The service end to end: real Mosquitto, Redis, bridge and Celery worker processes, plain paho devices."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import uuid
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from PIL import Image

from broker.contract import SCHEMA_VERSION
from partsight.testing.harness import Listener, frame_properties, metric, publisher, wait_for

pytestmark = pytest.mark.integration


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expected_decisions(recognizer, photos: list[tuple[Path, str]]):  # type: ignore[no-untyped-def]
    from models.extract.decode import decode_image

    images = np.stack([decode_image(path.read_bytes(), size=recognizer.input_size) for path, _ in photos])
    return recognizer.classify(recognizer.features(images))


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose data is tiny: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def test_real_photos_come_back_as_the_right_product(stack, recognizer, camera_photos) -> None:
    decisions = expected_decisions(recognizer, camera_photos)
    correct = [(p, d) for p, d in zip(camera_photos, decisions, strict=True) if d.product == p[1]]
    # the model is real: most held-out photos are recognised as their true product in-process
    assert len(correct) >= len(camera_photos) * 0.5, f"only {len(correct)} of {len(camera_photos)} correct"
    device = "line-3-cam"
    with Listener("127.0.0.1", stack.mqtt_port, [f"{stack.topics.prefix}/{device}/#"]) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        sent = {}
        for (path, product), decision in correct[:6]:
            frame_id = uuid.uuid4().hex
            sent[frame_id] = (product, decision)
            client.publish(stack.topics.frame(device), path.read_bytes(), qos=1, properties=frame_properties(frame_id))
        for frame_id, (product, decision) in sent.items():
            topic, result, _ = listener.wait_frame(frame_id)
            assert topic == stack.topics.result(device)
            assert result["schema"] == SCHEMA_VERSION
            assert result["device"] == device
            assert result["status"] == decision.status
            assert result["product"] == product
            assert result["category"] == decision.category
            assert result["confidence"] == pytest.approx(decision.confidence, abs=1e-3)
            assert result["catalog"]["product"] == product and result["catalog"]["sku"].startswith("FM-")
            assert result["top_k"][0]["product"] == product and len(result["top_k"]) == 5
            # the version's gallery and novelty score answer over MQTT as they do in-process
            assert decision.novelty is not None and result["novelty"] == pytest.approx(decision.novelty, abs=1e-3)
            assert [m["photo"] for m in result["matches"]] == [m["photo"] for m in decision.matches]
            assert len(result["matches"]) == 3 and result["matches"][0]["photo"].endswith(".png")
            similarities = [m["similarity"] for m in result["matches"]]
            assert similarities == sorted(similarities, reverse=True) and 0 < similarities[0] <= 1.0001
            assert result["model"] == {"name": "fashion-test", "version": recognizer.bundle.version}
            assert set(result["timings_ms"]) == {"queue", "decode", "features", "classify", "total"}
            assert result["timings_ms"]["total"] >= result["timings_ms"]["features"] > 0
            assert parse_time(result["completed_at"]) >= parse_time(result["received_at"])
        client.disconnect()
    assert metric(stack.bridge_port, "partsight_bridge_frames_enqueued_total") >= len(sent)
    assert metric(stack.worker_port, "partsight_worker_batch_size_frames_count") >= 1


def test_frame_without_id_gets_one(stack, camera_photos) -> None:
    device = "no-id-cam"
    with Listener("127.0.0.1", stack.mqtt_port, [stack.topics.result(device)]) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        client.publish(stack.topics.frame(device), camera_photos[0][0].read_bytes(), qos=1)

        _, result, _ = wait_for(lambda: (listener.messages or [None])[0], 30, "a result")
        client.disconnect()
    assert isinstance(result["frame_id"], str) and len(result["frame_id"]) == 32


def _bad_inputs(good_jpeg: bytes) -> list[tuple[str, bytes, str, str]]:
    """(name, payload, expected code, where the code is counted: bridge or worker)."""
    gif = b"GIF89a" + b"\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 20
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="JPEG")
    return [
        ("oversized", b"\xff\xd8\xff" + b"\x00" * (2 * 1024 * 1024 + 1), "payload_too_large", "bridge"),
        ("gif", gif, "unsupported_format", "worker"),
        ("html", b"<html><body>not an image</body></html>", "unsupported_format", "worker"),
        ("truncated-jpeg", good_jpeg[: len(good_jpeg) // 3], "image_undecodable", "worker"),
        ("jpeg-garbage", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "image_undecodable", "worker"),
        ("png-50000x50000", png_header_claiming(50_000, 50_000), "image_too_large", "worker"),
        ("envelope-not-json", b"{not json", "bad_envelope", "bridge"),
        ("envelope-bad-base64", json.dumps({"frame_id": "x1", "image_b64": "@@@"}).encode(), "bad_envelope", "bridge"),
        ("envelope-wrong-type", json.dumps({"image_b64": 5}).encode(), "bad_envelope", "bridge"),
    ]


def test_bad_inputs_get_their_error_code_and_the_next_frame_is_answered(stack, camera_photos) -> None:
    device = "bad-input-cam"
    good = camera_photos[0][0].read_bytes()
    cases = _bad_inputs(good)
    before = {
        code: metric(stack.bridge_port, "partsight_bridge_frames_rejected_total", reason=code) or 0
        for _, _, code, _ in cases
    }
    before_worker = {
        code: metric(stack.worker_port, "partsight_worker_errors_total", code=code) or 0 for _, _, code, _ in cases
    }
    with Listener("127.0.0.1", stack.mqtt_port, [f"{stack.topics.prefix}/{device}/#"]) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        for name, payload, code, _ in cases:
            frame_id = f"bad-{name}"
            client.publish(stack.topics.frame(device), payload, qos=1, properties=frame_properties(frame_id))
            topic, message, _ = listener.wait_frame(frame_id)
            assert topic == stack.topics.error(device), name
            assert message["error"]["code"] == code, (name, message)
            assert message["error"]["message"], name
            assert message["device"] == device and message["schema"] == SCHEMA_VERSION
            good_id = f"good-after-{name}"
            client.publish(stack.topics.frame(device), good, qos=1, properties=frame_properties(good_id))
            topic, message, _ = listener.wait_frame(good_id)
            assert topic == stack.topics.result(device), (name, message)
        client.disconnect()
    for _, _, code, where in cases:
        count = sum(1 for _, _, c, w in cases if c == code and w == where)
        if where == "bridge":
            now = metric(stack.bridge_port, "partsight_bridge_frames_rejected_total", reason=code)
            assert now == before[code] + count, code
        else:
            now = metric(stack.worker_port, "partsight_worker_errors_total", code=code)
            assert now == before_worker[code] + count, code
    assert stack.worker.alive and stack.bridge.alive


def test_mqtt5_response_topic_and_correlation_data_are_honoured(stack, camera_photos) -> None:
    reply_topic = f"replies/{uuid.uuid4().hex}"
    with Listener("127.0.0.1", stack.mqtt_port, [reply_topic]) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        frame_id = "rpc-1"
        props = frame_properties(frame_id, ResponseTopic=reply_topic, CorrelationData=b"\x00corr-42\xff")
        client.publish(stack.topics.frame("rpc-cam"), camera_photos[1][0].read_bytes(), qos=1, properties=props)
        topic, result, properties = listener.wait_frame(frame_id)
        client.disconnect()
    assert topic == reply_topic
    assert properties.CorrelationData == b"\x00corr-42\xff"
    assert result["status"] in ("recognized", "unknown") and result["device"] == "rpc-cam"


def test_mqtt311_device_sends_a_json_envelope(stack, camera_photos) -> None:
    device = "legacy-cam"
    with Listener("127.0.0.1", stack.mqtt_port, [stack.topics.result(device)]) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port, protocol=paho.MQTTv311)
        envelope = {
            "frame_id": "legacy-1",
            "captured_at": "2026-11-23T01:00:00Z",
            "image_b64": base64.b64encode(camera_photos[2][0].read_bytes()).decode(),
        }
        client.publish(stack.topics.frame(device), json.dumps(envelope), qos=1)
        _, result, _ = listener.wait_frame("legacy-1")
        client.disconnect()
    assert result["captured_at"] == "2026-11-23T01:00:00Z"
    assert result["product"] is None or result["catalog"]["product"] == result["product"]


def test_both_processes_report_alive_and_ready(stack) -> None:
    from partsight.testing.harness import readyz

    assert readyz(stack.bridge_port) == (
        200,
        {"ready": True, "checks": {"mqtt": True, "redis": True, "accepting": True}},
    )
    status, body = readyz(stack.worker_port)
    assert status == 200 and body["checks"] == {"model": True, "mqtt": True, "redis": True, "accepting": True}


def test_the_cpu_worker_serves_the_exported_graph_on_onnx_runtime_without_torch(stack) -> None:
    from partsight.testing.harness import scrape

    info = {
        labels: value for (name, labels), value in scrape(stack.worker_port).items() if name == "partsight_model_info"
    }
    assert len(info) == 1
    labels = dict(next(iter(info)))
    assert (labels["engine"], labels["device"], labels["backbone"]) == ("onnxruntime", "cpu", "efficientnet_lite0")
    assert stack.worker.process is not None
    maps = Path(f"/proc/{stack.worker.process.pid}/maps").read_text()
    assert "onnxruntime" in maps and "libtorch" not in maps  # torch was never imported: a smaller, faster worker


def test_status_topics_are_retained_online(stack) -> None:
    with Listener("127.0.0.1", stack.mqtt_port, [f"{stack.topics.prefix}/status/#"]) as listener:
        wait_for(lambda: len(listener.messages) >= 2, 10, "retained status messages")
    topics = {topic: doc for topic, doc, _ in listener.messages}
    assert topics[stack.topics.status("bridge", stack.env["PARTSIGHT_BRIDGE_ID"])] == {"raw": b"online"}
    assert any("/status/worker/" in t and d == {"raw": b"online"} for t, d in topics.items())


def test_duplicate_deliveries_of_a_frame_are_answered_once(stack, camera_photos) -> None:
    image = camera_photos[3][0].read_bytes()
    with Listener("127.0.0.1", stack.mqtt_port, [f"{stack.topics.prefix}/+/result"]) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        for _ in range(3):  # a device retrying, or a QoS 1 redelivery: same frame id each time
            client.publish(stack.topics.frame("dup-cam-a"), image, qos=1, properties=frame_properties("same-id"))
        # the same frame id from another device is another frame
        client.publish(stack.topics.frame("dup-cam-b"), image, qos=1, properties=frame_properties("same-id"))
        client.publish(stack.topics.frame("dup-cam-a"), image, qos=1, properties=frame_properties("marker"))
        listener.wait_frame("marker")

        wait_for(lambda: len(listener.for_frame("same-id")) >= 2, 30, "answers for both devices")
        time.sleep(1.0)
        client.disconnect()
        # deliveries that met the first one's claim come back a little later and are skipped then
        wait_for(
            lambda: metric(stack.worker_port, "partsight_worker_duplicate_deliveries_total") >= 2,
            20,
            "the duplicates to be skipped",
        )
    devices = sorted(doc["device"] for _, doc, _ in listener.for_frame("same-id"))
    assert devices == ["dup-cam-a", "dup-cam-b"]


def test_the_camera_command_publishes_a_folder_and_reports_latency(stack, camera_photos) -> None:
    import subprocess
    import sys

    from partsight.testing.harness import ROOT

    folder = camera_photos[0][0].parent
    argv = [
        sys.executable,
        "-m",
        "partsight.cli",
        "camera",
        "--images",
        str(folder),
        "--device",
        "cli-cam",
        "--fps",
        "20",
        "--count",
        "12",
    ]
    out = subprocess.run(argv, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "frames sent 12, answered 12" in out.stdout
    assert "latency ms: p50" in out.stdout and "p99" in out.stdout
    answer_lines = [line for line in out.stdout.splitlines() if line.endswith(" ms") and "latency" not in line]
    assert len(answer_lines) == 12  # one printed line per answer
