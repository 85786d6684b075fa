"""`partsight train` on generated photos, then the real bridge and worker serve the model it wrote, unchanged."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from models.store import plant_lines as lines
from partsight.testing.harness import Listener, frame_properties, metric, publisher, wait_for
from partsight.testing.servers import ServerProcess
from partsight.testing.stack import make_stack

pytestmark = pytest.mark.integration

# category, product, shape, colour: two valves share a category and a shape, told apart by colour
PRODUCTS = (
    ("fittings", "red-valve", "ellipse", (200, 30, 30)),
    ("fittings", "amber-valve", "ellipse", (230, 160, 20)),
    ("pumps", "blue-pump", "rectangle", (30, 50, 200)),
    ("gauges", "green-gauge", "triangle", (30, 160, 60)),
)


def product_photo(shape: str, colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(170, 250, 3))
    photo = Image.new("RGB", (160, 120), background)
    draw = ImageDraw.Draw(photo)
    x, y = (int(v) for v in rng.integers(15, 60, 2))
    size = int(rng.integers(45, 60))
    box = (x, y, x + size, y + size)
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x, y + size), (x + size // 2, y), (x + size, y + size)], fill=colour)
    return photo


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(7)
    with (root / "catalog.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product", "name", "category", "sku", "bin"])
        for index, (category, product, shape, colour) in enumerate(PRODUCTS):
            writer.writerow([product, product.replace("-", " ").title(), category, f"GEN-{index:03d}", f"B{index}"])
            folder = root / "images" / category / product
            folder.mkdir(parents=True)
            for n in range(8):
                product_photo(shape, colour, rng).save(folder / f"{n}.{'png' if n % 2 else 'jpg'}")
    store = root / "store"
    command = [
        *(sys.executable, "-m", "partsight.cli", "train"),
        *("--images", str(root / "images"), "--catalog", str(root / "catalog.csv"), "--out", str(store)),
        *("--name", "generated", "--synthetic", "1", "--transforms", "translate,brightness,background"),
        *("--classifiers", "logistic,rbf_svm,knn", "--preprocessing", "none,standardize", "--quiet"),
        *("--structure", "category-first"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return store


def test_training_writes_a_category_first_model_with_its_report(trained_store: Path) -> None:
    version = (trained_store / "current").resolve()
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["head"]["structure"] == "category-first"
    scopes = {record["scope"] for record in manifest["head"]["classifiers"]}
    assert scopes == {None, "fittings"}  # pumps and gauges hold one product each
    training = manifest["training"]
    assert training["images"] == 32 and training["synthetic_images"] == 32
    assert set(training["classifiers"]) == {"(categories)", "fittings"}
    assert {"report.md", "confusion_matrix.png", "precision_coverage.png", "backbone.onnx"} <= set(manifest["files"])
    # the recipe cross-validation chose, its mean, the gallery of the 32 photos and the novelty score
    gallery = manifest["gallery"]
    assert {"features.npz", *gallery["shards"], *gallery["spread"]["shards"], "open_set.png"} <= set(manifest["files"])
    assert manifest["features"]["recipe"]["parts"][:4] == ["b10", "b14", "b15", "head"]
    assert manifest["gallery"]["photos"] == 32 and 0 < manifest["novelty"]["threshold"] < 1
    assert training["features"]["label"] in training["features"]["cv_macro_f1"]


def test_the_worker_serves_the_trained_model_unchanged(
    trained_store: Path, mqtt_server: ServerProcess, redis: ServerProcess, tmp_path: Path
) -> None:
    stack = make_stack(mqtt_server, redis, trained_store, tmp_path / "logs")
    stack.start()
    try:
        rng = np.random.default_rng(99)  # photos the trainer never saw
        device = "enrol-test"
        with Listener("127.0.0.1", stack.mqtt_port, [f"{stack.topics.prefix}/{device}/#"]) as listener:
            client = publisher("127.0.0.1", stack.mqtt_port)
            sent = {}
            for category, product, shape, colour in PRODUCTS:
                for _ in range(2):
                    frame_id = uuid.uuid4().hex
                    sent[frame_id] = (category, product)
                    path = tmp_path / f"{frame_id}.jpg"
                    product_photo(shape, colour, rng).save(path)
                    client.publish(
                        stack.topics.frame(device), path.read_bytes(), qos=1, properties=frame_properties(frame_id)
                    )
            right = 0
            for frame_id, (category, product) in sent.items():
                topic, result, _ = listener.wait_frame(frame_id, timeout=60)
                assert topic == stack.topics.result(device), result
                assert result["model"]["name"] == "generated"
                assert result["category"] == category  # the category level is never wrong on these
                assert 0 < result["confidence"] <= result["category_confidence"] <= 1
                if result["status"] == "recognized":
                    assert result["product"] == product
                    assert result["catalog"]["sku"].startswith("GEN-") and result["catalog"]["bin"]
                    right += 1
            assert right >= len(sent) - 2
            client.disconnect()
    finally:
        stack.stop()


def test_a_line_answers_among_its_products_and_a_line_there_is_not_is_refused(
    trained_store: Path, mqtt_server: ServerProcess, redis: ServerProcess, tmp_path: Path
) -> None:
    valves = ["red-valve", "amber-valve"]
    catalog = {product for _, product, _, _ in PRODUCTS}
    lines.put_line(
        trained_store,
        "valves",
        products=valves,
        categories=[],
        known_products=catalog,
        known_categories={category for category, *_ in PRODUCTS},
    )
    lines.set_device_line(trained_store, "line-cam", "valves")
    stack = make_stack(mqtt_server, redis, trained_store, tmp_path / "logs")
    stack.start()
    try:
        rng = np.random.default_rng(123)
        topics = [f"{stack.topics.prefix}/{device}/#" for device in ("free-cam", "line-cam")]
        with Listener("127.0.0.1", stack.mqtt_port, topics) as listener:
            client = publisher("127.0.0.1", stack.mqtt_port)

            def send(device: str, product: int, line: str | None = None) -> str:
                frame_id = uuid.uuid4().hex
                path = tmp_path / f"{frame_id}.png"
                _, _, shape, colour = PRODUCTS[product]
                product_photo(shape, colour, rng).save(path)
                properties = frame_properties(frame_id)
                if line is not None:
                    properties.UserProperty = [("line", line)]
                client.publish(stack.topics.frame(device), path.read_bytes(), qos=1, properties=properties)
                return frame_id

            pumps = [send("free-cam", 2, line="valves") for _ in range(3)] + [send("line-cam", 2) for _ in range(3)]
            valve = send("line-cam", 0)
            free = send("free-cam", 2)
            nowhere = send("free-cam", 0, line="press-9")
            for frame_id in pumps:  # a pump on the valves line: never answered as a product off the line
                _, result, _ = listener.wait_frame(frame_id, timeout=60)
                assert result["line"] == "valves" and result["product"] in (None, *valves), result
                assert {entry["product"] for entry in result["top_k"]} <= set(valves)
                assert all(match["product"] in valves for match in result["matches"])
            _, result, _ = listener.wait_frame(valve, timeout=60)
            assert result["line"] == "valves" and result["product"] == "red-valve", result
            _, result, _ = listener.wait_frame(free, timeout=60)
            assert result["line"] is None and result["product"] == "blue-pump", result
            topic, error, _ = listener.wait_frame(nowhere, timeout=60)
            assert topic == stack.topics.error("free-cam") and error["error"]["code"] == "unknown_line", error

            # the line's own classifier, fitted in the background the first time the version answered the line
            def rankers(outcome: str) -> float | None:
                return metric(stack.worker_port, "partsight_worker_line_rankers_total", outcome=outcome)

            wait_for(lambda: rankers("fitted") == 1, 30, "the worker fits the valves line's ranker")
            ranked = [send("line-cam", product) for product in (0, 1, 2)]
            answers = [listener.wait_frame(frame_id, timeout=60)[1] for frame_id in ranked]
            assert answers[0]["product"] == "red-valve" and answers[1]["top_k"][0]["product"] == "amber-valve", answers
            assert answers[2]["product"] in (None, *valves) and answers[2]["line"] == "valves", answers[2]
            assert {entry["product"] for entry in answers[0]["top_k"]} == set(valves)
            assert rankers("fitted") == 1 and not rankers("failed")
            client.disconnect()
    finally:
        stack.stop()
        lines.set_device_line(trained_store, "line-cam", None)
        lines.delete_line(trained_store, "valves")
