"""The review queue in a real S3-compatible server (moto's, in server mode, over HTTP on loopback): items, images,
listing newest first, labels and dismissals, bounds by count, bytes and age with their reasons, a restarted store
seeing the same items, ids that are not ids, the worker's ReviewSink writing into it, the API serving it, and a
worker refusing a missing bucket or refused credentials at start."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from broker.contract import FrameRequest
from models.errors import ReviewError, UnknownItem
from models.store.review_dir import DirectoryReviewStore
from models.store.review_items import (
    ALL,
    DISMISSED,
    EXPIRED,
    ITEM_ID,
    LABELLED,
    OPEN,
    OVER_BYTES,
    OVER_COUNT,
    TOO_LARGE,
)
from models.store.review_location import ReviewSettings
from models.store.review_s3 import S3Location, S3ReviewStore, connect
from models.store.review_store import RESCAN_S, Added, ReviewStore
from partsight.embedded import free_port, wait_port
from worker.metrics import WorkerMetrics
from worker.review_sink import ReviewSink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "partsight-review"
ACCESS_KEY, SECRET_KEY = "partsight", "moto-secret-key"
DAY = 86400.0
JPEG = b"\xff\xd8\xff\xe0-a-jpeg"


@dataclass
class S3Server:
    endpoint: str  # 127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: Path


def moto_binary() -> str | None:
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.is_file() else shutil.which("moto_server")


def start_moto(folder: Path, **env: str) -> S3Server:
    """moto_server on a free loopback port; pytest.skip (with why) when it cannot start."""
    binary = moto_binary()
    if binary is None:
        pytest.skip("moto_server is not installed: pip install 'moto[server]' (the test extra)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env={**os.environ, **env},
        )
    try:
        wait_port(port, timeout=60)
    except TimeoutError:
        process.kill()
        process.wait()
        tail = log.read_text(errors="replace")[-800:]
        pytest.skip(f"moto_server did not start on 127.0.0.1:{port} within 60 s: {tail}")
    return S3Server(f"127.0.0.1:{port}", process, log)


def stop(server: S3Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the module, with the review bucket made through the minio client."""
    from minio import Minio

    server = start_moto(tmp_path_factory.mktemp("moto"))
    Minio(server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False).make_bucket(BUCKET)
    yield server
    stop(server)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def where(s3: S3Server) -> S3Location:
    """A prefix of its own for each test, so tests never see each other's items."""
    return S3Location(
        bucket=BUCKET,
        prefix=f"review-{secrets.token_hex(4)}/queue",
        endpoint=s3.endpoint,
        secure=False,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
    )


def make(where: S3Location, clock: Clock | None = None, **bounds: Any) -> S3ReviewStore:
    limits = {"max_items": 100, "max_bytes": 1 << 20, "max_age_s": 7 * DAY, **bounds}
    return S3ReviewStore(where, clock=clock or Clock(), **limits)


def answer(frame_id: str, status: str = "unknown") -> dict[str, Any]:
    return {"schema": "partsight/1", "frame_id": frame_id, "device": "cam", "status": status, "top_k": []}


def keep(store: ReviewStore, frame_id: str, image: bytes = JPEG) -> Added:
    return store.add(
        image,
        content_type="image/jpeg",
        device="cam",
        frame_id=frame_id,
        received_at="2027-01-15T08:00:00.000Z",
        answer=answer(frame_id),
    )


def frame_ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["frame_id"] for item in items]


def keys(where: S3Location) -> list[str]:
    from minio import Minio

    client = Minio(where.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    prefix = where.key("")
    return sorted(str(o.object_name)[len(prefix) :] for o in client.list_objects(BUCKET, prefix=prefix, recursive=True))


def put(where: S3Location, name: str, data: bytes) -> None:
    from minio import Minio

    client = Minio(where.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    client.put_object(BUCKET, where.key(name), io.BytesIO(data), len(data))


def test_items_are_kept_with_the_directory_stores_document_and_listed_newest_first(
    where: S3Location, tmp_path: Path
) -> None:
    clock = Clock()
    store = make(where, clock)
    store.check_writable()
    ids = []
    for index in range(3):
        clock.now += 1
        added = keep(store, f"f{index}", JPEG + bytes([index]))
        assert added.id is not None and ITEM_ID.match(added.id) and added.evicted == {} and added.refused is None
        assert (added.items, added.bytes) == (index + 1, (index + 1) * (len(JPEG) + 1))
        ids.append(added.id)
    assert frame_ids(store.list()) == ["f2", "f1", "f0"] and frame_ids(store.list(limit=2)) == ["f2", "f1"]
    assert store.image(ids[1]) == (JPEG + b"\x01", "image/jpeg")
    assert store.stats() == (3, 3 * (len(JPEG) + 1))
    assert keys(where) == sorted(f"items/{i}/{leaf}" for i in ids for leaf in ("image", "item.json"))  # no probe left
    # the same frame at the same time makes the same item.json in a directory store, but for the random id part
    directory = DirectoryReviewStore(
        tmp_path / "review", max_items=100, max_bytes=1 << 20, max_age_s=7 * DAY, clock=clock
    )
    clock.now += 1
    on_disk, in_s3 = keep(directory, "same"), keep(store, "same")
    assert on_disk.id is not None and in_s3.id is not None
    assert {**directory.get(on_disk.id), "id": None} == {**store.get(in_s3.id), "id": None}
    assert directory.get(on_disk.id)["kept_at"] == "2027-01-15T08:00:04.000Z"


def test_an_operator_labels_or_dismisses_an_item(where: S3Location) -> None:
    clock = Clock()
    store = make(where, clock)
    made = []
    for n in range(3):
        clock.now += 0.001  # ids sort as their times; within one microsecond, by their random part
        made.append(keep(store, f"f{n}").id)
    first, second, third = made
    assert first and second and third
    clock.now = 1_800_000_060.0
    labelled = store.label(first, "p-bolt-m8")
    assert (labelled["status"], labelled["label"], labelled["labelled_at"]) == (
        LABELLED,
        "p-bolt-m8",
        "2027-01-15T08:01:00.000Z",
    )
    dismissed = store.dismiss(second)
    assert dismissed["status"] == DISMISSED and dismissed["dismissed_at"] == "2027-01-15T08:01:00.000Z"
    assert store.get(first) == labelled  # written, not only returned
    assert frame_ids(store.list()) == ["f2"]
    assert frame_ids(store.list(status=LABELLED)) == ["f0"] and frame_ids(store.list(status=DISMISSED)) == ["f1"]
    assert frame_ids(store.list(status=ALL)) == ["f2", "f1", "f0"]
    for bad in ("", " ", "x" * 129, "bolt\n"):
        with pytest.raises(ReviewError, match="label"):
            store.label(third, bad)
    with pytest.raises(ReviewError, match="status must be one of"):
        store.list(status="closed")
    assert store.get(third)["status"] == OPEN


def test_the_oldest_are_evicted_to_hold_count_and_bytes_and_the_expired_go_first(where: S3Location) -> None:
    clock = Clock()
    store = make(where, clock, max_items=3, max_bytes=250, max_age_s=DAY)
    for index in range(3):
        clock.now += 1
        assert keep(store, f"f{index}", b"x" * 10).evicted == {}
    clock.now += 1
    added = keep(store, "f3", b"x" * 10)
    assert added.evicted == {OVER_COUNT: 1} and (added.items, added.bytes) == (3, 30)
    assert frame_ids(store.list()) == ["f3", "f2", "f1"]
    clock.now += 1
    added = keep(store, "big", b"y" * 235)  # 4 items, 265 bytes: the oldest for the count, the next for the bytes
    assert added.evicted == {OVER_COUNT: 1, OVER_BYTES: 1} and (added.items, added.bytes) == (2, 245)
    assert frame_ids(store.list()) == ["big", "f3"]
    refused = keep(store, "huge", b"z" * 251)
    assert (refused.id, refused.refused, refused.evicted, refused.items) == (None, TOO_LARGE, {}, 2)
    clock.now += DAY + 1  # both are older than a day now
    added = keep(store, "fresh", b"x")
    assert added.evicted == {EXPIRED: 2} and (added.items, added.bytes) == (1, 1)
    assert frame_ids(store.list(status=ALL)) == ["fresh"] and len(keys(where)) == 2


class CountingClient:
    """The SDK client the store would make, counting the listings it sends (each is one or more requests)."""

    def __init__(self, where: S3Location) -> None:
        self._client = connect(where)
        self.listings = 0

    def list_objects(self, *args: Any, **kwargs: Any) -> Any:
        self.listings += 1
        return self._client.list_objects(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_adds_list_the_bucket_only_when_the_view_is_stale_and_a_full_queue_evicts_from_it(where: S3Location) -> None:
    """Issue 19: the S3 store listed its whole prefix on every add (about 20 requests at 10,000 items)."""
    clock, client = Clock(), CountingClient(where)
    store = S3ReviewStore(where, clock=clock, client=client, max_items=5, max_bytes=1 << 20, max_age_s=DAY)
    evicted = []
    for index in range(12):
        clock.now += 0.01
        evicted.append(sum(keep(store, f"f{index}").evicted.values()))
    assert client.listings == 1  # the first add only: then the store's own view, for RESCAN_S
    assert evicted == [0] * 5 + [1] * 7  # at its bound, each add evicts the oldest from that view
    assert len(keys(where)) == 2 * 5  # five items left in the bucket, an image and an item.json each
    clock.now += RESCAN_S + 1
    keep(store, "late")
    assert client.listings == 2  # a stale view is listed again (another worker may have added meanwhile)
    assert frame_ids(store.list()) == ["late", "f11", "f10", "f9", "f8"]


def test_a_restarted_store_and_another_process_see_the_same_items(where: S3Location) -> None:
    clock = Clock()
    store = make(where, clock)
    made = []
    for n in range(3):
        clock.now += 1
        made.append(keep(store, f"f{n}").id)
    store.label(str(made[0]), "p1")
    again = make(where, clock)  # the worker restarted, or another worker, or the API
    assert again.list(status=ALL) == store.list(status=ALL) and again.stats() == store.stats() == (3, 3 * len(JPEG))
    assert again.get(str(made[0]))["label"] == "p1" and again.image(str(made[2]))[0] == JPEG
    small = make(where, clock, max_items=1)  # another process with a tighter bound evicts the others' items
    clock.now += 1
    assert keep(small, "last").evicted == {OVER_COUNT: 3}
    with pytest.raises(UnknownItem):
        store.label(str(made[1]), "p2")  # evicted meanwhile: never brought back by a late label
    assert frame_ids(store.list(status=ALL)) == ["last"] and store.stats()[0] == 1


def test_an_item_evicted_while_it_is_labelled_is_not_brought_back(
    where: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = make(where), make(where)
    item = str(keep(store, "f1").id)
    read = store._read

    def read_then_lose_it(item_id: str) -> dict[str, Any]:
        record = read(item_id)
        assert other._remove(item_id)  # another process evicts it between the read and the write
        return record

    monkeypatch.setattr(store, "_read", read_then_lose_it)
    with pytest.raises(UnknownItem):
        store.label(item, "p1")
    assert keys(where) == [] and other.stats() == (0, 0)  # its item.json, written again, was taken back


@pytest.mark.parametrize(
    "item_id",
    [
        "20270115T080000000000Z-deadbeef",  # an id, of no item
        "../../etc/passwd",
        "..",
        "items/20270115T080000000000Z-deadbeef",
        "20270115T080000000000Z-deadbeef/../x",
        "20270115T080000000000Z-DEADBEEF",
        "",
        "%2e%2e%2fitem.json",
    ],
)
def test_an_unknown_id_or_one_that_is_not_an_id_is_an_unknown_item(where: S3Location, item_id: str) -> None:
    store = make(where)
    real = keep(store, "f1").id
    put(where, "items/20270115T080000000000Z-deadbeef.json", b"{}")  # a stray object: never read as an item
    for call in (store.get, store.image, store.dismiss, lambda i: store.label(i, "p1")):
        with pytest.raises(UnknownItem):
            call(item_id)
    assert frame_ids(store.list()) == ["f1"] and store.get(str(real))["status"] == OPEN


def test_an_image_without_its_item_json_is_invisible_and_swept_when_stale(
    where: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    store = make(where, clock)
    half = "20270115T080000000000Z-0badf00d"
    put(where, f"items/{half}/image", JPEG)  # a writer killed between the image and its item.json
    assert store.list(status=ALL) == [] and store.stats() == (0, 0)
    with pytest.raises(UnknownItem):
        store.image(half)
    keep(store, "f1")
    assert f"items/{half}/image" in keys(where)  # fresh: it may be a write in progress
    monkeypatch.setattr("models.store.review_s3.STALE_STAGING_S", -60.0)  # every orphan counts as an hour old
    clock.now += RESCAN_S  # the store is listed (and swept) when its view is this old, not on every add
    keep(store, "f2")
    assert not any(half in key for key in keys(where)) and store.stats()[0] == 2


def test_the_workers_review_sink_writes_into_the_bucket(where: S3Location) -> None:
    store = make(where)
    metrics = WorkerMetrics(CollectorRegistry())
    sink = ReviewSink(store, metrics, sample=1.0, margin=0.1)
    try:
        unknown = {"frame_id": "f1", "status": "unknown", "top_k": [], "received_at": "2027-01-15T08:00:00.000Z"}
        sure = {
            "frame_id": "f2",
            "status": "recognized",
            "top_k": [{"product": "p1", "score": 0.9}, {"product": "p2", "score": 0.1}],
        }
        sink.offer(FrameRequest(device="cam-7", frame_id="f1", image=JPEG, received_at=1.0), unknown)
        sink.offer(FrameRequest(device="cam-7", frame_id="f2", image=JPEG, received_at=1.0), sure)
    finally:
        sink.close(timeout_s=10)
    (item,) = store.list()
    assert (item["device"], item["frame_id"], item["answer"], item["content_type"]) == (
        "cam-7",
        "f1",
        unknown,
        "image/jpeg",
    )
    assert store.image(item["id"]) == (JPEG, "image/jpeg")
    assert metrics.review_kept._value.get() == 1 and metrics.review_items._value.get() == 1


def test_the_api_serves_the_review_queue_from_the_bucket(where: S3Location, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import ApiSettings
    from broker.settings import MqttSettings
    from tests.unit.apistore import FakeDispatcher, FakeRecognizer, write_version

    store = make(where)
    item = keep(store, "f1").id
    models = tmp_path / "store"
    write_version(models, "v1", {"p1": "tops"})
    settings = ApiSettings(mqtt=MqttSettings("127.0.0.1", 1883), model_dir=models, review=ReviewSettings(where))
    client = TestClient(create_app(settings, recognizer=FakeRecognizer(), dispatcher=FakeDispatcher(), version="0.1.0"))
    listed = client.get("/v1/review")
    assert listed.status_code == 200 and [i["id"] for i in listed.json()["items"]] == [item]
    image = client.get(f"/v1/review/{item}/image")
    assert image.status_code == 200 and image.content == JPEG and image.headers["content-type"] == "image/jpeg"
    assert client.post(f"/v1/review/{item}", json={"dismiss": True}).status_code == 200
    assert store.get(str(item))["status"] == DISMISSED
    assert client.get("/v1/review/..%2F..%2Fetc/image").status_code == 404


def test_a_missing_bucket_or_an_endpoint_that_does_not_answer_is_refused_at_start(where: S3Location) -> None:
    with pytest.raises(ReviewError, match="the bucket 'no-such-bucket' does not exist"):
        make(replace(where, bucket="no-such-bucket"))
    closed = replace(where, endpoint=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(ReviewError, match="cannot reach it"):
        make(closed)
    assert time.monotonic() - started < 15


def test_refused_credentials_are_said_so_at_start(tmp_path: Path) -> None:
    checking = start_moto(tmp_path / "moto-auth", INITIAL_NO_AUTH_ACTION_COUNT="0")  # moto checks keys from now on
    try:
        where = S3Location(BUCKET, "review", checking.endpoint, secure=False, access_key="AKIAUNKNOWN", secret_key="x")
        with pytest.raises(ReviewError) as caught:
            make(where)
        assert "credentials refused (InvalidAccessKeyId" in str(caught.value)
        assert "check PARTSIGHT_REVIEW_S3_ACCESS_KEY and PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE" in str(caught.value)
    finally:
        stop(checking)


def test_the_worker_opens_the_bucket_its_settings_name_and_checks_it_writable(s3: S3Server, tmp_path: Path) -> None:
    from worker.settings import WorkerSettings, open_review_store

    secret = tmp_path / "s3_secret"
    secret.write_text(SECRET_KEY + "\n")
    prefix = f"worker-{secrets.token_hex(4)}"
    settings = WorkerSettings.from_env(
        {
            "PARTSIGHT_REVIEW_STORE": f"s3://{BUCKET}/{prefix}/",
            "PARTSIGHT_REVIEW_S3_ENDPOINT": f"http://{s3.endpoint}",
            "PARTSIGHT_REVIEW_S3_ACCESS_KEY": ACCESS_KEY,
            "PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE": str(secret),
            "PARTSIGHT_REVIEW_MAX_ITEMS": "2",
        }
    )
    store = open_review_store(settings)
    assert isinstance(store, S3ReviewStore) and store.max_items == 2
    assert (
        isinstance(settings.review.location, S3Location) and keys(settings.review.location) == []
    )  # the probe is gone
    assert keep(store, "f1").id is not None and keys(settings.review.location)[0].startswith("items/")


def test_the_worker_refuses_a_missing_bucket_with_status_2_and_one_line(s3: S3Server, tmp_path: Path) -> None:
    secret = tmp_path / "s3_secret"
    secret.write_text(SECRET_KEY + "\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PARTSIGHT_")}
    env.update(
        PARTSIGHT_DEVICE="cpu",
        PARTSIGHT_REVIEW_STORE="s3://no-such-bucket/review",
        PARTSIGHT_REVIEW_S3_ENDPOINT=f"http://{s3.endpoint}",
        PARTSIGHT_REVIEW_S3_ACCESS_KEY=ACCESS_KEY,
        PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE=str(secret),
    )
    result = subprocess.run(
        [sys.executable, "-m", "partsight.cli", "worker"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2, result.stderr
    assert "the bucket 'no-such-bucket' does not exist" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and SECRET_KEY not in result.stderr
