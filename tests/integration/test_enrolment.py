"""Enrolment through the real parts: a request and its `partsight.enrol` task, run by a real worker beside the
frames it answers; the new version is current, every worker serves it at once, the next frames name the new
product, and no frame is lost meanwhile. An MQTT device enrols too and hears the outcome."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import redis as redis_lib

from broker.contract import ENROL_QUEUE, ENROL_TASK, MODEL_CHANNEL
from models.store.enrolment_requests import EnrolmentStore
from partsight.testing.harness import frame_properties, metric, partsight, publisher, scrape, wait_for
from partsight.testing.servers import free_port
from partsight.testing.stack import ready

from ..unit.test_enrolment import DIGIT_RECORD, digit_photos
from .test_faults import every_frame_answered_once, steady_camera

pytestmark = pytest.mark.integration


def served_versions(port: int) -> set[str]:
    return {dict(labels)["version"] for (name, labels) in scrape(port) if name == "partsight_model_info"}


def finished(requests: EnrolmentStore, enrolment: str) -> dict | None:  # type: ignore[type-arg]
    status = requests.get(enrolment)
    return status if status["state"] in ("done", "failed") else None


def consolidation_of(store: Path, version: str) -> str | None:
    """The current version when it consolidates `version` (its refinements folded into refitted nodes)."""
    current = (store / "current").resolve()
    manifest = json.loads((current / "manifest.json").read_text())
    done = manifest.get("consolidation", {}).get("consolidates") == version and "refinements" not in manifest["head"]
    return current.name if done else None


def send_enrolment(stack, enrolment: str) -> None:  # type: ignore[no-untyped-def]
    """What the API does after storing the request: the task on its own queue."""
    from broker.dispatch import producer_app

    app = producer_app("test-enrol", stack.env["PARTSIGHT_REDIS_URL"], int(stack.env["PARTSIGHT_VISIBILITY_TIMEOUT_S"]))
    app.send_task(ENROL_TASK, kwargs={"enrolment": enrolment}, queue=ENROL_QUEUE)


def test_an_enrolment_reaches_every_worker_at_once_while_frames_stream(
    own_stack, model_store, camera_photos, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(model_store, store, symlinks=True, ignore=shutil.ignore_patterns(".feature-cache"))
    stack = own_stack
    stack.env.update(PARTSIGHT_MODEL_DIR=str(store), PARTSIGHT_MODEL_RELOAD_S="600")  # the poll cannot explain it
    stack.env.update(PARTSIGHT_CONSOLIDATE_AFTER_S="5")
    stack.start()
    second_port = free_port()
    second = partsight(
        "worker",
        {
            **stack.env,
            "PARTSIGHT_WORKER_ID": "second",
            "PARTSIGHT_WORKER_METRICS_PORT": str(second_port),
            "PARTSIGHT_WORKER_ENROL": "0",
        },
        stack.logs / "worker-second.log",
    ).start()
    try:
        wait_for(lambda: ready(second_port), 90, "second worker ready")
        before = (store / "current").resolve().name
        channel = redis_lib.Redis.from_url(stack.env["PARTSIGHT_REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
        channel.subscribe(MODEL_CHANNEL)
        device = "enrol-cam"
        images = [path.read_bytes() for path, _ in camera_photos]
        frame_ids = [f"e-{i:03d}" for i in range(80)]
        requests = EnrolmentStore(store)
        with stack.listen(device) as listener:
            camera = steady_camera(stack, device, images, frame_ids, interval_s=0.1)
            wait_for(lambda: len(listener.messages) >= 5, 30, "first answers")
            enrolment = requests.create("gauge-3", digit_photos(3, 20), record=DIGIT_RECORD, source="test")
            asked = time.time()
            send_enrolment(stack, enrolment)
            status = wait_for(lambda: finished(requests, enrolment), 60, "the enrolment")
            assert status["state"] == "done", status
            version = status["version"]
            assert (store / "current").resolve().name == version != before
            wait_for(lambda: served_versions(stack.worker_port) == {version}, 10, "the enrolling worker serves it")
            wait_for(lambda: served_versions(second_port) == {version}, 10, "the other worker serves it")
            reloaded = time.time() - asked
            message = wait_for(lambda: channel.get_message(timeout=0.1), 5, "the announcement")
            assert json.loads(message["data"]) == {"version": version, "reason": "enrolment"}
            camera.join(60)
            every_frame_answered_once(stack, listener, frame_ids)
            probe = publisher("127.0.0.1", stack.mqtt_port)
            for index, (_, data) in enumerate(digit_photos(3, 5, offset=50)):
                probe.publish(stack.topics.frame(device), data, qos=1, properties=frame_properties(f"new-{index}"))
            answers = [listener.wait_frame(f"new-{index}")[1] for index in range(5)]
            # then the consolidation, in the background: every node refitted with the new product, a version
            consolidated = wait_for(lambda: consolidation_of(store, version), 180, "the consolidation")
            wait_for(lambda: served_versions(stack.worker_port) == {consolidated}, 30, "the enrolling worker serves it")
            wait_for(lambda: served_versions(second_port) == {consolidated}, 10, "the other worker serves it")
            for index, (_, data) in enumerate(digit_photos(3, 5, offset=50)):
                probe.publish(stack.topics.frame(device), data, qos=1, properties=frame_properties(f"after-{index}"))
            after = [listener.wait_frame(f"after-{index}")[1] for index in range(5)]
            probe.disconnect()
        assert reloaded < 30, f"{reloaded:.1f} s from the request to every worker serving the new version"
        quick = [a for a in answers if a["model"]["version"] == version]
        assert all(a["top_k"][0]["product"] == "gauge-3" and a["product"] in ("gauge-3", None) for a in quick), quick
        assert sum(a["product"] == "gauge-3" for a in after) >= 4, after
        assert all(a["model"]["version"] == consolidated for a in after)
        # counted when its child process exits, a moment after the version it wrote is served
        wait_for(
            lambda: metric(stack.worker_port, "partsight_worker_consolidations_total", outcome="done") == 1,
            30,
            "the consolidation counted",
        )
        assert metric(stack.worker_port, "partsight_worker_enrolments_total", outcome="done") == 1
        assert metric(stack.worker_port, "partsight_worker_enrolment_seconds_count") == 1
        assert metric(second_port, "partsight_worker_enrolments_total", outcome="done") == 0  # frames only
        # a failed enrolment leaves current where it was
        broken = requests.create("gauge-4", [("x.jpg", b"\xff\xd8\xff not really")], record=DIGIT_RECORD)
        send_enrolment(stack, broken)
        failed = wait_for(lambda: finished(requests, broken), 60, "the failed enrolment")
        assert failed["state"] == "failed" and failed["error"]["code"] == "image_undecodable", failed
        assert (store / "current").resolve().name == consolidated
        assert metric(stack.worker_port, "partsight_worker_enrolments_total", outcome="failed") == 1
    finally:
        second.stop()


def enrol_properties(frame_id: str, user: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    properties = frame_properties(frame_id)
    properties.UserProperty = [("frame_id", frame_id), *user]
    return properties


def started_on_a_copy(stack, model_store: Path, tmp_path: Path, **env: str) -> Path:  # type: ignore[no-untyped-def]
    """`stack` started on a copy of `model_store` (its enrolments write there), with `env` settings; the copy's
    folder."""
    store = tmp_path / "store"
    shutil.copytree(model_store, store, symlinks=True, ignore=shutil.ignore_patterns(".feature-cache"))
    stack.env.update(PARTSIGHT_MODEL_DIR=str(store), **env)
    stack.start()
    return store


def versions_in(store: Path) -> list[str]:
    """The versions a store holds (its folders with a manifest; `current` and `previous` are links)."""
    return [p.name for p in store.iterdir() if not p.is_symlink() and (p / "manifest.json").is_file()]


def test_a_device_enrols_over_mqtt_and_hears_the_outcome(own_stack, model_store, tmp_path: Path) -> None:
    stack, store = own_stack, started_on_a_copy(own_stack, model_store, tmp_path)
    device = "phone-7"
    photos = digit_photos(7, 3)
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        catalog = json.dumps({"name": "Gauge 7", "category": "gauges"})
        for index, (_, data) in enumerate(photos):
            extra = [("product", "gauge-7"), ("catalog", catalog)] if index == 0 else [("product", "gauge-7")]
            properties = enrol_properties(f"enrol-{index}", extra)
            client.publish(f"{stack.topics.prefix}/{device}/enrol", data, qos=1, properties=properties)
            topic, answer, _ = listener.wait_frame(f"enrol-{index}", timeout=60)
            assert topic.endswith("/result") and answer["type"] == "enrolment", answer
            assert answer["state"] == "done" and answer["product"] == "gauge-7"
        client.publish(
            f"{stack.topics.prefix}/{device}/enrol",
            photos[0][1],
            qos=1,
            properties=enrol_properties("enrol-unknown", [("product", "gauge-8")]),
        )
        topic, answer, _ = listener.wait_frame("enrol-unknown", timeout=60)  # the outcome, on the result topic
        assert topic.endswith("/result") and answer["state"] == "failed", answer
        assert answer["error"]["code"] == "unknown_product", answer
        wait_for(lambda: len(listener.for_frame("enrol-unknown")) == 2, 10, "the failure's copy on the error topic")
        topic, copy, _ = listener.for_frame("enrol-unknown")[1]
        assert topic.endswith("/error") and copy["error"]["code"] == "unknown_product", copy
        client.disconnect()
    versions = versions_in(store)
    assert len(versions) == 1 + 3  # the trained one and one per photo


def test_a_burst_of_photos_over_mqtt_makes_one_version_a_product(own_stack, model_store, tmp_path: Path) -> None:
    """Two products' photos sent one message each, without waiting: every message answered, one version each."""
    stack, store = own_stack, started_on_a_copy(own_stack, model_store, tmp_path)
    device = "phone-9"
    sent = []
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        for digit in (2, 5):
            catalog = json.dumps({"name": f"Gauge {digit}", "category": "gauges"})
            for index, (_, data) in enumerate(digit_photos(digit, 5)):
                extra = [("product", f"gauge-{digit}"), *([("catalog", catalog)] if index == 0 else [])]
                frame_id = f"burst-{digit}-{index}"
                client.publish(
                    f"{stack.topics.prefix}/{device}/enrol", data, qos=1, properties=enrol_properties(frame_id, extra)
                )
                sent.append(frame_id)
        answers = {frame_id: listener.wait_frame(frame_id, timeout=120)[1] for frame_id in sent}
        client.disconnect()
    assert all(answer["state"] == "done" for answer in answers.values()), answers
    made = {answer["product"]: set() for answer in answers.values()}
    for answer in answers.values():
        made[answer["product"]].add(answer["version"])
    assert set(made) == {"gauge-2", "gauge-5"}
    assert len(made["gauge-2"]) == len(made["gauge-5"]) == 1, made  # one version a product, not one a photo
    versions = versions_in(store)
    assert len(versions) == 1 + 2


def test_a_worker_killed_in_the_middle_of_an_enrolment_leaves_its_device_one_outcome(
    own_stack, model_store, tmp_path: Path
) -> None:
    """The worker takes the device's request and is killed before it can record a version (the test holds the
    store's writer lock): its task comes back to the next worker, which carries it out and answers the device,
    once. (A worker killed after recording the version and before answering is the same task coming back to a
    request found done and not yet answered: tests/unit/test_enrolment.py.)"""
    from models.store.versions import store_lock

    # no photo window: the task goes straight for the store's lock
    stack, store = own_stack, started_on_a_copy(own_stack, model_store, tmp_path, PARTSIGHT_ENROL_WINDOW_S="0")
    device = "phone-killed"
    before = set(versions_in(store))
    requests = EnrolmentStore(store)
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        with store_lock(store, timeout_s=10):  # the worker's enrolment cannot write while the test holds it
            properties = enrol_properties("killed-0", [("product", "gauge-4"), ("catalog", json.dumps(DIGIT_RECORD))])
            client.publish(
                f"{stack.topics.prefix}/{device}/enrol", digit_photos(4, 1)[0][1], qos=1, properties=properties
            )
            wait_for(requests.list, 30, "the worker storing the device's request")
            time.sleep(1.5)  # it waits for the lock (1 s), or to try again after it
            assert stack.worker is not None
            stack.worker.kill()
            assert listener.for_frame("killed-0") == []  # nothing was carried out: nothing told
        stack.start_worker()
        topic, answer, _ = listener.wait_frame("killed-0", timeout=120)
        assert topic.endswith("/result") and answer["type"] == "enrolment", answer
        assert (answer["state"], answer["product"]) == ("done", "gauge-4"), answer
        stack.wait_settled()  # nothing left that could answer again
        assert len(listener.for_frame("killed-0")) == 1, listener.for_frame("killed-0")
        client.disconnect()
    (request,) = requests.list()
    assert request["state"] == "done" and requests.is_answered(request["id"]), request
    made = set(versions_in(store)) - before
    assert made == {answer["version"]}, made


def test_a_workers_enrolment_waits_for_a_writer_on_another_machine(own_stack, model_store, tmp_path: Path) -> None:
    """The store's lock in Redis, as a writer on another node holds it (no flock here: that node's flock is not
    ours): the worker's enrolment makes no version until it is released, then makes its one version."""
    from models.store.writer_lock import KEY_PREFIX, store_id

    stack, store = own_stack, started_on_a_copy(own_stack, model_store, tmp_path, PARTSIGHT_ENROL_WINDOW_S="0")
    device = "phone-waits"
    before = set(versions_in(store))
    redis = redis_lib.Redis.from_url(stack.env["PARTSIGHT_REDIS_URL"], socket_timeout=5)
    key = KEY_PREFIX + store_id(store)
    redis.set(key, "a writer on another node", px=120_000)
    try:
        with stack.listen(device) as listener:
            client = publisher("127.0.0.1", stack.mqtt_port)
            properties = enrol_properties("waits-0", [("product", "gauge-6"), ("catalog", json.dumps(DIGIT_RECORD))])
            client.publish(
                f"{stack.topics.prefix}/{device}/enrol", digit_photos(6, 1)[0][1], qos=1, properties=properties
            )
            wait_for(EnrolmentStore(store).list, 30, "the worker storing the device's request")
            time.sleep(3)  # long enough to have written a version, were it not waiting
            assert set(versions_in(store)) == before and listener.for_frame("waits-0") == []
            redis.delete(key)
            topic, answer, _ = listener.wait_frame("waits-0", timeout=120)
            client.disconnect()
    finally:
        redis.delete(key)
    assert topic.endswith("/result") and (answer["state"], answer["product"]) == ("done", "gauge-6"), answer
    assert set(versions_in(store)) - before == {answer["version"]}
