"""Lines: the store's file of lines and devices, the answer restricted to a line, the frame's `line` property, the
worker's refusal of a line there is not, and the API's routes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from broker.admission import Inbound, admit
from broker.contract import FrameRequest
from broker.errors import FrameRejected
from models.answer.answerer import Answerer
from models.answer.gallery import build_gallery
from models.answer.head import ProductHead, logistic_classifier
from models.answer.novelty import NoveltyModel
from models.errors import LineError
from models.store import plant_lines as store_lines
from models.store.plant_lines import Line, Lines, LinesView, read_lines
from tests.unit.apistore import write_version
from tests.unit.test_api import ADMIN, RECOG, Api, bearer
from tests.unit.test_pipeline import Batcher, Frames, Publisher, entry_for, jpeg, served_model
from worker.ledger import FrameLedger
from worker.metrics import WorkerMetrics

CATALOG = {"p1", "p2", "p3", "p4"}
CATEGORIES = {"tops", "bags"}


def put(store: Path, name: str, products: list[str] = (), categories: list[str] = ()) -> Line:  # type: ignore[assignment]
    return store_lines.put_line(
        store, name, products=products, categories=categories, known_products=CATALOG, known_categories=CATEGORIES
    )


def versions_as_they_are(store: Path) -> tuple[str, list[tuple[str, int, int]]]:
    """Where `current` points, and every file of every version with its size and modification time: a change of a
    line must leave all of it as it was (a line is kept beside the versions, not in one)."""
    files = [
        (str(path.relative_to(store)), path.stat().st_size, path.stat().st_mtime_ns)
        for folder in sorted(store.iterdir())
        if folder.is_dir() and not folder.is_symlink() and (folder / "manifest.json").is_file()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    return os.readlink(store / "current"), files


def test_lines_and_devices_are_kept_in_the_store(tmp_path: Path) -> None:
    line = put(tmp_path, "press-3", ["p1", "p2", "p1"], ["bags"])
    assert line.products == ("p1", "p2") and line.categories == ("bags",) and line.updated_at
    store_lines.set_device_line(tmp_path, "cam-7", "press-3")
    lines = read_lines(tmp_path)
    assert lines.line_for("cam-7", None) == line  # its device's line
    assert lines.line_for("cam-8", None) is None  # no line: the whole catalog
    assert lines.line_for("cam-8", "press-3") == line  # the frame names it
    with pytest.raises(LineError) as unknown:
        lines.line_for("cam-7", "press-9")
    assert unknown.value.code == "unknown_line"
    with pytest.raises(LineError) as busy:
        store_lines.delete_line(tmp_path, "press-3")
    assert busy.value.code == "line_in_use" and "cam-7" in busy.value.message
    store_lines.set_device_line(tmp_path, "cam-7", None)
    assert store_lines.delete_line(tmp_path, "press-3").name == "press-3"
    assert read_lines(tmp_path) == Lines()


@pytest.mark.parametrize(
    ("name", "products", "categories", "code"),
    [
        ("press-3", ["p9"], [], "unknown_product"),
        ("press-3", [], ["shoes"], "unknown_category"),
        ("press-3", [], [], "bad_line"),
        ("../etc", ["p1"], [], "bad_line"),
        ("x" * 65, ["p1"], [], "bad_line"),
    ],
)
def test_a_line_that_cannot_be_is_refused_and_nothing_changes(
    tmp_path: Path, name: str, products: list[str], categories: list[str], code: str
) -> None:
    put(tmp_path, "keep", ["p1"])
    before = (tmp_path / store_lines.LINES_FILE).read_bytes()
    with pytest.raises(LineError) as refused:
        put(tmp_path, name, products, categories)
    assert refused.value.code == code
    assert (tmp_path / store_lines.LINES_FILE).read_bytes() == before
    with pytest.raises(LineError) as no_line:
        store_lines.set_device_line(tmp_path, "cam-1", "nope")
    assert no_line.value.code == "unknown_line"
    with pytest.raises(LineError) as bad_device:
        store_lines.set_device_line(tmp_path, "a/b", "keep")
    assert bad_device.value.code == "bad_device"


def test_a_workers_view_sees_a_change_within_its_check_and_keeps_the_last_good_lines(tmp_path: Path) -> None:
    now = [0.0]
    view = LinesView(tmp_path, clock=lambda: now[0], check_every_s=0.5)
    assert view.current() == Lines()
    put(tmp_path, "press-3", ["p1"])
    assert view.current() == Lines()  # checked 0 s ago: not yet
    now[0] = 0.6
    assert "press-3" in view.current().lines
    (tmp_path / store_lines.LINES_FILE).write_text("{not json")
    view.changed()  # the announcement: read again at once
    assert "press-3" in view.current().lines  # a broken file keeps the lines in use
    os.remove(tmp_path / store_lines.LINES_FILE)
    view.changed()
    assert view.current() == Lines()


def small_answerer() -> Answerer:
    """Four products on two categories; features are one-hot-ish, so the answer is known."""
    products, categories = ("p1", "p2", "p3", "p4"), ("tops", "tops", "bags", "bags")
    coef = np.eye(4, dtype=np.float32) * 6
    head = ProductHead(products, categories, {None: logistic_classifier(products, coef, np.zeros(4, np.float32))})
    photos = np.repeat(np.eye(4, dtype=np.float32), 2, axis=0) + 0.05
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    gallery = build_gallery(
        photos, np.repeat(products, 2), [f"{p}-{i}" for p in products for i in (0, 1)], ["0" * 64] * 8, products
    )
    novelty = NoveltyModel(np.array([-1.0, -0.5, -6.0, -0.2, -0.7]), 4.0, 0.99, 0.85)
    return Answerer(head, gallery, novelty)


def test_a_frame_on_a_line_is_answered_among_its_products_only() -> None:
    answerer = small_answerer()
    frame = np.array([[0.9, 0.0, 0.43, 0.0]], dtype=np.float32)  # p1 first, p3 second
    frames = np.repeat(frame, 2, axis=0)
    line = np.array([False, True, True, True])  # p1 is not on the line
    free, on_line = answerer.answer(frames, matches=3, allowed=[None, line])
    assert free.product == "p1" and on_line.product == "p3"
    assert {entry["product"] for entry in on_line.top_k} <= {"p2", "p3", "p4"}
    assert sum(entry["score"] for entry in on_line.top_k) == pytest.approx(1.0, abs=1e-5)  # renormalised
    assert on_line.matches and all(match["product"] != "p1" for match in on_line.matches)
    assert any(match["product"] == "p1" for match in free.matches)
    assert answerer.answer(frames, matches=3, allowed=None) == answerer.answer(frames, matches=3, allowed=[None, None])
    nothing = answerer.answer(frame, allowed=[np.zeros(4, dtype=bool)])[0]
    assert nothing.status == "unknown" and nothing.product is None and nothing.top_k == [] and nothing.matches == ()


def test_on_a_line_the_novelty_score_still_refuses_a_product_that_is_none_of_its_own() -> None:
    from dataclasses import replace

    plain = small_answerer()
    answerer = Answerer(plain.head, plain.gallery, replace(plain.novelty, threshold=0.5))
    p1 = plain.gallery.features[:1]  # a photo of p1 itself: known to the model, but not made on this line
    line = np.array([False, True, False, False])  # p2 alone: on the line its probability is 1, only novelty refuses
    free, on_line = answerer.answer(np.repeat(p1, 2, axis=0), allowed=[None, line])
    assert (free.status, free.product, free.novel) == ("recognized", "p1", False), free
    assert (on_line.status, on_line.product, on_line.novel) == ("unknown", None, True), on_line
    assert on_line.top_k[0]["product"] == "p2" and on_line.top_k[0]["score"] == pytest.approx(1.0)


def test_a_frame_names_its_line_with_the_mqtt_user_property() -> None:
    def inbound(**properties: str) -> Inbound:
        return Inbound("partsight/cam/frame", b"\xff\xd8jpeg", {"frame_id": "f1", **properties})

    request = admit(inbound(line="press-3"), device="cam", max_payload_bytes=100, received_at=1.0)
    assert request.line == "press-3"
    assert FrameRequest.from_task_kwargs(request.to_task_kwargs()).line == "press-3"
    plain = admit(inbound(), device="cam", max_payload_bytes=100, received_at=1.0)
    assert plain.line is None and "line" not in plain.to_task_kwargs()  # what a worker before lines reads
    with pytest.raises(FrameRejected) as refused:
        admit(inbound(line="a b"), device="cam", max_payload_bytes=100, received_at=1.0)
    assert refused.value.code == "unknown_line"


def line_pipeline(tmp_path: Path) -> Any:
    from tests.unit.test_pipeline import CountingRedis
    from worker.pipeline import FramePipeline

    redis = CountingRedis()
    frames, publisher = Frames(redis), Publisher()
    asked: list[Any] = []

    def classify(features: np.ndarray, allowed: Any = None) -> list[Any]:
        asked.append(allowed)
        from tests.unit.test_pipeline import classify as plain

        return plain(features)

    view = LinesView(tmp_path, clock=lambda: 0.0, check_every_s=0.0)
    pipeline = FramePipeline(
        model=lambda: served_model(
            "v7", classify=classify, products=("valve", "elbow"), product_categories=("fittings", "fittings")
        ),
        batcher=Batcher(),
        ledger=FrameLedger(redis, claim_ttl_s=3, done_ttl_s=60),
        frames=frames,
        publisher=publisher,
        metrics=WorkerMetrics(__import__("prometheus_client").CollectorRegistry()),
        max_payload_bytes=100_000,
        lines=view.current,
        clock=lambda: 100.0,
    )
    return pipeline, frames, publisher, asked


def test_the_worker_answers_on_a_line_and_refuses_a_line_there_is_not(tmp_path: Path) -> None:
    pipeline, frames, publisher, asked = line_pipeline(tmp_path)
    store_lines.put_line(
        tmp_path,
        "press-3",
        products=["elbow"],
        categories=[],
        known_products={"valve", "elbow"},
        known_categories={"fittings"},
    )
    store_lines.set_device_line(tmp_path, "cam-on-line", "press-3")
    named = entry_for(frames, jpeg(), "named", device="cam")
    frames_request = frames.get_many([named["frame_key"]])[0]
    frames.put(named["frame_key"], dataclasses.replace(frames_request, line="press-9"))
    task = {
        "frames": [entry_for(frames, jpeg(), "free", "cam"), entry_for(frames, jpeg(), "dev", "cam-on-line"), named]
    }
    assert pipeline.handle(task).outcomes == ["recognized", "recognized", "unknown_line"]
    sent = {message["frame_id"]: (kind, message) for kind, message in publisher.sent}
    assert sent["free"][1]["line"] is None and sent["dev"][1]["line"] == "press-3"
    assert sent["named"][0] == "error" and sent["named"][1]["error"]["code"] == "unknown_line"
    scopes = asked[0]
    assert scopes[0] is None and scopes[1].mask.tolist() == [False, True] and scopes[1].ranker is None


def test_the_api_keeps_lines_and_devices_and_announces_each_change(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    write_version(store, "v1", {"p1": "tops", "p2": "bags", "p3": "bags"})
    versions = versions_as_they_are(store)
    api = Api(store)

    def put_json(path: str, body: Any, token: str = ADMIN) -> Any:
        return api.client.put(path, headers=bearer(token), json=body)

    made = put_json("/v1/lines/press-3", {"products": ["p1"], "categories": ["bags"]})
    assert made.status_code == 200 and made.json()["created"] and made.json()["announced"]
    assert api.dispatcher.announced[-1] == ("v1", "lines: press-3")
    assert put_json("/v1/lines/press-3", {"products": ["p9"]}).json()["error"]["code"] == "unknown_product"
    assert put_json("/v1/lines/press-3", {"products": ["p9"]}).status_code == 422
    assert put_json("/v1/lines/press-3", {"categories": ["shoes"]}).json()["error"]["code"] == "unknown_category"
    assert put_json("/v1/lines/press-3", {"products": ["p1"], "extra": 1}).status_code == 422
    assert put_json("/v1/lines/press-3", {"products": ["p2"]}, token=RECOG).status_code == 403
    assert put_json("/v1/devices/cam-7", {"line": "press-3"}).json()["line"] == "press-3"
    missing = put_json("/v1/devices/cam-7", {"line": "press-9"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_line"
    assert api.get("/v1/devices/cam-7").json() == {"device": "cam-7", "line": "press-3"}
    assert api.get("/v1/devices/cam-8").json() == {"device": "cam-8", "line": None}
    listed = api.get("/v1/lines", token=RECOG).json()["lines"]
    assert [(line["line"], line["products"], line["devices"]) for line in listed] == [("press-3", ["p1"], ["cam-7"])]
    assert api.get("/v1/lines/press-9").status_code == 404
    in_use = api.client.delete("/v1/lines/press-3", headers=bearer(ADMIN))
    assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "line_in_use"
    assert put_json("/v1/devices/cam-7", {"line": None}).json()["line"] is None
    assert api.client.delete("/v1/lines/press-3", headers=bearer(ADMIN)).json()["deleted"]
    assert api.get("/v1/lines").json() == {"lines": []}
    assert versions_as_they_are(store) == versions  # no version made, none touched


def test_the_api_says_how_each_worker_ranks_a_line_for_its_current_edit(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    write_version(store, "v1", {"p1": "tops", "p2": "bags", "p3": "bags"})
    api = Api(store)
    made = api.client.put("/v1/lines/press-3", headers=bearer(ADMIN), json={"products": ["p1", "p2"]}).json()
    assert made["rankers"] == []  # no worker has met the line yet
    edited_at = made["updated_at"]
    fitted = {"line": "press-3", "line_updated_at": edited_at, "version": "v1", "outcome": "fitted", "seconds": 0.4}
    older = {**fitted, "line_updated_at": "an earlier edit", "outcome": "failed", "worker": "w2"}
    not_served = {**fitted, "version": "v0", "worker": "w3"}
    api.dispatcher.rankers["press-3"] = [{**fitted, "worker": "w1"}, older, not_served]
    assert api.get("/v1/lines/press-3").json()["rankers"] == [{**fitted, "worker": "w1"}]
    assert api.get("/v1/lines").json()["lines"][0]["rankers"] == [{**fitted, "worker": "w1"}]
    api.dispatcher.down = True  # Redis away: the lines are still there, their rankers unknown
    assert api.get("/v1/lines/press-3").json()["rankers"] is None


def test_recognize_over_http_names_the_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    write_version(store, "v1", {"p1": "tops", "p2": "bags"})
    api = Api(store)
    lines: list[Any] = []
    api.recognizer.reply = lambda device, image: {"status": "unknown", "device": device}
    original = api.recognizer.submit

    def submit(device: str, image: bytes, line: str | None = None, **part: Any) -> Any:
        lines.append(line)
        return original(device, image, line, **part)

    api.recognizer.submit = submit  # type: ignore[method-assign]
    headers = {**bearer(RECOG), "Content-Type": "image/jpeg"}
    assert (
        api.client.post("/v1/recognize?device=cam&line=press-3", headers=headers, content=b"\xff\xd8x").status_code
        == 200
    )
    assert (
        api.client.post("/v1/recognize?device=cam&line=a%20b", headers=headers, content=b"\xff\xd8x").status_code == 422
    )
    assert lines == ["press-3"]


def test_the_lines_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from partsight.cli import main

    store = tmp_path / "store"
    store.mkdir()
    write_version(store, "v1", {"p1": "tops", "p2": "bags"})
    versions = versions_as_they_are(store)
    base = ["lines", "--store", str(store)]
    assert main(base) == 0 and "no lines" in capsys.readouterr().out
    assert main([*base, "--set", "press-3", "--products", "p1, p2", "--categories", "bags"]) == 0
    assert "line press-3: 2 product(s), categories bags" in capsys.readouterr().out
    assert main([*base, "--set", "press-4", "--products", "p9"]) == 1
    assert "unknown_product" in capsys.readouterr().err
    assert main([*base, "--device", "cam-1"]) == 2  # neither --line nor --no-line: nothing is changed
    assert main([*base, "--device", "cam-1", "--line", "press-3"]) == 0
    capsys.readouterr()
    assert main(base) == 0 and "press-3  (cam-1)  p1 p2 category:bags" in capsys.readouterr().out
    assert main([*base, "--delete", "press-3"]) == 1 and "line_in_use" in capsys.readouterr().err
    assert main([*base, "--device", "cam-1", "--no-line"]) == 0
    assert main([*base, "--delete", "press-3"]) == 0
    assert versions_as_they_are(store) == versions  # no version made, none touched
    assert main(["lines", "--store", str(tmp_path / "nowhere")]) == 2
