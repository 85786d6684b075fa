"""The newest object events (one decision per part, `<prefix>/<device>/event`) the API has heard, per device, for
`GET /v1/objects` and the operator page. Kept in memory: an API that restarts starts an empty list."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

PER_DEVICE = 20  # newest objects kept for each device
MAX_DEVICES = 200  # devices kept; the one heard from least recently goes first


class RecentObjects:
    def __init__(self, *, per_device: int = PER_DEVICE, max_devices: int = MAX_DEVICES) -> None:
        self._per_device = per_device
        self._max_devices = max_devices
        self._lock = threading.Lock()
        self._devices: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

    def add(self, event: Mapping[str, Any]) -> bool:
        """Keep one event; False for a message that is not one (ignored). A repeat of an object replaces it."""
        device, name = event.get("device"), event.get("object")
        if event.get("kind") != "object" or not isinstance(device, str) or not isinstance(name, str):
            return False
        with self._lock:
            kept = self._devices.pop(device, None) or deque(maxlen=self._per_device)
            for earlier in [item for item in kept if item.get("object") == name]:
                kept.remove(earlier)
            kept.append(dict(event))
            self._devices[device] = kept
            while len(self._devices) > self._max_devices:
                self._devices.popitem(last=False)
        return True

    def newest(self, device: str | None = None, limit: int = PER_DEVICE) -> list[dict[str, Any]]:
        """The newest objects first, of one device or of all."""
        with self._lock:
            if device is not None:
                found = list(self._devices.get(device, ()))
            else:
                found = [item for kept in self._devices.values() for item in kept]
        found.sort(key=lambda item: str(item.get("decided_at", "")), reverse=True)
        return found[:limit]
