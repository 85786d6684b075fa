"""Logins and TLS against a real Mosquitto, a Redis that wants a password, and no secret in logs or metrics.

Mosquitto runs the shipped ACL behind a TLS listener whose CA and certificate the test makes; the bridge and
worker read their MQTT and Redis passwords from files, as they do in the deployments."""

from __future__ import annotations

import getpass
import ssl
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from broker.topics import Topics
from partsight.testing.harness import base_env, frame_properties, login, wait_for
from partsight.testing.servers import ServerProcess, free_port, require_binary
from partsight.testing.stack import Stack

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRETS = {  # made-up secrets the logs and metrics must never show
    "partsight-bridge": "bridge-Secret-7f3a9c",
    "partsight-worker": "worker-Secret-51be02",
    "cam-sec": "device-Secret-c0ffee",
    "redis": "redis-Secret-9d2e44",
}


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def certificates(folder: Path) -> None:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=partsight test CA", cwd=folder)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=folder)  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other-ca.crt",
            "-days", "2", "-subj", "/CN=someone else", cwd=folder)  # fmt: skip


@pytest.fixture
def secured(tmp_path: Path, model_store: Path):  # type: ignore[no-untyped-def]
    certificates(tmp_path)
    passwd = tmp_path / "passwd"
    for user in ("partsight-bridge", "partsight-worker", "cam-sec"):
        flags = ["-b", "-c"] if not passwd.exists() else ["-b"]
        subprocess.run([require_binary("mosquitto_passwd"), *flags, str(passwd), user, SECRETS[user]], check=True)
    for name in ("partsight-bridge", "partsight-worker", "redis"):
        (tmp_path / f"{name}.password").write_text(SECRETS[name] + "\n")
    mqtt_port, redis_port = free_port(), free_port()
    (tmp_path / "mosquitto.conf").write_text(
        f"per_listener_settings false\nallow_anonymous false\npassword_file {passwd}\n"
        f"acl_file {DEPLOY / 'mosquitto' / 'acl'}\n"
        f"listener {mqtt_port} 127.0.0.1\ncafile {tmp_path / 'ca.crt'}\n"
        f"certfile {tmp_path / 'server.crt'}\nkeyfile {tmp_path / 'server.key'}\n"
        f"persistence false\nlog_dest stdout\nuser {getpass.getuser()}\n"
    )
    mosquitto = ServerProcess(
        [require_binary("mosquitto"), "-c", str(tmp_path / "mosquitto.conf")], mqtt_port, tmp_path
    )
    (tmp_path / "redis").mkdir()
    redis = ServerProcess(
        [require_binary("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path / "redis"), "--requirepass", SECRETS["redis"]],
        redis_port,
        tmp_path / "redis",
    )  # fmt: skip
    mosquitto.start()
    redis.start()
    bridge_port, worker_port = free_port(), free_port()
    env = base_env(
        PARTSIGHT_MQTT_URL=f"mqtts://partsight-bridge@127.0.0.1:{mqtt_port}",
        PARTSIGHT_MQTT_CA_FILE=str(tmp_path / "ca.crt"),
        PARTSIGHT_MQTT_PASSWORD_FILE=str(tmp_path / "partsight-bridge.password"),
        PARTSIGHT_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        PARTSIGHT_REDIS_PASSWORD_FILE=str(tmp_path / "redis.password"),
        PARTSIGHT_TOPIC_PREFIX="partsight",  # the ACL's prefix
        PARTSIGHT_MODEL_DIR=str(model_store),
        PARTSIGHT_BRIDGE_METRICS_PORT=str(bridge_port),
        PARTSIGHT_WORKER_METRICS_PORT=str(worker_port),
        PARTSIGHT_BRIDGE_ID="bridge-sec",
        PARTSIGHT_WORKER_ID="worker-sec",
        PARTSIGHT_DEVICE="cpu",
        PARTSIGHT_LOG_LEVEL="debug",  # the chattiest logs must not show a secret either
    )
    stack = Stack(env, Topics("partsight"), mqtt_port, bridge_port, worker_port, tmp_path / "logs")
    stack.logs.mkdir()
    stack.start_bridge()
    stack.env = dict(
        env,
        PARTSIGHT_MQTT_URL=f"mqtts://partsight-worker@127.0.0.1:{mqtt_port}",
        PARTSIGHT_MQTT_PASSWORD_FILE=str(tmp_path / "partsight-worker.password"),
    )
    stack.start_worker()
    yield stack, tmp_path
    stack.stop()
    redis.stop()
    mosquitto.stop()


def test_tls_logins_from_secret_files_answer_frames_and_no_secret_leaks(secured, camera_photos) -> None:
    stack, folder = secured
    ca = str(folder / "ca.crt")
    device, received, reason = login(stack.mqtt_port, "cam-sec", SECRETS["cam-sec"], ca_file=ca)
    assert not reason.is_failure
    device.subscribe("partsight/cam-sec/#", qos=1)
    frame_id = uuid.uuid4().hex
    path, _ = camera_photos[0]
    device.publish("partsight/cam-sec/frame", path.read_bytes(), qos=1, properties=frame_properties(frame_id))
    wait_for(lambda: any(topic == "partsight/cam-sec/result" for topic, _ in received), 60, "a result over TLS")
    assert frame_id.encode() in next(payload for topic, payload in received if topic.endswith("/result"))

    _, _, refused = login(stack.mqtt_port, "cam-sec", "wrong-password", ca_file=ca)
    assert refused.is_failure
    _, _, refused = login(stack.mqtt_port, None, None, ca_file=ca)
    assert refused.is_failure
    with pytest.raises(ssl.SSLError):  # a client that does not trust our CA never gets to log in
        login(stack.mqtt_port, "cam-sec", SECRETS["cam-sec"], ca_file=str(folder / "other-ca.crt"))
    device.disconnect()
    device.loop_stop()

    exposed = []
    for port in (stack.bridge_port, stack.worker_port):
        for endpoint in ("metrics", "healthz", "readyz"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/{endpoint}", timeout=5) as response:
                    exposed.append(response.read().decode())
            except urllib.error.HTTPError as exc:
                exposed.append(exc.read().decode())
    stack.stop()  # shutdown messages too
    exposed += [log.read_text(errors="replace") for log in stack.logs.glob("*.log")]
    assert len(exposed) >= 8  # six endpoints, the bridge log and the worker log
    for name, secret in SECRETS.items():
        assert not [text[:200] for text in exposed if secret in text], f"the {name} secret leaked"
    assert any("mqtts://partsight-bridge@127.0.0.1" in text for text in exposed)  # the logs do name the broker
