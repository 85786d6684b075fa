"""The console script: every subcommand parses, camera keeps the MQTT secrets, train and augment fail clearly."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from broker.settings import MqttSettings
from partsight.cli import COMMANDS, build_parser, main
from partsight.testing.harness import ROOT


def test_train_with_a_product_missing_from_the_catalog_fails_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "images" / "valves" / "v-1").mkdir(parents=True)
    (tmp_path / "images" / "valves" / "v-2").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "valves" / "v-1" / "a.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "valves" / "v-2" / "a.png")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps([{"product": "v-1", "name": "Valve", "category": "valves"}]))
    out = tmp_path / "store"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "partsight.cli",
            "train",
            "--images",
            str(tmp_path / "images"),
            "--catalog",
            str(catalog),
            "--out",
            str(out),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "product 'v-2' is not in the catalog" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


# each subcommand with the least it needs to parse
SUBCOMMANDS = {
    "bridge": [],
    "worker": [],
    "camera": ["--images", "photos", "--device", "cam-1"],
    "train": ["--images", "photos", "--catalog", "catalog.csv", "--out", "store"],
    "augment": ["--image", "part.jpg", "--out", "out"],
    "models": ["--store", "store"],
    "lines": ["--store", "store"],
    "demo": [],
    "api": [],
    "enrol": ["--store", "store", "--product", "valve-1", "--photos", "a.jpg", "b.jpg"],
}


def subparser_choices(parser: argparse.ArgumentParser) -> set[str]:
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def test_every_subcommand_parses_and_has_a_handler() -> None:
    parser = build_parser()
    assert subparser_choices(parser) == set(SUBCOMMANDS) == set(COMMANDS)
    for command, required in SUBCOMMANDS.items():
        args = parser.parse_args([command, *required])
        assert args.command == command
        assert callable(COMMANDS[args.command])


def test_camera_protocol_option_keeps_the_password_file_and_the_ca_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import broker.camera
    from broker.camera import Summary

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"not decoded by the camera")
    secret = tmp_path / "mqtt-password"
    secret.write_text("fr0m-the-file\n")
    monkeypatch.setenv("PARTSIGHT_MQTT_URL", "mqtts://line@broker.plant:8884")
    monkeypatch.setenv("PARTSIGHT_MQTT_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("PARTSIGHT_MQTT_CA_FILE", "/etc/partsight/ca.pem")
    monkeypatch.setenv("PARTSIGHT_MQTT_PROTOCOL", "5")
    used: list[MqttSettings] = []

    class FakeCamera:
        def __init__(self, settings: MqttSettings, *args: object, **kwargs: object) -> None:
            used.append(settings)

        def __enter__(self) -> FakeCamera:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(broker.camera, "Camera", FakeCamera)
    monkeypatch.setattr(broker.camera, "stream", lambda *args, **kwargs: Summary())
    argv = ["camera", "--images", str(tmp_path / "photos"), "--device", "cam-1", "--quiet"]
    assert main([*argv, "--protocol", "3.1.1"]) == 0
    assert main(argv) == 0
    with_option, without = used
    assert (with_option.protocol, without.protocol) == ("3.1.1", "5")
    for settings in used:
        assert (settings.host, settings.port, settings.tls, settings.username) == ("broker.plant", 8884, True, "line")
        assert (settings.password, settings.ca_file) == ("fr0m-the-file", "/etc/partsight/ca.pem")


def test_augment_writes_the_synthetic_copies_and_names_an_unknown_transform(tmp_path: Path) -> None:
    from PIL import Image, ImageDraw

    photo = Image.new("RGB", (120, 90), (230, 230, 230))
    ImageDraw.Draw(photo).rectangle((30, 20, 80, 60), fill=(20, 120, 200))
    photo.save(tmp_path / "part.jpg")
    base = [sys.executable, "-m", "partsight.cli", "augment", "--image", str(tmp_path / "part.jpg"), "--out"]
    result = subprocess.run(
        [*base, str(tmp_path / "out"), "--copies", "3"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [f"part-synthetic-0{i}.jpg" for i in range(3)]
    assert all(Image.open(p).size == (120, 90) for p in written)
    result = subprocess.run(
        [*base, str(tmp_path / "x"), "--transforms", "rotate,sepia"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "unknown transform(s) sepia" in result.stderr and "Traceback" not in result.stderr


def partsight_models(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "partsight.cli", "models", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_models_lists_verified_versions_and_refuses_to_point_current_at_a_tampered_one(
    model_store: Path, tmp_path: Path
) -> None:
    import shutil

    from partsight.testing.harness import copy_version

    store = tmp_path / "store"
    shutil.copytree(model_store, store, symlinks=True)
    original = (store / "current").resolve().name
    copy_version(store, original, "zz-tampered", tamper=True)
    copy_version(store, original, "zz-good")

    listing = partsight_models("--store", str(store))
    assert listing.returncode == 1, listing.stdout  # a broken version is in the store
    lines = {line[2:].split()[0]: line for line in listing.stdout.splitlines()}
    assert lines[original].startswith("*") and lines[original].endswith("verified")
    assert "BROKEN" in lines["zz-tampered"] and "head.npz has sha256" in lines["zz-tampered"]

    refused = partsight_models("--store", str(store), "--use", "zz-tampered")
    assert refused.returncode == 1 and "refused" in refused.stderr and "Traceback" not in refused.stderr
    assert (store / "current").resolve().name == original  # untouched

    assert partsight_models("--store", str(store), "--use", "../elsewhere").returncode == 1
    used = partsight_models("--store", str(store), "--use", "zz-good")
    assert used.returncode == 0, used.stderr
    assert (store / "current").resolve().name == "zz-good"


def test_a_demo_that_cannot_be_set_up_says_why_in_one_line_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from partsight import embedded

    monkeypatch.setattr("partsight.cli.configure_logging", lambda level: None)
    monkeypatch.setattr(embedded, "find_binary", lambda name: None)
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # neither mosquitto nor amqtt
    status = main(["--log-level", "warning", "demo", "--workdir", str(tmp_path), "--no-browser"])
    assert status == 2
    assert capsys.readouterr().err == (
        "partsight demo: no mosquitto binary and no amqtt: apt-get install mosquitto, or pip install amqtt\n"
    )


def test_a_server_that_exits_during_set_up_is_one_line_naming_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from partsight import embedded

    monkeypatch.setattr("partsight.cli.configure_logging", lambda level: None)
    monkeypatch.setattr(embedded, "find_binary", lambda name: "/bin/false")  # a "mosquitto" that exits at once
    assert main(["--log-level", "warning", "demo", "--workdir", str(tmp_path), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("partsight demo: mosquitto exited (1) before listening on 127.0.0.1:")
    assert err.endswith(f"; see {tmp_path.resolve() / 'mqtt' / 'mosquitto.log'}\n") and err.count("\n") == 1


def test_a_bug_in_a_command_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr("partsight.cli.configure_logging", lambda level: None)
    monkeypatch.setitem(COMMANDS, "demo", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["demo"])


@pytest.mark.parametrize("celery_status", [None, 0, 1, 70])
def test_partsight_worker_exits_with_the_status_celerys_worker_ended_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, celery_status: int | None
) -> None:
    """Celery's `worker_main` drops its worker's exit status (an unrecoverable error ended `partsight worker` with
    0, and an orchestrator counted it as done); `start` returns it. The app stands in for Celery's here only."""
    import worker.app

    class EndingApp:
        def start(self, argv: list[str]) -> int | None:
            self.argv = argv
            return celery_status

    app = EndingApp()
    monkeypatch.setattr(worker.app, "worker_app", lambda settings: app)
    monkeypatch.setenv("PARTSIGHT_MODEL_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("PARTSIGHT_REVIEW_SAMPLE", "0")
    assert main(["worker"]) == (celery_status or 0)
    assert app.argv[0] == "worker" and "-Q" in app.argv
