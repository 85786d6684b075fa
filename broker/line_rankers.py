"""How each worker ranks a line's frames, kept in Redis for the HTTP API and the operator page.

A worker fits a line's own classifier (models.train.line_ranker) in the background the first time a model version
answers one of the line's frames (worker.line_filter), and says here how that went: one hash per line, one field per
worker, holding the last try's outcome (`fitted`; `none`: nothing to fit, fewer than two of its products with
training photos, more than 500, or a version that keeps none; `failed`: see that worker's log), the version and the
edit of the line it was for, its seconds, the products it ranks and the line's novelty threshold. Until a worker has
tried, or where it could not fit one, the line's frames are answered among its products by the version's head alone.

Plain Redis and JSON (no numpy): the API and the bridge's gateways stay light.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

KEY_PREFIX = "partsight:line-ranker:"
KEEP_S = 7 * 24 * 3600  # a try older than a week is not shown (its worker is likely gone); a line's hash, untouched
# for that long, expires
OUTCOMES = ("fitted", "none", "failed")


@dataclass(frozen=True, slots=True)
class RankerState:
    """One worker's last try at a line's ranker, for one version and one edit of the line (its `updated_at`)."""

    line: str
    line_updated_at: str
    version: str
    outcome: str  # one of OUTCOMES
    seconds: float = 0.0
    products: int = 0  # the products it ranks (those of the line with training photos)
    novelty_threshold: float | None = None  # None: the version's own
    at: float = 0.0  # when the try ended (Unix seconds)

    def record(self) -> dict[str, Any]:
        return asdict(self)


def ranker_key(line: str) -> str:
    return KEY_PREFIX + hashlib.sha256(line.encode()).hexdigest()[:32]


def record_state(client: Any, worker: str, state: RankerState) -> None:
    """Keep `worker`'s last try at the line (Redis errors propagate: the caller logs them)."""
    document = {**state.record(), "at": state.at or time.time()}
    key = ranker_key(state.line)
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, worker, json.dumps(document, sort_keys=True))
    pipe.expire(key, KEEP_S)
    pipe.execute()


def ranker_states(
    client: Any, lines: Sequence[tuple[str, str]], *, version: str | None = None, now: float | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Each line's workers' last tries as they are now, by line (one round trip): `lines` are (name, updated_at).
    Left out: tries at an earlier edit of a line, at another version than `version` (the store's current one, when
    given: tries at a version no longer served), and tries older than KEEP_S (a worker gone). Each line's by
    worker."""
    oldest = (time.time() if now is None else now) - KEEP_S
    pipe = client.pipeline(transaction=False)
    for line, _ in lines:
        pipe.hgetall(ranker_key(line))
    states: dict[str, list[dict[str, Any]]] = {}
    for (line, updated_at), found in zip(lines, pipe.execute() if lines else [], strict=True):
        states[line] = []
        for worker, raw in sorted(found.items()):
            state = _parsed(raw)
            if (
                state is not None
                and (state.get("line"), state.get("line_updated_at")) == (line, updated_at)
                and (version is None or state.get("version") == version)
                and state["at"] >= oldest
            ):
                states[line].append({"worker": worker.decode() if isinstance(worker, bytes) else str(worker), **state})
    return states


def _parsed(raw: Any) -> dict[str, Any] | None:
    """A stored state (its `at` a number), or None for one that is not (another writer's, a format to come)."""
    try:
        state = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(state, Mapping) or state.get("outcome") not in OUTCOMES:
        return None
    try:
        return {**state, "at": float(state.get("at") or 0)}
    except (TypeError, ValueError):
        return None
