from __future__ import annotations

import pytest

from broker.errors import SettingsError
from broker.settings import BridgeSettings, MqttSettings, redact_url
from worker.settings import WorkerSettings


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
    settings = WorkerSettings.from_env({"PARTSIGHT_MAX_BATCH_SIZE": "6", "PARTSIGHT_MODEL_DIR": "/m"})
    assert (settings.max_batch_size, settings.concurrency, settings.metrics_port) == (6, 12, 9302)
    assert str(settings.model_dir) == "/m"
    assert WorkerSettings.from_env({"PARTSIGHT_DEVICE": "cpu"}).max_batch_size == 4
    assert WorkerSettings.from_env({"PARTSIGHT_DEVICE": "cuda"}).max_batch_size == 32


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_bad_numbers_are_refused(value: str) -> None:
    with pytest.raises(SettingsError):
        BridgeSettings.from_env({"PARTSIGHT_MAX_PAYLOAD_BYTES": value})
