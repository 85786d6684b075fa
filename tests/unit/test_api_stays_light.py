"""The HTTP API is as light as the bridge: importing it, listing model versions, activating one (sha256 verified)
and enrolling photos must not load torch, torchvision, scikit-learn, Pillow or numpy."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import api
import api.routes

HEAVY = ("torch", "torchvision", "sklearn", "PIL", "numpy", "scipy")


def test_api_package_imports_and_serves_without_heavy_libraries(tmp_path: Path) -> None:
    modules = [f"api.{m.name}" for m in pkgutil.iter_modules(api.__path__)]
    modules += [f"api.routes.{m.name}" for m in pkgutil.iter_modules(api.routes.__path__)]
    assert {"api.server", "api.app", "api.recognize", "api.settings"} <= set(modules)
    code = f"""
import importlib, sys
from pathlib import Path
for name in {[*modules, "partsight.cli"]!r}:
    importlib.import_module(name)
from fastapi.testclient import TestClient
from models.store.review_location import ReviewSettings
from api.app import create_app
from api.settings import ApiSettings
from broker.settings import MqttSettings
from tests.unit.apistore import FakeDispatcher, FakeRecognizer, write_version
store = Path({str(tmp_path)!r})
write_version(store, "v1", {{"p1": "tops"}}, created_at="2025-01-01T00:00:00Z")
write_version(store, "v2", {{"p1": "tops", "p2": "bags"}}, created_at="2025-01-02T00:00:00Z")
settings = ApiSettings(mqtt=MqttSettings("127.0.0.1", 1883), model_dir=store, review=ReviewSettings(store / "review"))
client = TestClient(create_app(settings, recognizer=FakeRecognizer(), dispatcher=FakeDispatcher(), version="0.1.0"))
assert client.get("/v1/models").json()["current"] == "v2"
assert client.post("/v1/models/v1/activate").status_code == 200
assert client.get("/v1/products").status_code == 200
photos = [("photo", ("a.jpg", b"\\xff\\xd8\\xff" + bytes(64), "image/jpeg"))]
assert client.post("/v1/products/p1/photos", files=photos).status_code == 202
jpeg = {{"Content-Type": "image/jpeg"}}
assert client.post("/v1/recognize?device=cam", content=b"\\xff\\xd8\\xff", headers=jpeg).status_code == 200
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
