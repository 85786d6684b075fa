"""The HTTP API over a real store on disk, with fakes for its MQTT and Redis collaborators: auth, limits, types,
ids that are not ids, products, enrolments, model versions, the review queue, errors and metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from api.app import create_app
from api.recent_objects import RecentObjects
from api.settings import ApiSettings
from api.tokens import parse_tokens
from broker.errors import SettingsError
from broker.settings import MqttSettings
from models.store.enrolment_requests import EnrolmentStore
from models.store.review_dir import DirectoryReviewStore
from models.store.review_location import ReviewSettings
from tests.unit.apistore import PNG, FakeDispatcher, FakeRecognizer, error_for, write_version
from worker.review_sink import FrameFeatures

ADMIN = "admin-token-0123456789"
RECOG = "recognize-token-0123456789"
ENROL = "enrol-token-0123456789"
TOKENS = f"# who may do what\n{ADMIN} admin\n{RECOG} recognize   # the line's camera app\n{ENROL} enrol,recognize\n"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200
LIMIT = 1000


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    write_version(store, "v1", {"p1": "tops", "p2": "bags"}, created_at="2025-01-01T00:00:00Z")
    write_version(store, "v2", {"p1": "tops", "p2": "bags", "p3": "shoes"}, created_at="2025-01-02T00:00:00Z")
    return store


def settings_for(store: Path, *, tokens: str | None = TOKENS, **overrides: Any) -> ApiSettings:
    return ApiSettings(
        mqtt=MqttSettings("127.0.0.1", 1883),
        model_dir=store,
        review=ReviewSettings(store / "review"),
        tokens=parse_tokens(tokens) if tokens is not None else None,
        max_body_bytes=LIMIT,
        max_upload_bytes=5 * LIMIT,
        timeout_s=0.2,
        **overrides,
    )


class Api:
    def __init__(self, store: Path, tokens: str | None = TOKENS) -> None:
        self.store = store
        self.recognizer = FakeRecognizer()
        self.dispatcher = FakeDispatcher()
        self.registry = CollectorRegistry()
        self.app = create_app(
            settings_for(store, tokens=tokens),
            recognizer=self.recognizer,
            dispatcher=self.dispatcher,
            version="0.1.0",
            registry=self.registry,
        )
        self.client = TestClient(self.app)

    def get(self, path: str, token: str | None = ADMIN, **kwargs: Any) -> Any:
        return self.client.get(path, headers=bearer(token) if token else {}, **kwargs)

    def post(self, path: str, token: str | None = ADMIN, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.post(path, headers={**(bearer(token) if token else {}), **(headers or {})}, **kwargs)


@pytest.fixture
def api(store: Path) -> Iterator[Api]:
    api = Api(store)
    with api.client:
        yield api


def code_of(response: Any) -> str:
    body = response.json()
    assert set(body["error"]) >= {"code", "message"}, body
    return str(body["error"]["code"])


# --- auth -----------------------------------------------------------------------------------------------------


def test_requests_without_a_known_token_are_401_and_without_the_scope_403(api: Api) -> None:
    missing = api.get("/v1/products", token=None)
    assert missing.status_code == 401 and code_of(missing) == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get("/v1/products", token="not-a-token-at-all-0000").status_code == 401
    basic = api.client.get("/v1/products", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    # any known token reads products; a recognize-only token cannot add one nor see the review queue
    assert api.get("/v1/products", token=RECOG).status_code == 200
    refused = api.post("/v1/products", token=RECOG, json={"product": "p9", "name": "Nine", "category": "tops"})
    assert (
        refused.status_code == 403 and code_of(refused) == "forbidden" and "enrol" in refused.json()["error"]["message"]
    )
    assert api.get("/v1/review", token=ENROL).status_code == 403
    assert api.post("/v1/models/v1/activate", token=ENROL).status_code == 403
    assert (
        api.post(
            "/v1/recognize?device=cam", token=ENROL, content=JPEG, headers={"Content-Type": "image/jpeg"}
        ).status_code
        == 200
    )
    # admin implies every scope
    assert (
        api.post(
            "/v1/recognize?device=cam", token=ADMIN, content=JPEG, headers={"Content-Type": "image/jpeg"}
        ).status_code
        == 200
    )
    assert api.get("/v1/review", token=ADMIN).status_code == 200
    # operations, the page and the OpenAPI document need no token
    for path in ("/healthz", "/readyz", "/metrics", "/ui", "/openapi.json"):
        assert api.get(path, token=None).status_code == 200, path


def test_without_a_tokens_file_every_local_caller_passes_and_the_api_binds_loopback(store: Path) -> None:
    local = Api(store, tokens=None)
    with local.client:
        assert local.get("/v1/review", token=None).status_code == 200
        assert local.post("/v1/models/v1/activate", token=None).status_code == 200
    assert settings_for(store, tokens=None).host == "127.0.0.1"
    assert settings_for(store).host == "0.0.0.0"


def test_a_tokens_file_names_the_line_of_each_problem(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="line 2: unknown scope 'write'"):
        parse_tokens(f"# ok\n{ADMIN} write\n")
    with pytest.raises(SettingsError, match="line 1: a token needs at least 16"):
        parse_tokens("short admin\n")
    with pytest.raises(SettingsError, match="line 3: expected `token scope"):
        parse_tokens(f"{ADMIN} admin\n\n{RECOG}\n")
    with pytest.raises(SettingsError, match="line 2: this token is listed already"):
        parse_tokens(f"{ADMIN} admin\n{ADMIN} recognize\n")
    with pytest.raises(SettingsError, match="lists no token"):
        parse_tokens("# nobody\n")
    table = parse_tokens(TOKENS)
    assert table.scopes_of(ENROL) == {"enrol", "recognize"} and table.scopes_of("nope") is None
    # a named file that is missing or unreadable stops the start-up: never an open API
    env = {"PARTSIGHT_API_TOKENS_FILE": str(tmp_path / "missing"), "PARTSIGHT_MODEL_DIR": str(tmp_path)}
    with pytest.raises(SettingsError, match="does not exist"):
        ApiSettings.from_env(env)
    (tmp_path / "tokens").write_text(TOKENS)
    settings = ApiSettings.from_env({**env, "PARTSIGHT_API_TOKENS_FILE": str(tmp_path / "tokens")})
    assert settings.tokens is not None and len(settings.tokens) == 3 and settings.host == "0.0.0.0"
    assert TOKENS.split()[2] not in repr(settings)


# --- settings -------------------------------------------------------------------------------------------------


def test_settings_defaults_and_checks(tmp_path: Path) -> None:
    settings = ApiSettings.from_env({"PARTSIGHT_API_ID": "api-1"})
    assert (settings.port, settings.timeout_s, settings.max_body_bytes) == (8080, 10.0, 8 * 1024 * 1024)
    assert settings.tokens is None and settings.host == "127.0.0.1"
    assert settings.reply_topic == "partsight/api/api-1/answers"
    assert ApiSettings.from_env({"PARTSIGHT_MAX_PAYLOAD_BYTES": "5000"}).max_body_bytes == 5000
    assert (
        ApiSettings.from_env({"PARTSIGHT_API_MAX_BODY_BYTES": "7", "PARTSIGHT_MAX_PAYLOAD_BYTES": "5"}).max_body_bytes
        == 7
    )
    with pytest.raises(SettingsError, match="MQTT 5"):
        ApiSettings.from_env({"PARTSIGHT_MQTT_PROTOCOL": "3.1.1"})
    with pytest.raises(SettingsError, match="PARTSIGHT_API_ID"):
        ApiSettings.from_env({"PARTSIGHT_API_ID": "a/b"})
    with pytest.raises(SettingsError, match="PARTSIGHT_API_PORT"):
        ApiSettings.from_env({"PARTSIGHT_API_PORT": "http"})


def test_the_review_store_is_where_the_workers_look(tmp_path: Path) -> None:
    from worker.settings import WorkerSettings

    version = write_version(tmp_path / "S", "v1", {"p1": "tops"})
    (tmp_path / "s3-secret").write_text("secret-key\n")
    s3 = {
        "PARTSIGHT_REVIEW_STORE": "s3://review-bucket/line-3",
        "PARTSIGHT_REVIEW_S3_ENDPOINT": "http://127.0.0.1:9000",
        "PARTSIGHT_REVIEW_S3_ACCESS_KEY": "partsight",
        "PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE": str(tmp_path / "s3-secret"),
    }
    cases = [
        ({}, Path("models-store")),
        ({}, tmp_path / "S"),
        ({}, version),  # PARTSIGHT_MODEL_DIR naming one version: the store above it
        ({"PARTSIGHT_REVIEW_STORE": "/srv/review"}, tmp_path / "S"),
        (s3, tmp_path / "S"),
    ]
    for env, model_dir in cases:
        everything = {**env, "PARTSIGHT_MODEL_DIR": str(model_dir), "PARTSIGHT_REVIEW_MAX_ITEMS": "7"}
        assert ApiSettings.from_env(everything).review == WorkerSettings.from_env(everything).review
        assert ApiSettings.from_env(everything).review.max_items == 7
    assert ApiSettings.from_env({"PARTSIGHT_MODEL_DIR": str(version)}).review.location == tmp_path / "S" / "review"
    for bad in ({"PARTSIGHT_REVIEW_STORE": "http://host/review"}, {**s3, "PARTSIGHT_REVIEW_S3_ENDPOINT": ""}):
        with pytest.raises(SettingsError):
            ReviewSettings.from_env(bad, version)


# --- recognize ------------------------------------------------------------------------------------------------


def test_an_image_body_or_multipart_field_is_published_and_its_answer_returned(api: Api) -> None:
    answer = api.post("/v1/recognize?device=line-3", token=RECOG, content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200 and answer.json()["product"] == "p1" and answer.json()["device"] == "line-3"
    assert api.recognizer.frames == [("line-3", JPEG)]
    form = api.post("/v1/recognize?device=line-4", token=RECOG, files={"image": ("x.png", PNG, "image/png")})
    assert form.status_code == 200 and api.recognizer.frames[-1] == ("line-4", PNG)
    generic = api.post("/v1/recognize?device=line-4", files={"image": ("x", PNG, "application/octet-stream")})
    assert generic.status_code == 200
    missing = api.post("/v1/recognize?device=cam", files={"photo": ("x.png", PNG, "image/png")})
    assert missing.status_code == 422 and code_of(missing) == "bad_request"
    no_device = api.post("/v1/recognize", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert no_device.status_code == 422 and code_of(no_device) == "bad_request"


def test_a_frame_may_name_its_object_and_end_it(api: Api) -> None:
    jpeg = {"Content-Type": "image/jpeg"}
    first = api.post("/v1/recognize?device=cam&object=part-7", token=RECOG, content=JPEG, headers=jpeg)
    last = api.post("/v1/recognize?device=cam&object=part-7&object_end=true", token=RECOG, content=JPEG, headers=jpeg)
    plain = api.post("/v1/recognize?device=cam", token=RECOG, content=JPEG, headers=jpeg)
    assert [r.status_code for r in (first, last, plain)] == [200, 200, 200]
    assert api.recognizer.objects == [("part-7", False), ("part-7", True), (None, False)]
    for query in ("object=no%20spaces", "object=" + "x" * 65, "object_end=true"):
        refused = api.post(f"/v1/recognize?device=cam&{query}", token=RECOG, content=JPEG, headers=jpeg)
        assert refused.status_code == 422 and code_of(refused) == "bad_request", query
    assert len(api.recognizer.frames) == 3  # nothing refused was published


def test_the_newest_objects_are_listed_per_device(api: Api) -> None:
    def event(device: str, name: str, product: str, at: str) -> dict[str, Any]:
        return {"kind": "object", "device": device, "object": name, "product": product, "decided_at": at}

    events = api.recognizer.events
    assert events.add(event("cam-1", "a", "drill", "2026-12-03T10:00:00.000Z"))
    assert events.add(event("cam-2", "b", "saw", "2026-12-03T10:00:01.000Z"))
    assert events.add(event("cam-1", "a", "drill", "2026-12-03T10:00:02.000Z"))  # published again: kept once
    assert not events.add({"frame_id": "f1", "device": "cam-1"})  # a result is not an object event
    listed = api.get("/v1/objects", token=RECOG).json()["objects"]
    assert [(item["device"], item["object"]) for item in listed] == [("cam-1", "a"), ("cam-2", "b")]
    assert [item["object"] for item in api.get("/v1/objects?device=cam-2").json()["objects"]] == ["b"]
    assert api.get("/v1/objects?limit=1").json()["objects"][0]["object"] == "a"
    assert api.get("/v1/objects", token=None).status_code == 401
    assert api.get("/v1/objects?limit=0").status_code == 422


def test_recent_objects_keep_a_bounded_number_per_device_and_of_devices() -> None:
    recent = RecentObjects(per_device=2, max_devices=2)
    for device in ("d1", "d2", "d3"):
        for index in range(3):
            recent.add({"kind": "object", "device": device, "object": f"o{index}", "decided_at": f"{device}{index}"})
    assert recent.newest("d1") == []  # the device heard from least recently went first
    assert [item["object"] for item in recent.newest("d3")] == ["o2", "o1"]
    assert len(recent.newest(limit=10)) == 4


def test_a_body_over_the_limit_is_413_before_it_is_read_whole(api: Api) -> None:
    big = b"\xff\xd8" + b"\x00" * LIMIT
    declared = api.post("/v1/recognize?device=cam", content=big, headers={"Content-Type": "image/jpeg"})
    assert declared.status_code == 413 and code_of(declared) == "payload_too_large"
    assert str(LIMIT) in declared.json()["error"]["message"]
    # a Content-Length that lies: the bytes are counted as they arrive
    lying = api.post(
        "/v1/recognize?device=cam", content=big, headers={"Content-Type": "image/jpeg", "Content-Length": "10"}
    )
    assert lying.status_code == 413 and code_of(lying) == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"\x00" * 100

    chunked = api.post("/v1/recognize?device=cam", content=chunks(), headers={"Content-Type": "image/jpeg"})
    assert chunked.status_code == 413 and code_of(chunked) == "payload_too_large"
    form = api.post("/v1/recognize?device=cam", files={"image": ("x.jpg", big, "image/jpeg")})
    assert form.status_code == 413
    assert api.recognizer.frames == []  # nothing was sent on
    # the photos route bounds each photo by the same limit, and the whole body by the upload limit
    one = api.post("/v1/products/p1/photos", files=[("photo", ("a.jpg", big, "image/jpeg"))])
    assert one.status_code == 413
    many = api.post("/v1/products/p1/photos", files=[("photo", (f"{i}.jpg", JPEG * 4, "image/jpeg")) for i in range(8)])
    assert many.status_code == 413 and api.dispatcher.enrolled == []
    json_body = api.post(
        "/v1/products", content=b"{" + b" " * (2 << 20) + b"}", headers={"Content-Type": "application/json"}
    )
    assert json_body.status_code == 413

    def json_chunks() -> Iterator[bytes]:
        yield b'{"product": "x", "name": "'
        for _ in range(300):
            yield b"x" * 4096
        yield b'", "category": "c"}'

    streamed = api.post("/v1/products", content=json_chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and code_of(streamed) == "payload_too_large"


def test_other_content_types_are_415(api: Api) -> None:
    for kind in ("text/plain", "image/gif", "application/octet-stream", "application/json"):
        refused = api.post("/v1/recognize?device=cam", content=b"GIF89a", headers={"Content-Type": kind})
        assert refused.status_code == 415 and code_of(refused) == "unsupported_format", kind
    part = api.post("/v1/recognize?device=cam", files={"image": ("x.txt", b"hello", "text/plain")})
    assert part.status_code == 415
    empty = api.post("/v1/recognize?device=cam", content=b"", headers={"Content-Type": "image/png"})
    assert empty.status_code == 415
    photos = api.post("/v1/products/p1/photos", files=[("photo", ("a.gif", b"GIF89a", "image/gif"))])
    assert photos.status_code == 415 and code_of(photos) == "unsupported_format"
    assert api.recognizer.frames == [] and api.dispatcher.enrolled == []


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("image_undecodable", 422),
        ("image_too_large", 422),
        ("bad_metadata", 422),
        ("unsupported_format", 415),
        ("payload_too_large", 413),
        ("overloaded", 503),
        ("internal", 500),
    ],
)
def test_a_worker_error_comes_back_with_its_status_and_the_mqtt_json(api: Api, code: str, status: int) -> None:
    api.recognizer.reply = lambda device, image: error_for(device, code)
    answer = api.post("/v1/recognize?device=cam", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == status and answer.json() == error_for("cam", code)
    assert ("Retry-After" in answer.headers) == (code == "overloaded")


def test_no_answer_in_time_is_504_and_mqtt_down_is_503(api: Api) -> None:
    api.recognizer.hang = True
    late = api.post("/v1/recognize?device=cam", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert late.status_code == 504 and code_of(late) == "timeout"
    assert api.recognizer.pending[0].cancelled()  # nobody waits for it any more
    api.recognizer.connected = False
    down = api.post("/v1/recognize?device=cam", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert down.status_code == 503 and code_of(down) == "unavailable" and down.headers["Retry-After"] == "1"


def test_the_mqtt_recognizer_refuses_when_disconnected_or_full_and_hands_answers_by_correlation() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from api.errors import ApiError
    from api.recognize import MqttRecognizer
    from broker.topics import Topics

    recognizer = MqttRecognizer(MqttSettings("127.0.0.1", 1), topics=Topics("t"), api_id="a1", max_in_flight=1)
    assert recognizer.reply_topic == "t/api/a1/answers"
    with pytest.raises(ApiError) as down:
        recognizer.submit("cam", JPEG)
    assert (down.value.status, down.value.code) == (503, "unavailable")
    published: list[tuple[str, Any]] = []

    recognizer.connection._connected.set()
    recognizer.connection.publish = lambda topic, payload, **kw: published.append((topic, kw["properties"])) or 1  # type: ignore[method-assign]
    with pytest.raises(ApiError) as bad_device:
        recognizer.submit("status", JPEG)
    assert bad_device.value.status == 422
    future = recognizer.submit("cam", JPEG)
    with pytest.raises(ApiError) as full:
        recognizer.submit("cam", JPEG)
    assert (full.value.status, full.value.code, full.value.headers) == (503, "overloaded", {"Retry-After": "1"})
    topic, properties = published[0]
    assert topic == "t/cam/frame" and properties.ResponseTopic == "t/api/a1/answers"
    assert dict(properties.UserProperty)["frame_id"]

    class Message:
        def __init__(self, correlation: bytes, payload: bytes) -> None:
            self.topic, self.payload = "t/api/a1/answers", payload
            self.properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            self.properties.CorrelationData = correlation

    recognizer._on_message(None, None, Message(b"someone else", b"{}"))  # nobody waits: ignored
    recognizer._on_message(None, None, Message(properties.CorrelationData, json.dumps({"status": "unknown"}).encode()))
    assert future.result(timeout=1) == {"status": "unknown"} and recognizer.in_flight == 0
    recognizer._on_message(None, None, Message(properties.CorrelationData, b"{}"))  # a repeat: ignored


# --- ids that are not ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/review/%2E%2E/image"),
        ("get", "/v1/review/..%2F..%2F..%2Fetc%2Fpasswd/image"),
        ("get", "/v1/review/%2Fetc%2Fpasswd/image"),
        ("post", "/v1/review/%2E%2E"),
        ("get", "/v1/products/%2E%2E"),
        ("get", "/v1/products/..%2Fv1%2Fcatalog.json"),
        ("post", "/v1/products/%2E%2E/photos"),
        ("get", "/v1/enrolments/..%2F..%2Fv1"),
        ("get", "/v1/enrolments/%2E%2E"),
        ("post", "/v1/models/%2E%2E/activate"),
        ("post", "/v1/models/current/activate"),
        ("post", "/v1/models/%2Fetc/activate"),
        ("get", "/v1/models/v1/report/manifest.json"),
        ("get", "/v1/models/v1/report/..%2F..%2Fcurrent%2Fmanifest.json"),
        ("get", "/v1/models/%2E%2E/report/report.json"),
        ("get", "/ui/..%2Fapp.py"),
        ("get", "/ui/%2E%2E"),
    ],
)
def test_path_traversal_in_ids_is_404_with_a_code(api: Api, method: str, path: str) -> None:
    if method == "post" and "/review/" in path:
        response = api.post(path, json={"dismiss": True})
    elif method == "post" and path.endswith("/photos"):
        response = api.post(path, files=[("photo", ("a.jpg", JPEG, "image/jpeg"))])
    else:
        response = getattr(api, method)(path)
    assert response.status_code == 404, response.text
    assert code_of(response) in {
        "not_found",
        "unknown_item",
        "unknown_product",
        "unknown_enrolment",
        "unknown_version",
        "unknown_report_file",
    }
    assert "root:" not in response.text and "sha256" not in response.text


# --- products and enrolments ----------------------------------------------------------------------------------


def test_products_list_the_current_catalog_and_the_ones_waiting_for_photos(api: Api) -> None:
    listed = api.get("/v1/products").json()["products"]
    assert [(p["product"], p["enrolled"]) for p in listed] == [("p1", True), ("p2", True), ("p3", True)]
    assert api.get("/v1/products/p3").json() == {
        "product": "p3",
        "name": "P3",
        "category": "shoes",
        "sku": "SKU-p3",
        "enrolled": True,
    }
    unknown = api.get("/v1/products/nope")
    assert unknown.status_code == 404 and code_of(unknown) == "unknown_product"
    record = {"product": "gear-7", "name": " Gear 7 ", "category": "parts", "sku": "G-7", "mass_g": 12}
    created = api.post("/v1/products", json=record)
    assert created.status_code == 201
    assert created.json() == {**record, "name": "Gear 7", "enrolled": False}
    assert api.post("/v1/products", json={**record, "name": "Gear seven"}).status_code == 200  # replaced
    assert api.get("/v1/products/gear-7").json()["name"] == "Gear seven"
    listed = api.get("/v1/products").json()["products"]
    assert (listed[0]["product"], listed[0]["enrolled"]) == ("gear-7", False)
    exists = api.post("/v1/products", json={"product": "p1", "name": "One", "category": "tops"})
    assert exists.status_code == 409 and code_of(exists) == "product_exists"
    for bad in (
        {"product": "x", "name": "X"},
        {"product": "../x", "name": "X", "category": "c"},
        {"product": "x", "name": "  ", "category": "c"},
        [1, 2],
    ):
        refused = api.post("/v1/products", json=bad)
        assert refused.status_code == 422 and code_of(refused) == "bad_request", bad
    broken = api.post("/v1/products", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and code_of(broken) == "bad_request"


def test_a_product_posted_and_never_enrolled_is_forgotten_when_deleted_or_after_its_days(api: Api) -> None:
    from api.products import Products

    record = {"product": "gear-7", "name": "Gear 7", "category": "parts"}
    assert api.post("/v1/products", json=record).status_code == 201
    deleted = api.client.delete("/v1/products/gear-7", headers=bearer(ADMIN))
    assert deleted.status_code == 200 and deleted.json() == {"product": "gear-7", "deleted": True}
    assert api.get("/v1/products/gear-7").status_code == 404
    missing = api.client.delete("/v1/products/gear-7", headers=bearer(ADMIN))
    assert missing.status_code == 404 and code_of(missing) == "unknown_product"
    enrolled = api.client.delete("/v1/products/p1", headers=bearer(ADMIN))
    assert enrolled.status_code == 409 and code_of(enrolled) == "product_enrolled"
    assert api.client.delete("/v1/products/gear-7", headers=bearer(RECOG)).status_code == 403
    # a record that waited longer than its days is gone, and the next write leaves it out of the file
    now = [1_000_000.0]
    products = Products(api.store, pending_days=1, clock=lambda: now[0])
    products.add_pending({**record, "product": "old-part"})
    now[0] += 2 * 86400
    assert "old-part" not in products.pending()
    products.add_pending({**record, "product": "new-part"})
    written = json.loads((api.store / "products.json").read_text())
    assert [r["product"] for r in written["products"]] == ["new-part"] and set(written["posted_at"]) == {"new-part"}


def test_the_api_drops_enrolled_and_stale_records_from_products_json_when_it_starts(store: Path) -> None:
    from api.products import Products

    records = [{"product": p, "name": p, "category": "parts"} for p in ("p1", "gear-7", "old-part")]
    posted = {"p1": time.time(), "gear-7": time.time(), "old-part": 0.0}  # p1 is in the catalog; old-part 1970's
    (store / "products.json").write_text(json.dumps({"products": records, "posted_at": posted}))
    Api(store)
    written = json.loads((store / "products.json").read_text())
    assert [r["product"] for r in written["products"]] == ["gear-7"] and set(written["posted_at"]) == {"gear-7"}
    before = (store / "products.json").stat().st_mtime_ns
    assert Products(store).prune() == 0 and (store / "products.json").stat().st_mtime_ns == before  # not rewritten
    # a file that parses but holds nonsense does not stop the API: a time that is none counts as now
    for document in ({"products": 3, "posted_at": None}, {"products": records[1:2], "posted_at": {"gear-7": "x"}}):
        (store / "products.json").write_text(json.dumps(document))
        assert Api(store).get("/v1/products").status_code == 200
    assert [r["product"] for r in json.loads((store / "products.json").read_text())["products"]] == ["gear-7"]


def test_photos_enrol_a_product_202_then_its_status(api: Api) -> None:
    # an unknown product with no record is refused before its photos are read
    unknown = api.post("/v1/products/nope/photos", files=[("photo", ("a.jpg", JPEG, "image/jpeg"))])
    assert unknown.status_code == 404 and code_of(unknown) == "unknown_product"
    record = {"product": "gear-7", "name": "Gear 7", "category": "parts"}
    api.post("/v1/products", json=record, token=ENROL)
    photos = [("photo", ("front.jpg", JPEG, "image/jpeg")), ("photo", ("side.png", PNG, "image/png"))]
    accepted = api.post("/v1/products/gear-7/photos", files=photos, token=ENROL)
    assert accepted.status_code == 202, accepted.text
    enrolment = accepted.json()["enrolment"]
    assert accepted.json() == {"enrolment": enrolment} and accepted.headers["Location"] == f"/v1/enrolments/{enrolment}"
    assert api.dispatcher.enrolled == [enrolment]
    store = EnrolmentStore(api.store)
    assert store.request(enrolment)["record"] == record and store.request(enrolment)["source"] == "api"
    assert [data for _, data in store.photos(enrolment)] == [JPEG, PNG]
    status = api.get(f"/v1/enrolments/{enrolment}", token=ENROL).json()
    assert (status["state"], status["product"], status["photos"], status["new_product"]) == (
        "queued",
        "gear-7",
        2,
        True,
    )
    store.done(enrolment, "v3", 1.5)  # what a worker does
    status = api.get(f"/v1/enrolments/{enrolment}", token=ENROL).json()
    assert (status["state"], status["version"], status["error"]) == ("done", "v3", None)
    # more photos of a known product carry no record
    known = api.post("/v1/products/p1/photos", files=photos[:1], token=ENROL).json()["enrolment"]
    assert store.request(known)["record"] is None
    assert [e["id"] for e in api.get("/v1/enrolments", token=ENROL).json()["enrolments"]] == [known, enrolment]
    missing = api.get("/v1/enrolments/20250101T000000000000Z-00000000", token=ENROL)
    assert missing.status_code == 404 and code_of(missing) == "unknown_enrolment"
    none = api.post("/v1/products/p1/photos", files={"other": ("a.jpg", JPEG, "image/jpeg")})
    assert none.status_code == 422 and code_of(none) == "bad_request"
    raw = api.post("/v1/products/p1/photos", content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 415
    metrics = api.get("/metrics").text
    assert 'partsight_api_enrolments_requested_total{source="api"} 2.0' in metrics


def test_an_enrolment_redis_does_not_take_is_503_and_marked_failed(api: Api) -> None:
    api.dispatcher.down = True
    refused = api.post("/v1/products/p1/photos", files=[("photo", ("a.jpg", JPEG, "image/jpeg"))])
    assert refused.status_code == 503 and code_of(refused) == "unavailable"
    [stored] = EnrolmentStore(api.store).list()
    assert stored["state"] == "failed" and stored["error"]["code"] == "unavailable"
    ready = api.get("/readyz", token=None)
    assert ready.status_code == 503 and ready.json()["checks"] == {"mqtt": True, "redis": False, "store": True}


# --- model versions -------------------------------------------------------------------------------------------


def test_models_list_versions_with_their_figures_and_serve_listed_report_files(api: Api) -> None:
    listing = api.get("/v1/models", token=RECOG).json()
    assert listing["current"] == "v2"
    assert [(v["version"], v["current"]) for v in listing["versions"]] == [("v2", True), ("v1", False)]
    newest = listing["versions"][0]
    assert newest["training"]["cv_accuracy"] == 0.91 and newest["training"]["products"] == 3
    assert newest["training"]["open_set"] == {"auroc": 0.88} and newest["problem"] is None
    assert newest["report_files"] == ["report.json", "confusion_matrix.png"]
    plot = api.get("/v1/models/v1/report/confusion_matrix.png", token=RECOG)
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png" and plot.content == PNG
    assert api.get("/v1/models/v1/report/report.json").json() == {"cv_accuracy": 0.9}
    assert api.get("/v1/models/v1/report/head.npz").status_code == 404
    (api.store / "broken").mkdir()
    (api.store / "broken" / "manifest.json").write_text("{")
    listed = {v["version"]: v for v in api.get("/v1/models").json()["versions"]}
    assert "unreadable manifest" in listed["broken"]["problem"]


def test_activate_moves_current_and_tells_the_workers_but_refuses_a_tampered_version(api: Api) -> None:
    from partsight.testing.harness import copy_version

    activated = api.post("/v1/models/v1/activate")
    assert activated.status_code == 200
    assert activated.json() == {"version": "v1", "current": "v1", "previous": "v2", "announced": True}
    assert (api.store / "current").resolve() == (api.store / "v1").resolve()
    assert api.dispatcher.announced == [("v1", "activate")]
    assert [p["product"] for p in api.get("/v1/products").json()["products"]] == ["p1", "p2"]
    copy_version(api.store, "v2", "v2-tampered", tamper=True)
    refused = api.post("/v1/models/v2-tampered/activate")
    assert refused.status_code == 409 and code_of(refused) == "version_invalid"
    assert "head.npz has sha256" in refused.json()["error"]["message"]
    (api.store / "v2" / "catalog.json").unlink()
    assert code_of(api.post("/v1/models/v2/activate")) == "version_invalid"
    assert (api.store / "current").resolve() == (api.store / "v1").resolve()  # left where it was
    assert api.dispatcher.announced == [("v1", "activate")]
    missing = api.post("/v1/models/v9/activate")
    assert missing.status_code == 404 and code_of(missing) == "unknown_version"


# --- review ---------------------------------------------------------------------------------------------------


def add_item(
    store: Path, frame_id: str, image: bytes = JPEG, features: dict[str, Any] | None = None, guess: str = "p1"
) -> str:
    review = DirectoryReviewStore(store / "review", max_items=100, max_bytes=1 << 20, max_age_s=3600)
    answer = {
        "status": "unknown",
        "product": None,
        "top_k": [{"product": guess, "score": 0.4}],
        "matches": [{"product": guess, "photo": "tops/p1/a.png", "similarity": 0.5}],
    }
    added = review.add(
        image,
        content_type="image/jpeg",
        device="cam-1",
        frame_id=frame_id,
        received_at="2025-01-01T00:00:00.000Z",
        answer=answer,
        features=features,
    )
    assert added.id is not None
    return added.id


def features_near(centre: np.ndarray, seed: int, space: str = "space-1") -> dict[str, Any]:
    """A frame's features record as a worker keeps it: near `centre`, the version's similarity 0.9."""
    vector = centre + np.random.default_rng(seed).normal(0, 0.05, len(centre))
    return FrameFeatures(space, vector, lambda: 0.9).record()


def test_the_queue_groups_look_alike_frames_and_a_cluster_is_labelled_or_dismissed_at_once(api: Api) -> None:
    rng = np.random.default_rng(0)
    gear, plate = rng.normal(0, 1, 64), rng.normal(0, 1, 64)  # two never-seen products, far apart
    gears = [add_item(api.store, f"g{i}", features=features_near(gear, i), guess="p2") for i in range(7)]
    plates = [add_item(api.store, f"p{i}", features=features_near(plate, 100 + i)) for i in range(2)]
    bare = add_item(api.store, "old")  # kept without features: a cluster of its own
    other_space = add_item(api.store, "o", features=features_near(gear, 50, space="space-2"))
    listed = api.get("/v1/review?group=cluster").json()
    assert [c["size"] for c in listed["clusters"]] == [7, 2, 1, 1]
    assert (listed["clusters_total"], listed["items_grouped"], listed["more_items"]) == (4, 11, False)
    gear_cluster, plate_cluster = listed["clusters"][:2]
    assert gear_cluster["items"] == gears[::-1] and gear_cluster["id"] == gears[0]  # newest first; the oldest's id
    assert gear_cluster["frame_ids"] == [f"g{i}" for i in reversed(range(7))]
    assert len(gear_cluster["enrol"]) == 5 and set(gear_cluster["enrol"]) <= set(gears)
    assert gear_cluster["best_guess"] == {"product": "p2", "frames": 7, "share": 1.0, "mean_score": 0.4}
    assert gear_cluster["devices"] == ["cam-1"] and gear_cluster["answer"]["status"] == "unknown"
    assert sorted(plate_cluster["items"]) == sorted(plates)
    assert {c["items"][0] for c in listed["clusters"][2:]} == {bare, other_space}
    assert [c["size"] for c in api.get("/v1/review?group=cluster&limit=1&scan=4").json()["clusters"]] == [2]
    item = api.get("/v1/review?limit=1").json()["items"][0]  # one item: its features without the vector
    assert item["features"] == {"space": "space-2", "dim": 64, "same_product_similarity": 0.9}
    assert code_of(api.get("/v1/review?group=product")) == "bad_request"
    assert api.get("/v1/review?group=cluster&scan=0").status_code == 422

    labelled = api.post("/v1/review/batch", json={"items": gear_cluster["items"], "label": "p2"})
    assert labelled.status_code == 202, labelled.text
    body = labelled.json()
    assert sorted(body["labelled"]) == sorted(gears) and body["skipped"] == []
    assert sorted(body["enrolled"]) == sorted(gear_cluster["enrol"])  # five of the seven, not all
    store = EnrolmentStore(api.store)
    assert len(store.photos(body["enrolment"])) == 5 and store.request(body["enrolment"])["source"] == "review"
    records = api.get("/v1/review?status=labelled&limit=10").json()["items"]
    assert sorted(r["id"] for r in records if r["enrolled"]) == sorted(body["enrolled"]) and len(records) == 7

    dismissed = api.post("/v1/review/batch", json={"items": [*plates, gears[0], "nonsense"], "dismiss": True})
    assert dismissed.status_code == 200 and sorted(dismissed.json()["dismissed"]) == sorted(plates)
    assert dismissed.json()["skipped"] == [{"id": gears[0], "reason": "labelled"}, {"id": "nonsense", "reason": "gone"}]
    again = api.post("/v1/review/batch", json={"items": gears, "label": "p2"})
    assert again.status_code == 409 and code_of(again) == "already_labelled"
    unknown = api.post("/v1/review/batch", json={"items": [bare], "label": "nope"})
    assert unknown.status_code == 404 and code_of(unknown) == "unknown_product"
    for bad in ({}, {"items": []}, {"items": [bare]}, {"items": [bare], "label": "p1", "dismiss": True}):
        refused = api.post("/v1/review/batch", json=bad)
        assert refused.status_code == 422 and code_of(refused) == "bad_request", bad
    assert [c["size"] for c in api.get("/v1/review?group=cluster").json()["clusters"]] == [1, 1]


def test_review_items_list_newest_first_with_their_answer_and_image(api: Api) -> None:
    first, second = add_item(api.store, "f1"), add_item(api.store, "f2", PNG)
    items = api.get("/v1/review?limit=10").json()["items"]
    assert [item["id"] for item in items] == [second, first]
    assert items[0]["frame_id"] == "f2" and items[0]["device"] == "cam-1" and items[0]["received_at"]
    assert items[1]["answer"]["top_k"][0]["product"] == "p1" and items[1]["answer"]["matches"][0]["similarity"] == 0.5
    assert len(api.get("/v1/review?limit=1").json()["items"]) == 1
    image = api.get(f"/v1/review/{first}/image")
    assert image.content == JPEG and image.headers["content-type"] == "image/jpeg"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert api.get("/v1/review?limit=0").status_code == 422
    assert code_of(api.get("/v1/review?status=weird")) == "bad_request"
    assert "partsight_api_review_items 2.0" in api.get("/metrics").text


def test_labelling_an_item_enrols_its_image_and_dismissing_closes_it(api: Api) -> None:
    labelled_id, dismissed_id, other = add_item(api.store, "f1"), add_item(api.store, "f2"), add_item(api.store, "f3")
    labelled = api.post(f"/v1/review/{labelled_id}", json={"label": "p2"})
    assert labelled.status_code == 202, labelled.text
    body = labelled.json()
    assert (body["id"], body["status"], body["label"]) == (labelled_id, "labelled", "p2")
    store = EnrolmentStore(api.store)
    request = store.request(body["enrolment"])
    assert (request["product"], request["source"], request["record"]) == ("p2", "review", None)
    assert [data for _, data in store.photos(body["enrolment"])] == [JPEG]
    assert api.dispatcher.enrolled == [body["enrolment"]]
    again = api.post(f"/v1/review/{labelled_id}", json={"label": "p1"})
    assert again.status_code == 409 and code_of(again) == "already_labelled"
    dismissed = api.post(f"/v1/review/{dismissed_id}", json={"dismiss": True})
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    assert [item["id"] for item in api.get("/v1/review").json()["items"]] == [other]
    # a pending product's record goes with the enrolment
    api.post("/v1/products", json={"product": "gear-7", "name": "Gear", "category": "parts"})
    pending = api.post(f"/v1/review/{dismissed_id}", json={"label": "gear-7"}).json()
    assert store.request(pending["enrolment"])["record"]["name"] == "Gear"
    unknown = api.post(f"/v1/review/{other}", json={"label": "nope"})
    assert unknown.status_code == 404 and code_of(unknown) == "unknown_product"
    for bad in ({}, {"label": "p1", "dismiss": True}, {"dismiss": False}, {"label": "p1", "extra": 1}):
        refused = api.post(f"/v1/review/{other}", json=bad)
        assert refused.status_code == 422 and code_of(refused) == "bad_request", bad
    gone = api.post("/v1/review/20250101T000000000000Z-00000000", json={"dismiss": True})
    assert gone.status_code == 404 and code_of(gone) == "unknown_item"
    assert 'partsight_api_enrolments_requested_total{source="review"} 2.0' in api.get("/metrics").text


# --- errors, operations, the page -----------------------------------------------------------------------------


def test_every_error_is_json_with_a_code(api: Api) -> None:
    route = api.get("/v1/nothing-here")
    assert route.status_code == 404 and code_of(route) == "not_found"
    method = api.client.delete("/v1/products", headers=bearer(ADMIN))
    assert method.status_code == 405 and code_of(method) == "method_not_allowed"
    assert api.get("/v1/models", token=None).json()["error"]["code"] == "unauthorized"


def test_readiness_follows_mqtt_and_the_metrics_name_routes_not_ids(api: Api) -> None:
    assert api.get("/readyz", token=None).json() == {
        "ready": True,
        "checks": {"mqtt": True, "redis": True, "store": True},
    }
    api.recognizer.connected = False
    assert api.get("/readyz", token=None).status_code == 503
    api.get("/v1/products/nope")
    api.get("/v1/review/20250101T000000000000Z-00000000/image")
    api.get("/no/such/route")
    text = api.get("/metrics", token=None).text
    assert 'partsight_api_requests_total{route="/v1/products/{product}",status="404"} 1.0' in text
    assert 'partsight_api_requests_total{route="other",status="404"} 1.0' in text
    assert 'partsight_api_request_seconds_count{route="/v1/review/{item}/image"} 1.0' in text
    assert "nope" not in text and "20250101T" not in text
    assert "partsight_api_mqtt_connected 0.0" in text


def test_promtool_finds_no_problem_in_the_api_metrics(api: Api) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing: apt-get install prometheus")
    text = api.get("/metrics", token=None).content
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout.decode() + result.stderr.decode()


def test_the_operator_page_is_served_with_a_strict_policy(api: Api) -> None:
    page = api.get("/ui", token=None)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert api.get("/ui/no-such.js", token=None).status_code == 404
    assert api.client.get("/", follow_redirects=False).headers["location"] == "/ui"


def test_the_docs_are_served_from_the_package_never_a_cdn(api: Api) -> None:
    page = api.get("/docs", token=None)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text and "<script>" not in page.text  # nothing from elsewhere, no inline script
    for src in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/docs/start.js"):
        asset = api.get(src, token=None)
        assert asset.status_code == 200 and len(asset.content) > 20, src
    assert "/openapi.json" in api.get("/docs/start.js", token=None).text
    assert api.get("/docs/assets/..%2Fswagger-ui.js", token=None).status_code == 404
    assert api.get("/docs/assets/index.html", token=None).status_code == 404  # listed names only


def test_run_api_says_what_is_wrong_with_the_store_and_exits_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from api.server import run_api

    settings = settings_for(tmp_path / "nowhere")
    assert run_api(settings, version="0.1.0") == 2
    assert "does not exist" in caplog.text and "PARTSIGHT_MODEL_DIR" in caplog.text
