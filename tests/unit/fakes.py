"""Small in-memory stand-ins for pure unit tests (integration tests use the real servers)."""

from __future__ import annotations

from typing import Any


class FakeRedis:
    """The handful of Redis commands the ledger and frame store use, with TTLs on a settable clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.values: dict[str, tuple[bytes, float | None]] = {}
        self.zsets: dict[str, dict[str, float]] = {}

    def _live(self, key: str) -> bytes | None:
        item = self.values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self.now:
            del self.values[key]
            return None
        return value

    def set(self, key: str, value: bytes, nx: bool = False, ex: int | None = None) -> bool:
        if nx and self._live(key) is not None:
            return False
        self.values[key] = (value, self.now + ex if ex else None)
        return True

    def get(self, key: str) -> bytes | None:
        return self._live(key)

    def pttl(self, key: str) -> int:
        if self._live(key) is None:
            return -2
        expires = self.values[key][1]
        return -1 if expires is None else int((expires - self.now) * 1000)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self._live(key) for key in keys]

    def delete(self, *keys: str) -> int:
        return sum(1 for key in keys if self.values.pop(key, None))

    def zadd(self, key: str, mapping: dict[str, float], xx: bool = False) -> int:
        zset = self.zsets.setdefault(key, {})
        for member, score in mapping.items():
            if not xx or member in zset:
                zset[member] = score
        return len(mapping)

    def zrem(self, key: str, *members: str) -> int:
        return sum(1 for member in members if self.zsets.get(key, {}).pop(member, None) is not None)

    def zcard(self, key: str) -> int:
        return len(self.zsets.get(key, {}))

    def zrangebyscore(self, key: str, low: float, high: float, start: int = 0, num: int = -1) -> list[str]:
        members = sorted((s, m) for m, s in self.zsets.get(key, {}).items() if low <= s <= high)
        return [m for _, m in members][start : start + num if num >= 0 else None]

    def pipeline(self, transaction: bool = True) -> Any:
        redis = self

        class Pipe:
            def __init__(self) -> None:
                self.calls: list[Any] = []

            def __getattr__(self, name: str) -> Any:
                return lambda *a, **k: self.calls.append((name, a, k))

            def execute(self) -> list[Any]:
                return [getattr(redis, name)(*a, **k) for name, a, k in self.calls]

        return Pipe()
