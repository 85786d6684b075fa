"""The shipped compose file, run: deploy/'s images built FROM a Debian base (`bash scripts/dev.sh images`), the
stack started with podman-compose on secrets made by the shipped generator and a model store trained here; a camera
on this host streams frames through the published broker port and every frame is answered; a product enrolled
through the API (in its container, with a generated token) becomes current and is recognised; the stack stops
cleanly and leaves no container behind.

Needs root's podman and podman-compose (`bash scripts/dev.sh images` installs them on Debian); skipped without.
Slow the first time (the base and the images: minutes), then cached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from partsight.testing.harness import wait_for
from partsight.testing.servers import free_port

from ..unit.test_enrolment import DIGIT_RECORD, digit_photos

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES = ("mosquitto", "redis", "bridge", "api", "worker")  # the default stack: every image built here
SERVICE_UID = 10001  # partsight's images run as this user: it writes the store
DEVICE = "compose-cam"
PRODUCT = "gauge-3"


def _missing() -> str | None:
    for tool in ("podman", "podman-compose"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (bash scripts/dev.sh images installs podman and podman-compose)"
    if os.geteuid() != 0:
        return "needs root: the images are root's podman images (bash scripts/dev.sh images builds them as root)"
    return None


pytestmark = [pytest.mark.integration, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]


def run(argv: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run a command; its output, or an AssertionError carrying the end of it."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(argv)} ran past {timeout:.0f} s: {str(exc.stdout)[-3000:]}") from exc
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
    return done.stdout


@dataclass
class ComposeStack:
    project: str
    folder: Path  # the copy of deploy/ compose runs from: its secrets/ made by generate.sh
    env: dict[str, str]
    mqtt_port: int
    api_port: int
    store: Path
    device_password_file: Path
    token: str
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 300) -> str:
        argv = ["podman-compose", "-p", self.project, "-f", str(self.folder / "compose.yaml"), *args]
        return run(argv, timeout=timeout, env=self.env, cwd=self.folder)

    def containers(self, *, running_only: bool = False) -> dict[str, str]:
        """Service name -> container name of this project's containers."""
        argv = ["podman", "ps", "--format", "json", "--filter", f"label=io.podman.compose.project={self.project}"]
        listed = json.loads(run([*argv] if running_only else [*argv, "-a"], timeout=60) or "[]")
        return {item["Labels"]["com.docker.compose.service"]: item["Names"][0] for item in listed}

    def logs(self, lines: int = 40) -> str:
        """The end of every container's log, for a failure's message."""
        parts = []
        for service, name in sorted(self.containers().items()):
            log = subprocess.run(
                ["podman", "logs", "--tail", str(lines), name], capture_output=True, text=True, timeout=60, check=False
            )
            parts.append(f"--- podman logs --tail {lines} {name} ({service})\n{log.stdout}{log.stderr}")
        return "\n".join(parts)

    def healthy(self, name: str) -> bool:
        """The container's own HEALTHCHECK, run now (podman runs them on systemd timers, absent here)."""
        checked = subprocess.run(["podman", "healthcheck", "run", name], capture_output=True, timeout=60, check=False)
        return checked.returncode == 0

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(method, f"http://127.0.0.1:{self.api_port}{path}", headers=headers, timeout=60, **kwargs)

    def teardown(self) -> None:
        """Whatever happened: the stack down, and its containers, volumes and network gone."""
        subprocess.run(
            ["podman-compose", "-p", self.project, "-f", str(self.folder / "compose.yaml"), "down", "-v", "-t", "30"],
            capture_output=True,
            timeout=300,
            env=self.env,
            cwd=self.folder,
            check=False,
        )
        label = f"label=io.podman.compose.project={self.project}"
        for kind in ("container", "volume", "network"):
            listed = subprocess.run(
                ["podman", kind, "ls", "-q", "--filter", label, *(["-a"] if kind == "container" else [])],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            ).stdout.split()
            if listed:
                subprocess.run(["podman", kind, "rm", "-f", *listed], capture_output=True, timeout=120, check=False)


def build_images() -> float:
    """`bash scripts/dev.sh images`: the base when missing, then every image (cached layers when unchanged)."""
    started = time.monotonic()
    run(["bash", str(ROOT / "scripts" / "dev.sh"), "images"], timeout=3600, cwd=ROOT)
    return time.monotonic() - started


def generate_secrets(folder: Path) -> tuple[Path, str]:
    """The shipped generator in the copy: the services' secrets, one device, one admin API token."""
    made = run(["bash", str(folder / "secrets" / "generate.sh"), DEVICE], timeout=120)
    line = next(line for line in made.splitlines() if line.startswith(f"device {DEVICE}:"))
    password = line.split("password '", 1)[1].split("'", 1)[0]
    password_file = folder.parent / "device_password"
    password_file.write_text(password)
    tokens = (folder / "secrets" / "api_tokens").read_text().splitlines()
    token = next(line.split()[0] for line in tokens if line.strip() and not line.startswith("#"))
    return password_file, token


@pytest.fixture(scope="module")
def compose_stack(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    built_s = build_images()
    base = tmp_path_factory.mktemp("compose")
    folder = base / "deploy"
    shutil.copytree(DEPLOY, folder, ignore=shutil.ignore_patterns("models", "secrets"))
    (folder / "secrets").mkdir()
    shutil.copy(DEPLOY / "secrets" / "generate.sh", folder / "secrets" / "generate.sh")
    password_file, token = generate_secrets(folder)
    store = base / "store"  # the workers' and the API's store: written by uid 10001 in the containers
    shutil.copytree(model_store, store, symlinks=True, ignore=shutil.ignore_patterns(".feature-cache"))
    for path in [store, *store.rglob("*")]:
        os.chown(path, SERVICE_UID, SERVICE_UID, follow_symlinks=False)
    project = f"psit{uuid.uuid4().hex[:8]}"
    mqtt_port, api_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARTSIGHT_")},
        "PARTSIGHT_MQTT_PORT": str(mqtt_port),  # not 1883 / 8080: this host's own broker may hold them
        "PARTSIGHT_API_PORT": str(api_port),
        "PARTSIGHT_MODELS": str(store),
        "PARTSIGHT_VERSION": "latest",
    }
    stack = ComposeStack(project, folder, env, mqtt_port, api_port, store, password_file, token)
    stack.timings["images_s"] = built_s
    try:
        started = time.monotonic()
        # Debian 12's podman-compose (1.0.3) ignores profiles: the default services are named
        stack.compose("up", "-d", "--no-build", *SERVICES)
        running = stack.containers(running_only=True)
        assert set(running) == set(SERVICES), f"running: {sorted(running)}\n{stack.logs()}"
        try:
            wait_for(
                lambda: all(stack.healthy(running[service]) for service in SERVICES), 240, "every container healthy", 3
            )
        except AssertionError as exc:
            unhealthy = [s for s in SERVICES if not stack.healthy(running[s])]
            raise AssertionError(f"{exc}; unhealthy: {unhealthy}\n{stack.logs()}") from exc
        stack.timings["up_s"] = time.monotonic() - started
        yield stack
    finally:
        stack.teardown()


def camera(stack: ComposeStack):
    """A camera on this host, as `partsight camera` is: the device's login against the published broker port."""
    from broker.camera import Camera
    from broker.settings import mqtt_from_env
    from broker.topics import Topics

    settings = mqtt_from_env(
        {
            "PARTSIGHT_MQTT_URL": f"mqtt://{DEVICE}@127.0.0.1:{stack.mqtt_port}",
            "PARTSIGHT_MQTT_PASSWORD_FILE": str(stack.device_password_file),
        }
    )
    return Camera(settings, Topics("partsight"), DEVICE)


def stream_frames(stack: ComposeStack, images: list[bytes], prefix: str) -> dict[str, dict[str, Any]]:
    """Every frame sent once; the answer of each, by frame id (AssertionError with the logs when one is missing)."""
    from broker.camera import stream

    ids = [f"{prefix}-{index:03d}" for index in range(len(images))]
    with camera(stack) as device:
        summary = stream(
            device, images, count=len(images), fps=0, window=8, answer_timeout_s=180, frame_id_of=lambda i: ids[i]
        )
    answers = {answer.frame_id: answer.message for answer in summary.answers if answer.frame_id}
    missing = [frame_id for frame_id in ids if frame_id not in answers]
    assert not missing, f"{len(missing)} of {len(ids)} frames unanswered: {missing[:10]}\n{stack.logs()}"
    return answers


def test_the_compose_stack_answers_a_camera_enrols_through_the_api_and_stops_cleanly(
    compose_stack: ComposeStack, camera_photos: list[tuple[Path, str]]
) -> None:
    stack = compose_stack
    ready = stack.api("GET", "/readyz")
    assert ready.status_code == 200, f"{ready.status_code} {ready.text}\n{stack.logs()}"

    # a camera on the host: every frame answered, through Mosquitto, the bridge, Redis and the worker in containers
    images = [path.read_bytes() for path, _ in camera_photos] * 2
    started = time.monotonic()
    answers = stream_frames(stack, images, "frame")
    stack.timings["frames_s"] = time.monotonic() - started
    errors = {frame_id: message for frame_id, message in answers.items() if "error" in message}
    assert not errors, f"frames answered with errors: {list(errors.items())[:3]}\n{stack.logs()}"
    before = {message["model"]["version"] for message in answers.values()}
    assert len(before) == 1, before

    # a new product through the API in its container, with the generated admin token
    created = stack.api("POST", "/v1/products", json={"product": PRODUCT, **DIGIT_RECORD})
    assert created.status_code in (200, 201), f"{created.status_code} {created.text}"
    photos = [("photo", (name, data, "image/png")) for name, data in digit_photos(3, 20)]
    started = time.monotonic()
    posted = stack.api("POST", f"/v1/products/{PRODUCT}/photos", files=photos)
    assert posted.status_code == 202, f"{posted.status_code} {posted.text}"
    enrolment = posted.json()["enrolment"]

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = stack.api("GET", f"/v1/enrolments/{enrolment}").json()
        return status if status["state"] in ("done", "failed") else None

    try:
        status = wait_for(finished, 300, f"enrolment {enrolment} done", 1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from exc
    stack.timings["enrolment_s"] = time.monotonic() - started
    assert status["state"] == "done", f"{status}\n{stack.logs()}"
    assert status["version"] not in before and (stack.store / "current").resolve().name == status["version"]
    product = stack.api("GET", f"/v1/products/{PRODUCT}").json()
    assert product["enrolled"] is True, product

    # the camera's next frames of it are recognised by the new version
    new = stream_frames(stack, [data for _, data in digit_photos(3, 5, offset=50)], "new")
    assert all(message["model"]["version"] == status["version"] for message in new.values()), new
    assert sum(message.get("product") == PRODUCT for message in new.values()) >= 4, new

    # stops cleanly: SIGTERM ends every service with status 0 well inside its grace period, then nothing is left
    containers = stack.containers()
    started = time.monotonic()
    stack.compose("stop", "-t", "60", timeout=600)
    stack.timings["stop_s"] = time.monotonic() - started
    states = {
        service: json.loads(run(["podman", "inspect", "--format", "json", name], timeout=60))[0]["State"]
        for service, name in containers.items()
    }
    exits = {service: (state["Running"], state["ExitCode"]) for service, state in states.items()}
    assert all(not running and code == 0 for running, code in exits.values()), f"{exits}\n{stack.logs()}"
    stack.compose("down", "-v", "-t", "30")
    assert stack.containers() == {}, stack.containers()
    print("compose timings (s):", {key: round(value, 1) for key, value in stack.timings.items()})
