from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import SettingsError
from broker.settings import BridgeSettings, MqttSettings, redact_url
from models.store.versions import MANIFEST
from worker.settings import WorkerSettings, open_review_store, usable_cores


def test_mqtt_url_with_credentials_and_tls() -> None:
    settings = MqttSettings.from_url("mqtts://line%40eng:s3cr%2Ft@broker.plant:8884", protocol="3.1.1")
    assert (settings.host, settings.port, settings.tls) == ("broker.plant", 8884, True)
    assert (settings.username, settings.password, settings.protocol) == ("line@eng", "s3cr/t", "3.1.1")
    assert "s3cr" not in settings.display and "s3cr" not in repr(settings)


def test_default_ports() -> None:
    assert MqttSettings.from_url("mqtt://h").port == 1883
    assert MqttSettings.from_url("mqtts://h").port == 8883


@pytest.mark.parametrize("url", ["http://h", "mqtt://", "mqtt://h:notaport"])
def test_bad_mqtt_urls(url: str) -> None:
    with pytest.raises(SettingsError):
        MqttSettings.from_url(url)


def test_redact_url_hides_passwords() -> None:
    assert redact_url("redis://:hunter2@r:6379/0") == "redis://:***@r:6379/0"
    assert redact_url("redis://r:6379/0") == "redis://r:6379/0"


def test_bridge_settings_from_env() -> None:
    settings = BridgeSettings.from_env(
        {
            "PARTSIGHT_MQTT_URL": "mqtt://m:1884",
            "PARTSIGHT_TOPIC_PREFIX": "p",
            "PARTSIGHT_MAX_PAYLOAD_BYTES": "1000",
            "PARTSIGHT_SHARE_GROUP": "g",
            "PARTSIGHT_VISIBILITY_TIMEOUT_S": "10",
        }
    )
    assert (settings.mqtt.port, settings.topic_prefix, settings.max_payload_bytes) == (1884, "p", 1000)
    assert (settings.share_group, settings.metrics_port, settings.redeliver_after_s) == ("g", 9301, 20)


def test_worker_settings_from_env() -> None:
    env = {"PARTSIGHT_MAX_BATCH_SIZE": "6", "PARTSIGHT_MODEL_DIR": "/m", "PARTSIGHT_INFERENCE_LANES": "3"}
    settings = WorkerSettings.from_env(env)
    assert (settings.max_batch_size, settings.inference_lanes, settings.concurrency) == (6, 3, 36)
    assert (str(settings.model_dir), settings.metrics_port, settings.engine) == ("/m", 9302, "auto")
    cpu = WorkerSettings.from_env({"PARTSIGHT_DEVICE": "cpu"})
    assert (cpu.max_batch_size, cpu.inference_lanes) == (4, usable_cores())  # one lane per core it may use
    gpu = WorkerSettings.from_env({"PARTSIGHT_DEVICE": "cuda", "PARTSIGHT_ENGINE": "torch"})
    assert (gpu.max_batch_size, gpu.inference_lanes, gpu.engine) == (32, 2, "torch")


def test_a_lane_owns_one_thread_unless_told_and_never_none() -> None:
    assert WorkerSettings.from_env({}).lane_threads == 1
    assert WorkerSettings.from_env({"PARTSIGHT_LANE_THREADS": "2"}).lane_threads == 2
    with pytest.raises(SettingsError, match="PARTSIGHT_LANE_THREADS"):
        WorkerSettings.from_env({"PARTSIGHT_LANE_THREADS": "0"})


def test_usable_cores_follows_the_affinity_mask() -> None:
    import os

    original = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(original)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, original)


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_bad_numbers_are_refused(value: str) -> None:
    with pytest.raises(SettingsError):
        BridgeSettings.from_env({"PARTSIGHT_MAX_PAYLOAD_BYTES": value})


def test_passwords_come_from_mounted_secret_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from broker.settings import mqtt_from_env, redis_url_from_env

    (tmp_path / "mqtt").write_text("s3cret/:@pw\n")
    (tmp_path / "redis").write_text("r-pass")
    env = {
        "PARTSIGHT_MQTT_URL": "mqtts://bridge:old@broker:8883",
        "PARTSIGHT_MQTT_PASSWORD_FILE": str(tmp_path / "mqtt"),
        "PARTSIGHT_REDIS_URL": "redis://redis:6379/2",
        "PARTSIGHT_REDIS_PASSWORD_FILE": str(tmp_path / "redis"),
    }
    mqtt = mqtt_from_env(env)
    assert (mqtt.username, mqtt.password, mqtt.host, mqtt.port, mqtt.tls) == (
        "bridge",
        "s3cret/:@pw",
        "broker",
        8883,
        True,
    )
    assert redis_url_from_env(env) == "redis://:r-pass@redis:6379/2"
    assert (
        BridgeSettings.from_env(env).redis_url
        == WorkerSettings.from_env(env).redis_url
        == "redis://:r-pass@redis:6379/2"
    )
    assert "r-pass" not in repr(BridgeSettings.from_env(env)) and "s3cret" not in mqtt.display
    with pytest.raises(SettingsError, match="PARTSIGHT_REDIS_PASSWORD_FILE: cannot read"):
        redis_url_from_env({"PARTSIGHT_REDIS_PASSWORD_FILE": str(tmp_path / "missing")})


def test_window_settings_and_the_worker_publish_timeout_are_read() -> None:
    bridge = BridgeSettings.from_env({"PARTSIGHT_WINDOW_FRAMES": "8", "PARTSIGHT_WINDOW_MS": "2.5"})
    assert (bridge.window_frames, bridge.window_ms) == (8, 2.5)
    assert BridgeSettings.from_env({}).window_frames == 32
    with pytest.raises(SettingsError):
        BridgeSettings.from_env({"PARTSIGHT_WINDOW_FRAMES": "0"})
    assert WorkerSettings.from_env({"PARTSIGHT_PUBLISH_TIMEOUT_S": "3"}).publish_timeout_s == 3.0


def test_an_engine_the_worker_does_not_know_is_refused_by_name() -> None:
    from models.extract.engines import ENGINE_CHOICES
    from worker.settings import ENGINES, TRANSPORT_ONLY_ENGINE

    assert set(ENGINES) == {*ENGINE_CHOICES, TRANSPORT_ONLY_ENGINE}
    assert WorkerSettings.from_env({"PARTSIGHT_ENGINE": "none"}).engine == "none"
    with pytest.raises(SettingsError, match="PARTSIGHT_ENGINE must be one of"):
        WorkerSettings.from_env({"PARTSIGHT_ENGINE": "tensorrt"})


def test_the_number_of_nearest_enrolled_photos_is_read_and_bounded() -> None:
    assert WorkerSettings.from_env({}).matches == 3
    assert WorkerSettings.from_env({"PARTSIGHT_MATCHES": "0"}).matches == 0  # turned off
    assert WorkerSettings.from_env({"PARTSIGHT_MATCHES": "50"}).matches == 50
    with pytest.raises(SettingsError, match="PARTSIGHT_MATCHES must be at most 50, got 51"):
        WorkerSettings.from_env({"PARTSIGHT_MATCHES": "51"})
    with pytest.raises(SettingsError, match="PARTSIGHT_MATCHES must be at least 0, got -1"):
        WorkerSettings.from_env({"PARTSIGHT_MATCHES": "-1"})
    for bad in ("three", "2.5"):
        with pytest.raises(SettingsError, match="PARTSIGHT_MATCHES must be an integer"):
            WorkerSettings.from_env({"PARTSIGHT_MATCHES": bad})


def test_the_review_queue_settings_are_read_and_bounded(tmp_path: Path) -> None:
    store = tmp_path / "store"
    defaults = WorkerSettings.from_env({"PARTSIGHT_MODEL_DIR": str(store)})
    assert defaults.review.location == store / "review" and defaults.review_enabled
    assert (defaults.review_sample, defaults.review_margin) == (1.0, 0.1)
    assert (defaults.review.max_items, defaults.review.max_bytes, defaults.review.max_age_s) == (
        10_000,
        1 << 30,
        7 * 86400.0,
    )
    version = store / "20270115T080000000Z"
    version.mkdir(parents=True)
    (version / MANIFEST).write_text("{}")
    assert WorkerSettings.from_env({"PARTSIGHT_MODEL_DIR": str(version)}).review.location == store / "review"
    custom = WorkerSettings.from_env(
        {
            "PARTSIGHT_REVIEW_STORE": str(tmp_path / "elsewhere"),
            "PARTSIGHT_REVIEW_SAMPLE": "0.25",
            "PARTSIGHT_REVIEW_MARGIN": "1.01",
            "PARTSIGHT_REVIEW_MAX_ITEMS": "50",
            "PARTSIGHT_REVIEW_MAX_BYTES": "1048576",
            "PARTSIGHT_REVIEW_MAX_AGE_S": "3600",
        }
    )
    assert (custom.review.location, custom.review_sample, custom.review_margin) == (tmp_path / "elsewhere", 0.25, 1.01)
    assert (custom.review.max_items, custom.review.max_bytes, custom.review.max_age_s) == (50, 1 << 20, 3600.0)
    assert not WorkerSettings.from_env({"PARTSIGHT_REVIEW_SAMPLE": "0"}).review_enabled  # 0 turns it off
    assert not WorkerSettings.from_env({"PARTSIGHT_ENGINE": "none"}).review_enabled  # nothing was looked at
    for name, value, message in [
        ("PARTSIGHT_REVIEW_SAMPLE", "1.5", "PARTSIGHT_REVIEW_SAMPLE must be at most 1, got 1.5"),
        ("PARTSIGHT_REVIEW_SAMPLE", "-0.1", "PARTSIGHT_REVIEW_SAMPLE must be at least 0.0"),
        ("PARTSIGHT_REVIEW_SAMPLE", "half", "PARTSIGHT_REVIEW_SAMPLE must be a number"),
        ("PARTSIGHT_REVIEW_MARGIN", "-1", "PARTSIGHT_REVIEW_MARGIN must be at least 0.0"),
        ("PARTSIGHT_REVIEW_MAX_ITEMS", "0", "PARTSIGHT_REVIEW_MAX_ITEMS must be at least 1"),
        ("PARTSIGHT_REVIEW_MAX_BYTES", "1GiB", "PARTSIGHT_REVIEW_MAX_BYTES must be an integer"),
        ("PARTSIGHT_REVIEW_MAX_AGE_S", "0", "PARTSIGHT_REVIEW_MAX_AGE_S must be at least 1.0"),
    ]:
        with pytest.raises(SettingsError, match=message):
            WorkerSettings.from_env({name: value})


@pytest.mark.parametrize("url", ["s3://partsight/review", "S3://bucket"])
def test_an_s3_review_store_needs_its_endpoint_and_credentials(url: str) -> None:
    with pytest.raises(SettingsError, match="needs PARTSIGHT_REVIEW_S3_ENDPOINT"):  # tests/unit/test_review_s3.py
        WorkerSettings.from_env({"PARTSIGHT_REVIEW_STORE": url})
    with pytest.raises(SettingsError, match=r"must be a directory or s3://BUCKET\[/PREFIX\]"):
        WorkerSettings.from_env({"PARTSIGHT_REVIEW_STORE": "https://minio.plant/review"})


def test_the_review_directory_is_created_and_checked_at_start_up(tmp_path: Path) -> None:
    settings = WorkerSettings.from_env({"PARTSIGHT_REVIEW_STORE": str(tmp_path / "review")})
    store = open_review_store(settings)
    assert store is not None and (tmp_path / "review" / "items").is_dir()
    off = WorkerSettings.from_env({"PARTSIGHT_REVIEW_STORE": str(tmp_path / "off"), "PARTSIGHT_REVIEW_SAMPLE": "0"})
    assert open_review_store(off) is None and not (tmp_path / "off").exists()
    (tmp_path / "file").write_text("a file where the folder should be")
    blocked = WorkerSettings.from_env({"PARTSIGHT_REVIEW_STORE": str(tmp_path / "file" / "review")})
    with pytest.raises(SettingsError, match="PARTSIGHT_REVIEW_STORE: cannot create the review store"):
        open_review_store(blocked)


@pytest.mark.parametrize(
    ("store", "message"),
    [("s3://bucket/review", "needs PARTSIGHT_REVIEW_S3_ENDPOINT"), ("{file}/review", "cannot create")],
)
def test_the_worker_refuses_a_bad_review_store_with_status_2_and_one_line(
    tmp_path: Path, store: str, message: str
) -> None:
    import os
    import subprocess
    import sys

    from partsight.testing.harness import ROOT

    (tmp_path / "file").write_text("not a folder")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PARTSIGHT_")}
    env.update(PARTSIGHT_REVIEW_STORE=store.format(file=tmp_path / "file"), PARTSIGHT_DEVICE="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "partsight.cli", "worker"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_manifest_name_is_the_artifacts() -> None:
    from models.bundle import MANIFEST as ARTIFACT_MANIFEST

    assert MANIFEST == ARTIFACT_MANIFEST


def test_a_missing_model_directory_is_said_and_nothing_is_created_there(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-store"
    settings = WorkerSettings.from_env({"PARTSIGHT_MODEL_DIR": str(missing)})
    with pytest.raises(SettingsError, match="does not exist"):
        open_review_store(settings)
    assert not missing.exists()
