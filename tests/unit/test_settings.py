from __future__ import annotations

import pytest

from broker.errors import SettingsError
from broker.settings import BridgeSettings, MqttSettings, redact_url
from worker.settings import WorkerSettings, usable_cores


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
    from models.engines import ENGINE_CHOICES
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
