"""Write docs/openapi.json: the OpenAPI document `partsight api` serves at /openapi.json.

    python scripts/openapi.py            # rewrite docs/openapi.json
    python scripts/openapi.py --check    # exit 1 when docs/openapi.json differs from what the app serves

The app is built as `partsight api` builds it, over an empty model store in a temporary directory, with
collaborators that never reach MQTT or Redis (the document does not depend on them). tests/unit/test_docs.py
fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from api.app import create_app
from api.settings import ApiSettings
from broker.settings import MqttSettings
from models.store.review_location import ReviewSettings
from partsight import __version__

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "openapi.json"


class OfflineRecognizer:
    """Stands in for the MQTT recognizer: never connected, answers nothing."""

    connected = False
    in_flight = 0

    def submit(self, device: str, image: bytes) -> Future[dict[str, Any]]:
        raise ConnectionError("offline: the schema is written without MQTT")


class OfflineDispatcher:
    """Stands in for the Redis dispatcher: never reachable."""

    def enrol(self, enrolment: str) -> None:
        raise ConnectionError("offline: the schema is written without Redis")

    def announce(self, version: str, reason: str) -> bool:
        return False

    def ping(self) -> bool:
        return False

    def close(self) -> None:
        return None


def schema() -> dict[str, Any]:
    """The app's `.openapi()` document."""
    with tempfile.TemporaryDirectory(prefix="partsight-openapi-") as folder:
        store = Path(folder) / "store"
        store.mkdir()
        settings = ApiSettings(
            mqtt=MqttSettings("127.0.0.1", 1883), model_dir=store, review=ReviewSettings(store / "review")
        )
        # as `partsight api` builds it: the release it says it is comes from the entry point
        app = create_app(settings, recognizer=OfflineRecognizer(), dispatcher=OfflineDispatcher(), version=__version__)
        return app.openapi()


def render(document: dict[str, Any]) -> str:
    """Sorted keys, indent 2, a final newline: stable diffs."""
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is stale")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"where to write (default {OUTPUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    text = render(schema())
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
    if args.check:
        if current != text:
            print(f"{args.out} is stale: run `python scripts/openapi.py`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(f"{args.out} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
