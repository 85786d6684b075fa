"""`partsight api` as a process beside the real bridge, worker, Mosquitto and Redis: an image posted over HTTP goes
through the same bridge, queue and worker as a device's frame and comes back as the same JSON."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from partsight.testing.harness import Listener, frame_properties, metric, publisher
from partsight.testing.stack import Stack

pytestmark = pytest.mark.integration

# what differs between two answers of the same image: the frame, the device, and the clock
PER_FRAME = {"frame_id", "device", "timings_ms", "captured_at", "received_at", "completed_at"}


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Stack]:
    stack.start_api(PARTSIGHT_API_TIMEOUT_S="60")
    yield stack


def post(port: int, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_an_image_posted_over_http_gets_the_mqtt_result(api: Stack, camera_photos: list[tuple[Path, str]]) -> None:
    path, _ = camera_photos[0]
    image = path.read_bytes()
    device = "http-cam"
    answers = f"{api.topics.prefix}/api/+/answers"
    with (
        Listener("127.0.0.1", api.mqtt_port, [answers]) as api_answers,
        api.listen(device) as device_answers,
    ):
        status, body, _ = post(api.api_port, f"/v1/recognize?device={device}", image, "image/jpeg")
        assert status == 200, body
        # the body is the very message the worker published on the API's response topic
        topic, published, _ = api_answers.wait_frame(body["frame_id"], timeout=10)
        assert topic == f"{api.topics.prefix}/api/{api.env['PARTSIGHT_API_ID']}/answers"
        assert body == published
        # and a device sending the same image over MQTT gets the same answer
        client = publisher("127.0.0.1", api.mqtt_port)
        try:
            frame_id = uuid.uuid4().hex
            client.publish(api.topics.frame(device), image, qos=1, properties=frame_properties(frame_id))
            _, result, _ = device_answers.wait_frame(frame_id, timeout=60)
        finally:
            client.loop_stop()
            client.disconnect()
    assert set(body) == set(result)
    assert {k: v for k, v in body.items() if k not in PER_FRAME} == {
        k: v for k, v in result.items() if k not in PER_FRAME
    }
    assert body["device"] == device and body["status"] in ("recognized", "unknown")
    assert body["model"]["name"] == "fashion-test" and len(body["top_k"]) == 5
    # the API's frame went through the bridge like any other
    assert (metric(api.bridge_port, "partsight_bridge_frames_enqueued_total") or 0) >= 2


def test_an_undecodable_image_is_422_with_the_workers_code(api: Stack) -> None:
    status, body, _ = post(
        api.api_port, "/v1/recognize?device=http-cam", b"\xff\xd8\xff\xe0" + b"\x13" * 300, "image/jpeg"
    )
    assert status == 422, body
    assert body["error"]["code"] == "image_undecodable" and body["device"] == "http-cam"
    assert body["schema"] == "partsight/1" and body["frame_id"]


def test_refusals_made_by_the_api_itself(api: Stack) -> None:
    status, body, _ = post(api.api_port, "/v1/recognize?device=http-cam", b"GIF89a....", "image/gif")
    assert (status, body["error"]["code"]) == (415, "unsupported_format")
    # a body announced over the limit is refused from its headers: the server answers before a byte is sent
    connection = http.client.HTTPConnection("127.0.0.1", api.api_port, timeout=10)
    try:
        connection.putrequest("POST", "/v1/recognize?device=http-cam")
        connection.putheader("Content-Type", "image/jpeg")
        connection.putheader("Content-Length", str(int(api.env["PARTSIGHT_MAX_PAYLOAD_BYTES"]) + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and json.loads(response.read())["error"]["code"] == "payload_too_large"
    finally:
        connection.close()
    assert api.api is not None and "listening on 127.0.0.1 only" in api.api.log()


def announced(port: int, path: str, length: int) -> tuple[int, dict[str, Any]]:
    """POST headers announcing `length` bytes of JPEG, and the answer the server gives before any byte is sent."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "image/jpeg")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


HTTP_STATUS = {
    "result": 200,
    "payload_too_large": 413,
    "unsupported_format": 415,
    "image_undecodable": 422,
    "image_too_large": 422,
}


def test_every_bad_image_of_the_corpus_gets_over_http_what_it_gets_over_mqtt(api: Stack) -> None:
    """Bombs, truncations, wrong formats, oversize bodies: the corpus's image cases (not its MQTT envelopes,
    properties or topics) posted as a phone would post them, each answered with the code MQTT gives it."""
    from partsight.testing.bad_inputs import RESULT, cases

    posted = [
        case
        for case in cases()
        if case.topic_suffix == "frame"
        and not case.user_properties
        and case.device is None
        and not case.name.startswith("envelope")
    ]
    assert len(posted) >= 25
    for case in posted:
        if case.expect == "payload_too_large":  # answered from its headers: the body is never read, so not sent
            status, body = announced(api.api_port, "/v1/recognize?device=http-corpus", len(case.payload))
            assert (status, body["error"]["code"]) == (413, "payload_too_large"), (case.name, body)
            continue
        status, body, _ = post(api.api_port, "/v1/recognize?device=http-corpus", case.payload, "image/jpeg")
        if case.expect == RESULT:
            assert status == 200 and body["status"] in ("recognized", "unknown"), (case.name, body)
        else:
            assert (status, body["error"]["code"]) == (HTTP_STATUS[case.expect], case.expect), (case.name, body)
            assert body["error"]["message"], case.name
    good = next(case for case in posted if case.name == "baseline-jpeg").payload
    status, body, _ = post(api.api_port, "/v1/recognize?device=http-corpus", good, "image/jpeg")
    assert status == 200, body  # and the next good one is answered
    assert api.worker is not None and api.worker.alive and api.bridge is not None and api.bridge.alive
