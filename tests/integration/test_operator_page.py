"""The operator page in a real headless Chromium against the real stack (Mosquitto, Redis, bridge, worker, API):
frames of two products the model never saw are answered unknown and kept for review, grouped into one card per
product; from the page the operator enrols one product with photos, labels its card with it (both frames at once),
sees the next frame of it recognised, dismisses the other card, sees a broken enrolment fail with its reason, reads
the versions' reports, rolls back, and is told plainly when the token is missing (401) or lacks the scope (403)."""

from __future__ import annotations

import io
import json
import math
import random
import re
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, Page, expect, sync_playwright

from partsight.testing.harness import publisher
from partsight.testing.servers import ServerProcess
from partsight.testing.stack import Stack, make_stack

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package: the test never downloads a browser
SCREENSHOT = Path("/tmp/ui.png")
TOKEN = "operator-" + uuid.uuid4().hex  # admin
CAMERA_TOKEN = "camera-" + uuid.uuid4().hex  # recognize only
PRODUCT = "gear-m8"
ENROL_S = 120_000  # ms: an enrolment on two busy cores, with room (the target is seconds)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


def gear_photo(seed: int, size: int = 112) -> bytes:
    """A JPEG of an eight-tooth gear, a product Fashion-MNIST never had, drawn like the demo's photos (a dark
    product on a light background) with its own turn, size, place and shade."""
    rng = random.Random(seed)
    big = size * 4  # drawn large, then scaled down: smooth edges
    image = Image.new("L", (big, big), 235 + rng.randint(-10, 10))
    draw = ImageDraw.Draw(image)
    cx, cy = big / 2 + rng.uniform(-0.05, 0.05) * big, big / 2 + rng.uniform(-0.05, 0.05) * big
    outer = big * rng.uniform(0.36, 0.42)
    inner, teeth, turn = outer * 0.78, 8, rng.uniform(0, 2 * math.pi)
    points = []
    for i in range(teeth * 4):
        angle = turn + i * math.pi / (teeth * 2)
        radius = outer if i % 4 in (1, 2) else inner
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    draw.polygon(points, fill=rng.randint(30, 70))
    hole = outer * 0.3
    draw.ellipse((cx - hole, cy - hole, cx + hole, cy + hole), fill=235)
    out = io.BytesIO()
    image.resize((size, size), Image.Resampling.LANCZOS).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def cross_photo(seed: int, size: int = 112) -> bytes:
    """A JPEG of a plain cross, another product the model never saw, unlike the gear (cosine about 0.5 to it)."""
    rng = random.Random(seed)
    big = size * 4
    image = Image.new("L", (big, big), 235 + rng.randint(-10, 10))
    draw = ImageDraw.Draw(image)
    centre, arm = big / 2 + rng.uniform(-20, 20), big * rng.uniform(0.3, 0.38)
    width, shade = arm * 0.3, rng.randint(30, 70)
    draw.rectangle((centre - arm, centre - width, centre + arm, centre + width), fill=shade)
    draw.rectangle((centre - width, centre - arm, centre + width, centre + arm), fill=shade)
    out = io.BytesIO()
    image.resize((size, size), Image.Resampling.LANCZOS).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def send_frame(stack: Stack, device: str, image: bytes) -> dict[str, Any]:
    """One frame over MQTT, as a camera sends it; the worker's answer on the device's result topic."""
    frame_id = uuid.uuid4().hex
    with stack.listen(device) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        try:
            stack.send(client, device, [frame_id], [image])
            answer: dict[str, Any] = listener.wait_frame(frame_id)[1]
        finally:
            client.loop_stop()
            client.disconnect()
    return answer


def get_json(stack: Stack, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.api_port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page_stack(mqtt_server: ServerProcess, redis: ServerProcess, model_store: Path, tmp_path: Path) -> Iterator[Stack]:
    """Worker, bridge and API on a copy of the trained store: the test enrols and rolls back, and other modules
    share the session's store."""
    store = tmp_path / "store"
    shutil.copytree(model_store, store, symlinks=True)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the operator page's test tokens\n{TOKEN} admin\n{CAMERA_TOKEN} recognize\n")
    stack = make_stack(
        mqtt_server,
        redis,
        store,
        tmp_path / "logs",
        PARTSIGHT_API_TOKENS_FILE=str(tokens),
        PARTSIGHT_REVIEW_STORE=str(tmp_path / "review"),
        PARTSIGHT_REVIEW_SAMPLE="1",  # keep every frame answered unknown
    )
    try:
        stack.start()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # the API serves the page under a strict Content-Security-Policy: the page must live within it
    page.on(
        "console",
        lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None,
    )
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def wait_enrolment(page: Page, product: str) -> str:
    """Wait until the page shows `product`'s newest enrolment done; returns the version it made."""
    row = page.locator(f'[data-testid=enrolment]:has([data-testid=enrolment-product]:text-is("{product}"))').first
    expect(row).to_have_attribute("data-state", "done", timeout=ENROL_S)
    version = row.get_by_test_id("enrolment-version").text_content()
    assert version
    return version


def test_operator_labels_a_frame_enrols_a_product_and_sees_it_recognised(
    page_stack: Stack, page: Page, tmp_path: Path
) -> None:
    stack = page_stack
    models = get_json(stack, "/v1/models")
    first = models["current"]

    # frames of two products the model never saw: answered unknown, kept for review
    unseen = [send_frame(stack, "line-cam", gear_photo(seed)) for seed in (1000, 1001)]
    other = send_frame(stack, "line-cam", cross_photo(1))
    assert [answer["status"] for answer in [*unseen, other]] == ["unknown"] * 3, unseen

    # without a token the page says so, plainly
    page.goto(f"http://127.0.0.1:{stack.api_port}/ui")
    status = page.get_by_test_id("status")
    expect(status).to_contain_text("not authorised (401)")
    page.get_by_label("API token", exact=True).fill(TOKEN)
    page.get_by_test_id("token-save").click()
    expect(page.get_by_test_id("count-version")).to_have_text(first)
    expect(page.get_by_test_id("count-review")).to_have_text("3")
    # one card for the two gears (look-alikes of one product), one for the cross
    expect(page.get_by_test_id("review-item")).to_have_count(2)
    to_label = page.locator('[data-testid=review-item][data-size="2"]')
    to_dismiss = page.locator(f'[data-testid=review-item]:has-text("{other["frame_id"]}")')
    expect(to_label).to_have_count(1)
    for answer in unseen:
        expect(to_label.get_by_test_id("review-meta")).to_contain_text(answer["frame_id"])
    expect(to_label.get_by_test_id("review-cluster-size")).to_have_text("2 frames alike, likely one product")
    expect(to_label.get_by_test_id("review-thumb-more")).to_have_count(1)
    guess = unseen[0]["top_k"][0]["product"]
    expect(to_label.get_by_test_id("review-accept")).to_have_attribute("data-product", re.compile(r".+"))
    expect(to_label.get_by_test_id("review-guess")).to_contain_text("Best guess")
    expect(to_dismiss).to_have_attribute("data-size", "1")
    clusters = get_json(stack, "/v1/review?group=cluster")["clusters"]
    assert sorted(cluster["size"] for cluster in clusters) == [1, 2], clusters
    assert guess in {cluster["best_guess"]["product"] for cluster in clusters}
    expect(to_label.get_by_test_id("review-answer-status")).to_have_text("unknown")
    expect(to_label.get_by_test_id("review-topk").locator("li")).not_to_have_count(0)
    expect(to_label.get_by_test_id("review-matches")).to_contain_text("cos")
    thumb = to_label.get_by_test_id("review-thumb")
    expect(thumb).to_have_attribute("src", re.compile(r"^blob:"))  # fetched with the token, shown from memory
    page.wait_for_function("img => img.complete && img.naturalWidth === 112", arg=thumb.element_handle())

    # enrol the new product from the page: catalog record, further fields, photos
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(20):
        (photos / f"gear-{seed:02d}.jpg").write_bytes(gear_photo(seed))
    page.get_by_label("Product id", exact=True).fill(PRODUCT)
    page.get_by_label("Name", exact=True).fill("Spur gear M8")
    page.get_by_label("Category", exact=True).fill("gears")
    page.get_by_label("Further fields").fill("sku: GR-0008\nmaterial: steel")
    page.get_by_label("Photos", exact=True).set_input_files(sorted(photos.iterdir()))
    page.get_by_test_id("product-submit").click()
    made = wait_enrolment(page, PRODUCT)
    expect(page.get_by_test_id("count-version")).to_have_text(made)
    record = get_json(stack, f"/v1/products/{PRODUCT}")
    assert (record["name"], record["category"], record["sku"]) == ("Spur gear M8", "gears", "GR-0008")

    # the versions with their report figures and the training's plots
    trained = page.locator(f'[data-testid=model][data-version="{first}"]')
    expect(trained.get_by_test_id("model-figures")).to_contain_text("CV accuracy")
    expect(
        page.locator(f'[data-testid=model][data-version="{made}"]').get_by_test_id("model-enrolment")
    ).to_contain_text(f"20 photo(s) of {PRODUCT} (new product)")
    trained.get_by_test_id("model-report").locator("summary").click()
    expect(trained.get_by_test_id("model-plot")).not_to_have_count(0)
    page.wait_for_function(
        "row => [...row.querySelectorAll('[data-testid=model-plot]')].every(i => i.complete && i.naturalWidth > 0)",
        arg=trained.element_handle(),
    )
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    trained.get_by_test_id("model-plot").first.click()  # a plot opens to the panel's width
    expect(trained.locator("button.zoom").first).to_have_attribute("aria-pressed", "true")

    # label the gears' card with it (the autocomplete lists it): both frames labelled, their photos enrolled
    expect(page.locator(f'#catalog-products option[value="{PRODUCT}"]')).to_have_count(1)
    to_label.get_by_test_id("review-label-input").fill(PRODUCT)
    to_label.get_by_test_id("review-label-button").click()
    expect(to_label).to_have_count(0)
    expect(status).to_contain_text(f"as {PRODUCT}; enrolment")
    expect(status).to_contain_text("of 2 photo(s) queued")
    labelled_items = get_json(stack, "/v1/review?status=labelled")["items"]
    assert sorted(item["frame_id"] for item in labelled_items) == sorted(answer["frame_id"] for answer in unseen)
    assert all(item["label"] == PRODUCT and item["enrolled"] for item in labelled_items)
    expect(page.get_by_test_id("enrolment")).to_have_count(2)
    labelled = page.get_by_test_id("enrolment").first  # newest first
    expect(labelled).to_have_attribute("data-state", "done", timeout=ENROL_S)
    relabelled = labelled.get_by_test_id("enrolment-version").text_content()
    assert relabelled and relabelled > made
    expect(page.get_by_test_id("count-version")).to_have_text(relabelled)

    # the next frame of it is recognised: from a camera over MQTT, and through the page's "try a photo"
    seen = send_frame(stack, "line-cam", gear_photo(2000))
    assert (seen["status"], seen["product"], seen["model"]["version"]) == ("recognized", PRODUCT, relabelled), seen
    assert seen["catalog"]["sku"] == "GR-0008"
    trial = tmp_path / "next-gear.jpg"
    trial.write_bytes(gear_photo(2001))
    page.get_by_label("Photo (JPEG, PNG or WebP)").set_input_files(trial)
    page.get_by_test_id("try-submit").click()
    expect(page.get_by_test_id("try-result-status")).to_have_text("recognized")
    expect(page.get_by_test_id("try-result-product")).to_have_text(PRODUCT)

    # dismiss the cross's card: the queue is empty
    to_dismiss.get_by_test_id("review-dismiss-button").click()
    expect(page.get_by_test_id("review-item")).to_have_count(0)
    expect(page.get_by_test_id("count-review")).to_have_text("0")
    assert get_json(stack, "/v1/review?limit=10")["items"] == []

    # a photo that is no image: the enrolment fails, the page says why, and `current` stays where it was
    page.get_by_label("Known product", exact=False).check()
    page.get_by_label("Product id", exact=True).fill("bag")
    page.get_by_label("Photos", exact=True).set_input_files(
        {"name": "torn.jpg", "mimeType": "image/jpeg", "buffer": b"these bytes are no image"}
    )
    page.get_by_test_id("product-submit").click()
    expect(page.get_by_test_id("enrolment")).to_have_count(3)
    torn = page.get_by_test_id("enrolment").first
    expect(torn).to_have_attribute("data-state", "failed", timeout=ENROL_S)
    expect(torn.get_by_test_id("enrolment-error")).not_to_be_empty()
    expect(status).to_contain_text("Enrolment of bag failed")
    expect(page.get_by_test_id("count-enrolments")).to_have_text("0 in progress · 2 done · 1 failed")
    assert get_json(stack, "/v1/models")["current"] == relabelled

    # roll back to the trained version: the same photo is a never-seen product again
    roll_back = page.locator(f'[data-testid=model][data-version="{first}"]').get_by_test_id("model-activate")
    expect(roll_back).to_have_text("Roll back to this")
    roll_back.click()
    expect(page.get_by_test_id("count-version")).to_have_text(first)
    assert get_json(stack, "/v1/models")["current"] == first
    answer = try_until_version(page, first)
    assert answer["status"] == "unknown", answer

    # that photo's card: its best guess accepted in one click, the frames labelled with it and enrolled
    card = page.get_by_test_id("review-item").first
    expect(card.get_by_test_id("review-meta")).to_contain_text(answer["frame_id"])
    accept = card.get_by_test_id("review-accept")
    guess = accept.get_attribute("data-product")
    assert guess and guess in {entry["product"] for entry in answer["top_k"]}, (guess, answer["top_k"])
    accept.click()
    expect(page.get_by_test_id("review-item")).to_have_count(0)
    expect(status).to_contain_text(f"as {guess}; enrolment")
    accepted = get_json(stack, "/v1/review?status=labelled")["items"]
    assert any(item["frame_id"] == answer["frame_id"] and item["label"] == guess for item in accepted), accepted
    accepted_version = wait_enrolment(page, guess)
    expect(page.get_by_test_id("count-version")).to_have_text(accepted_version)

    # a token without the admin scope: the page says what it may not do
    page.get_by_label("API token", exact=True).fill(CAMERA_TOKEN)
    page.get_by_test_id("token-save").click()
    expect(page.get_by_test_id("review-empty")).to_contain_text("may not see the review queue (403 forbidden")
    page.locator(f'[data-testid=model][data-version="{relabelled}"]').get_by_test_id("model-activate").click()
    expect(status).to_contain_text("does not have the right for that (403 forbidden)")
    # not activated (a consolidation of the accepted enrolment may have moved `current` on from it since)
    assert get_json(stack, "/v1/models")["current"] != relabelled


def try_until_version(page: Page, version: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """Press "Recognise" until the answer comes from `version` (the workers load a model moments after
    `current` moves); the answer as the page shows it."""
    deadline = time.monotonic() + timeout_s
    while True:
        page.get_by_test_id("try-submit").click()
        expect(page.get_by_test_id("try-submit")).to_be_enabled()
        answer: dict[str, Any] = json.loads(page.get_by_test_id("try-json").text_content() or "{}")
        if answer.get("model", {}).get("version") == version or time.monotonic() > deadline:
            assert answer.get("model", {}).get("version") == version, answer
            return answer
        time.sleep(0.5)


def test_operator_keeps_lines_and_a_devices_frames_are_answered_on_its_line(page_stack: Stack, page: Page) -> None:
    stack = page_stack
    products = sorted(record["product"] for record in get_json(stack, "/v1/products")["products"])
    on_line = products[:2]
    page.goto(f"http://127.0.0.1:{stack.api_port}/ui")
    page.get_by_label("API token", exact=True).fill(TOKEN)
    page.get_by_test_id("token-save").click()
    expect(page.get_by_test_id("lines-empty")).to_be_visible()
    status = page.get_by_test_id("status")

    # a product the catalog does not have is refused, and said so
    page.get_by_test_id("line-name").fill("press-3")
    page.get_by_test_id("line-products").fill("no-such-part")
    page.get_by_test_id("line-save").click()
    expect(status).to_contain_text("unknown_product")
    page.get_by_test_id("line-name").fill("press-3")
    page.get_by_test_id("line-products").fill(", ".join(on_line))
    page.get_by_test_id("line-save").click()
    line = page.locator("[data-testid=line][data-line=press-3]")
    expect(line.get_by_test_id("line-makes")).to_have_text(", ".join(on_line))
    expect(line.get_by_test_id("line-ranker")).to_contain_text("no worker has fitted the line's own classifier")

    page.get_by_test_id("device-id").fill("press-cam")
    page.get_by_test_id("device-line").select_option("press-3")
    page.get_by_test_id("device-save").click()
    expect(line.get_by_test_id("line-devices")).to_have_text("Devices: press-cam")

    # the device's frames are answered only among the line's products
    answer = send_frame(stack, "press-cam", gear_photo(7))
    assert answer["line"] == "press-3" and answer["product"] in (None, *on_line), answer
    assert {entry["product"] for entry in answer["top_k"]} <= set(on_line)
    # and the worker that answered it fits the line's own classifier, which the page then names
    ranked = "own classifier over 2 products, the version's novelty threshold, fitted in"
    expect(line.get_by_test_id("line-ranker")).to_contain_text(ranked, timeout=30_000)
    expect(line.get_by_test_id("line-ranker")).to_contain_text(f"(version {answer['model']['version']})")

    # a line with a device on it is not removed; once the device is off it, it is
    line.get_by_test_id("line-delete").click()
    expect(status).to_contain_text("line_in_use")
    page.get_by_test_id("device-id").fill("press-cam")
    page.get_by_test_id("device-line").select_option("")
    page.get_by_test_id("device-save").click()
    expect(line.get_by_test_id("line-devices")).to_have_text("No device on it.")
    line.get_by_test_id("line-delete").click()
    expect(page.get_by_test_id("lines-empty")).to_be_visible()
    assert send_frame(stack, "press-cam", gear_photo(8))["line"] is None


def test_an_enrolment_that_looks_like_another_product_says_so(page_stack: Stack, page: Page, tmp_path: Path) -> None:
    page.goto(f"http://127.0.0.1:{page_stack.api_port}/ui")
    page.get_by_label("API token", exact=True).fill(TOKEN)
    page.get_by_test_id("token-save").click()
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(300, 308):
        (photos / f"gear-{seed}.jpg").write_bytes(gear_photo(seed))
    for product in ("gear-16t", "gear-16t-copy"):  # the same photos twice: the second is the first's look-alike
        page.get_by_label("Product id", exact=True).fill(product)
        page.get_by_label("Name", exact=True).fill(product)
        page.get_by_label("Category", exact=True).fill("gears")
        page.get_by_label("Photos", exact=True).set_input_files(sorted(photos.iterdir()))
        page.get_by_test_id("product-submit").click()
        wait_enrolment(page, product)
    row = page.locator('[data-testid=enrolment]:has([data-testid=enrolment-product]:text-is("gear-16t-copy"))')
    expect(row.get_by_test_id("enrolment-confusable")).to_contain_text("looks like gear-16t (")
    first = page.locator('[data-testid=enrolment]:has([data-testid=enrolment-product]:text-is("gear-16t"))')
    expect(first.get_by_test_id("enrolment-confusable")).to_have_count(0)


def test_an_enrolment_waiting_for_the_consolidation_says_so_and_for_how_long(
    page_stack: Stack, page: Page, tmp_path: Path
) -> None:
    from models.store.enrolment_requests import WAITING_FOR_CONSOLIDATION, EnrolmentStore

    requests = EnrolmentStore(tmp_path / "store")  # the stack's store: as a worker records a request turned away
    waiting = requests.create("bracket-6h", [("a.jpg", gear_photo(5))], record={"name": "Bracket", "category": "x"})
    message = "the model carries 64 quick enrolments, as many as it may, ...: try again when it lands"
    assert requests.waiting(waiting, WAITING_FOR_CONSOLIDATION, message, running_s=40.0, expected_s=70.4)
    page.goto(f"http://127.0.0.1:{page_stack.api_port}/ui")
    page.get_by_label("API token", exact=True).fill(TOKEN)
    page.get_by_test_id("token-save").click()
    row = page.locator(f'[data-testid=enrolment][data-id="{waiting}"]')
    expect(row).to_have_attribute("data-state", "queued", timeout=15_000)
    note = row.get_by_test_id("enrolment-waiting")
    expect(note).to_have_text("waits for the running consolidation, about 70 s more")
    expect(note).to_have_attribute("title", message)


def recognize_over_http(stack: Stack, device: str, image: bytes, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.api_port}/v1/recognize?device={device}&{query}",
        data=image,
        headers={"Authorization": f"Bearer {CAMERA_TOKEN}", "Content-Type": "image/jpeg"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_operator_sees_one_decision_per_part_for_each_device(page_stack: Stack, page: Page) -> None:
    page.goto(f"http://127.0.0.1:{page_stack.api_port}/ui")
    page.get_by_label("API token", exact=True).fill(TOKEN)
    page.get_by_test_id("token-save").click()
    expect(page.locator("#objects-empty")).to_be_visible()
    # a gateway sends three frames of one part over HTTP, the last one ending it
    answers = [
        recognize_over_http(
            page_stack, "belt-cam", gear_photo(40 + i), "object=part-0001" + ("&object_end=1" if i == 2 else "")
        )
        for i in range(3)
    ]
    assert {answer["object"] for answer in answers} == {"part-0001"}
    assert answers[-1]["object_state"] == "decided", answers[-1]
    row = page.locator(
        "[data-testid=objects-device][data-device=belt-cam] [data-testid=object-row][data-object=part-0001]"
    )
    expect(row).to_be_visible(timeout=15_000)
    expect(row.get_by_test_id("object-frames")).to_contain_text("/3 frames agree")
    expect(page.locator("#objects-empty")).to_be_hidden()
    listed = get_json(page_stack, "/v1/objects?device=belt-cam")["objects"]
    assert len(listed) == 1 and listed[0]["frame_ids"] == [answer["frame_id"] for answer in answers], listed
    assert listed[0]["reason"] in ("object_end", "agreed") and listed[0]["frames"] == 3
