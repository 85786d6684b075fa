"""The bridge runs on small gateways: importing every broker module and the CLI must not load heavy libraries."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import broker

HEAVY = ("torch", "torchvision", "sklearn", "PIL", "numpy", "scipy")


def test_broker_package_imports_no_heavy_library() -> None:
    modules = [f"broker.{m.name}" for m in pkgutil.iter_modules(broker.__path__)]
    assert {"broker.bridge", "broker.service", "broker.camera", "broker.dispatch"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {[*modules, 'partsight.cli']!r}: importlib.import_module(name)\n"
        "from partsight.cli import build_parser\n"
        "build_parser().parse_args(['bridge'])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
