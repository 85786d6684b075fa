"""The shipped deployment files against real servers: Prometheus scraping a running bridge and worker with the
shipped rules, every dashboard and rule expression evaluated; Mosquitto with the shipped config, and the password
file and ACL (with its enrol grants) the shipped generator makes."""

from __future__ import annotations

import getpass
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from partsight.testing.harness import Listener, dashboard_builder, frame_properties, login, publisher, wait_for
from partsight.testing.servers import ServerProcess, free_port, require_binary

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def query(port: int, expr: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:  # a bad expression answers 400 with the parser's message
        answer = json.load(exc)
    return answer


def rule_files() -> list[Path]:
    return sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))


def dashboard_expressions() -> list[str]:
    builder = dashboard_builder()
    return [expr.replace("$__rate_interval", "1m") for expr in builder.expressions(builder.build())]


@pytest.fixture
def prometheus(stack, tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files()],
        "scrape_configs": [
            {"job_name": "partsight-bridge", "static_configs": [{"targets": [f"127.0.0.1:{stack.bridge_port}"]}]},
            {"job_name": "partsight-worker", "static_configs": [{"targets": [f"127.0.0.1:{stack.worker_port}"]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    server = ServerProcess(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        port,
        tmp_path,
    )
    server.start()
    yield port
    server.stop()


def test_prometheus_evaluates_every_dashboard_and_rule_expression_on_live_metrics(
    stack, prometheus: int, camera_photos
) -> None:
    devices = ("deploy-cam-1", "deploy-cam-2")
    with Listener(
        "127.0.0.1", stack.mqtt_port, [f"{stack.topics.prefix}/+/result", f"{stack.topics.prefix}/+/error"]
    ) as listener:
        client = publisher("127.0.0.1", stack.mqtt_port)
        sent = []
        deadline = time.monotonic() + 8  # frames over several scrapes, so rates have two samples in their window
        while time.monotonic() < deadline:
            for device in devices:
                path, _ = camera_photos[len(sent) % len(camera_photos)]
                frame_id = uuid.uuid4().hex
                payload = path.read_bytes() if len(sent) % 5 else b"not an image"  # some errors too
                client.publish(stack.topics.frame(device), payload, qos=1, properties=frame_properties(frame_id))
                sent.append(frame_id)
            time.sleep(0.25)
        listener.wait_frames(sent, timeout=60)
        client.disconnect()

    def scraped_both() -> bool:
        result = query(prometheus, 'partsight:device_last_frame_timestamp_seconds{device="deploy-cam-2"}')
        ups = query(prometheus, 'up{job=~"partsight-.*"} == 1')["data"]["result"]
        return bool(result["data"]["result"]) and len(ups) == 2

    wait_for(scraped_both, 30, "Prometheus scraping the bridge and worker and recording rules")
    time.sleep(3)  # a few more evaluations of every rule

    with urllib.request.urlopen(f"http://127.0.0.1:{prometheus}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    shipped = [
        rule for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]
    assert len(rules) == len(shipped)
    assert [(r["name"], r.get("lastError", "")) for r in rules if r["health"] != "ok"] == []

    empty = []
    for expr in dashboard_expressions():
        answer = query(prometheus, expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        # GPU panels and the API's (this stack runs no `partsight api`; its own tests scrape it): parse only
        optional = (dashboard_builder().GPU_ONLY, dashboard_builder().API_ONLY)
        if not answer["data"]["result"] and not any(marker in expr for marker in optional):
            empty.append(expr)
    for rule in shipped:
        if "record" in rule:
            if not query(prometheus, rule["record"])["data"]["result"]:
                empty.append(rule["record"])
        else:  # an alert is quiet on a healthy stack; every series it reads must exist
            assert query(prometheus, rule["expr"])["status"] == "success", rule["alert"]
            for name in set(re.findall(r"\b(?:partsight[_:][a-z0-9_:]+|up)\b", rule["expr"])):
                if not query(prometheus, f"count({{__name__='{name}'}})")["data"]["result"]:
                    empty.append(f"{name} (read by {rule['alert']})")
    assert empty == [], f"expressions without data on a running stack: {empty}"
    last = query(prometheus, "time() - partsight:device_last_frame_timestamp_seconds")["data"]["result"]
    assert {sample["metric"]["device"] for sample in last} >= set(devices)
    assert all(0 <= float(sample["value"][1]) < 120 for sample in last)


@pytest.fixture
def acl_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Mosquitto with the shipped config, and the password file and ACL the shipped generator makes (cam-a may
    enrol, cam-b may not)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    shutil.copy(DEPLOY / "secrets" / "generate.sh", secrets / "generate.sh")
    shutil.copytree(DEPLOY / "mosquitto", tmp_path / "mosquitto")  # the generator starts from ../mosquitto/acl
    made = subprocess.run(
        ["bash", str(secrets / "generate.sh"), "cam-a", "cam-b", "--enrol", "cam-a"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    passwords = dict(re.findall(r"device (\S+): MQTT user '\S+', password '(\S+)'", made.stdout))
    assert set(passwords) == {"cam-a", "cam-b"}
    for service in ("bridge", "worker", "api"):
        passwords[f"partsight-{service}"] = (secrets / f"mqtt_{service}_password").read_text().strip()
    port = free_port()
    config = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    config = (
        config.replace("listener 1883", f"listener {port} 127.0.0.1")
        .replace("/mosquitto/config/passwd", str(secrets / "mosquitto_passwd"))
        .replace("/mosquitto/config/acl", str(secrets / "mosquitto_acl"))
        .replace("/mosquitto/data/", f"{tmp_path}/")
    )
    config += f"user {getpass.getuser()}\n"  # as root, Mosquitto would drop to a user that cannot read tmp_path
    (tmp_path / "mosquitto.conf").write_text(config)
    server = ServerProcess([require_binary("mosquitto"), "-c", str(tmp_path / "mosquitto.conf")], port, tmp_path)
    server.start()
    yield port, passwords
    server.stop()


def test_the_shipped_acl_keeps_each_device_to_its_own_topics(acl_broker) -> None:
    port, passwords = acl_broker
    anonymous, _, refused = login(port, None, None)
    assert refused.is_failure
    wrong, _, refused = login(port, "cam-a", "not-the-password")
    assert refused.is_failure
    for client in (anonymous, wrong):
        client.loop_stop()

    bridge, frames, ok = login(port, "partsight-bridge", passwords["partsight-bridge"])
    assert not ok.is_failure
    bridge.subscribe("partsight/+/frame", qos=1)
    bridge.subscribe("partsight/+/enrol", qos=1)
    cam_a, seen_by_a, _ = login(port, "cam-a", passwords["cam-a"])
    cam_b, seen_by_b, _ = login(port, "cam-b", passwords["cam-b"])
    for client in (cam_a, cam_b):
        client.subscribe("partsight/#", qos=1)  # as wide as a device can ask: the ACL narrows what it gets
    worker, _, _ = login(port, "partsight-worker", passwords["partsight-worker"])
    api, answers, ok = login(port, "partsight-api", passwords["partsight-api"])
    assert not ok.is_failure
    api.subscribe("partsight/#", qos=1)  # the ACL narrows it to partsight/api/#
    time.sleep(0.5)

    cam_a.publish("partsight/cam-a/frame", b"a's own frame", qos=1).wait_for_publish(5)
    cam_a.publish("partsight/cam-b/frame", b"a posing as b", qos=1).wait_for_publish(5)
    cam_a.publish("partsight/cam-b/result", b"a forging b's result", qos=1).wait_for_publish(5)
    worker.publish("partsight/cam-a/result", b"result for a", qos=1).wait_for_publish(5)
    worker.publish("partsight/cam-b/result", b"result for b", qos=1).wait_for_publish(5)
    worker.publish("partsight/cam-b/error", b"error for b", qos=1).wait_for_publish(5)
    cam_a.publish("partsight/cam-a/enrol", b"a's enrolment", qos=1).wait_for_publish(5)  # granted
    cam_b.publish("partsight/cam-b/enrol", b"b's enrolment", qos=1).wait_for_publish(5)  # not granted
    cam_a.publish("partsight/cam-b/enrol", b"a enrolling as b", qos=1).wait_for_publish(5)
    api.publish("partsight/cam-b/frame", b"b's frame through the API", qos=1).wait_for_publish(5)
    api.publish("partsight/cam-b/enrol", b"the API enrolling over MQTT", qos=1).wait_for_publish(5)
    worker.publish("partsight/api/api-1/answers", b"answer for the API", qos=1).wait_for_publish(5)
    bridge.publish("partsight/api/api-1/answers", b"refusal for the API", qos=1).wait_for_publish(5)
    cam_a.publish("partsight/api/api-1/answers", b"a forging an answer", qos=1).wait_for_publish(5)
    wait_for(lambda: len(seen_by_b) >= 2 and len(frames) >= 3 and seen_by_a and len(answers) >= 2, 10, "the allowed")
    time.sleep(0.5)

    assert frames == [  # the bridge never got a forged frame or enrolment, nor one from a device without the right
        ("partsight/cam-a/frame", b"a's own frame"),
        ("partsight/cam-a/enrol", b"a's enrolment"),
        ("partsight/cam-b/frame", b"b's frame through the API"),
    ]
    assert answers == [  # the API reads its answers and nothing of the devices'
        ("partsight/api/api-1/answers", b"answer for the API"),
        ("partsight/api/api-1/answers", b"refusal for the API"),
    ]
    assert ("partsight/cam-a/result", b"result for a") in seen_by_a
    assert not [topic for topic, _ in seen_by_a if topic.startswith("partsight/cam-b/")]  # nothing of b's
    assert sorted(seen_by_b) == [("partsight/cam-b/error", b"error for b"), ("partsight/cam-b/result", b"result for b")]
    assert not [topic for topic, _ in seen_by_a if topic.startswith("partsight/api/")]
    for client in (bridge, cam_a, cam_b, worker, api):
        client.disconnect()
        client.loop_stop()
