"""The worker's consolidator: when it runs the child process, how, and what it tells (the child is faked here; the
integration test runs the real one)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from models.store.versions import point_current
from models.train.consolidation import BUSY_EXIT, consolidating, refinements_of
from worker.consolidator import BUSY, DONE, FAILED, NOTHING, ONE_THREAD, Consolidator


def version(store: Path, name: str, refinements: int) -> None:
    folder = store / name
    folder.mkdir(parents=True)
    head: dict[str, Any] = {"structure": "flat", "classifiers": []}
    if refinements:
        head["refinements"] = [{"product": f"p{i}"} for i in range(refinements)]
    (folder / "manifest.json").write_text(json.dumps({"format": 4, "name": "m", "version": name, "head": head}))
    point_current(store, name)


class Child:
    """subprocess.run as the consolidator calls it: records the call, moves current like the real command."""

    def __init__(self, store: Path, *, returncode: int = 0, writes: str | None = "v2") -> None:
        self.store, self.returncode, self.writes = store, returncode, writes
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((command, options))
        if self.returncode == 0 and self.writes:
            version(self.store, self.writes, 0)
        return subprocess.CompletedProcess(command, self.returncode, "version v2: 1 folded", "boom")


def consolidator(store: Path, child: Child, told: list[Any]) -> Consolidator:
    return Consolidator(
        store,
        keep_versions=7,
        reload_now=lambda: told.append("reload"),
        announce=lambda v, reason: told.append((v, reason)),
        run=child,
        env={"PATH": "/usr/bin"},
    )


def test_nothing_runs_without_refinements(tmp_path: Path) -> None:
    version(tmp_path, "v1", 0)
    child, told = Child(tmp_path), []
    assert consolidator(tmp_path, child, told).consolidate() == (NOTHING, 0.0)
    assert child.calls == [] and told == [] and refinements_of(tmp_path / "missing") == 0


def test_a_consolidation_runs_the_command_on_one_thread_and_tells_the_workers(tmp_path: Path) -> None:
    version(tmp_path, "v1", 2)
    assert refinements_of(tmp_path) == 2
    child, told = Child(tmp_path), []
    state, seconds = consolidator(tmp_path, child, told).consolidate()
    assert state == DONE and seconds >= 0
    ((command, options),) = child.calls
    assert command[-6:] == ["models", "--store", str(tmp_path), "--consolidate", "--keep", "7"]
    assert command[0].endswith("nice") and command[1:3] == ["-n", "10"]  # below the frames' threads
    assert options["env"]["PATH"] == "/usr/bin" and all(options["env"][k] == "1" for k in ONE_THREAD)
    assert options["timeout"] > 0 and "preexec_fn" not in options  # never fork-time code in a threaded worker
    assert told == ["reload", ("v2", "consolidation")]


def test_no_child_is_started_while_one_consolidates_the_store(tmp_path: Path) -> None:
    # every enrolment sends a consolidation and each comes back every 30 s while one runs: a child each time was a
    # Python start with numpy and scikit-learn only to find the lock taken
    version(tmp_path, "v1", 2)
    child, told = Child(tmp_path), []
    with consolidating(tmp_path):
        assert consolidator(tmp_path, child, told).consolidate() == (BUSY, 0.0)
    assert child.calls == [] and told == []
    assert consolidator(tmp_path, child, told).consolidate()[0] == DONE and len(child.calls) == 1


def test_a_failed_child_is_reported_and_tells_nobody(tmp_path: Path) -> None:
    version(tmp_path, "v1", 1)
    child, told = Child(tmp_path, returncode=3), []
    assert consolidator(tmp_path, child, told).consolidate()[0] == FAILED and told == []


def test_a_child_that_finds_another_consolidation_running_is_busy(tmp_path: Path) -> None:
    version(tmp_path, "v1", 1)
    child, told = Child(tmp_path, returncode=BUSY_EXIT), []
    assert consolidator(tmp_path, child, told).consolidate()[0] == BUSY and told == []


def test_a_child_that_writes_nothing_tells_nobody(tmp_path: Path) -> None:
    version(tmp_path, "v1", 1)
    child, told = Child(tmp_path, writes=None), []
    assert consolidator(tmp_path, child, told).consolidate()[0] == DONE and told == []


def test_rounds_go_on_while_current_holds_refinements_and_past_their_time_while_it_is_nearly_full(
    tmp_path: Path, monkeypatch: Any
) -> None:
    # enrolments kept coming while each round refitted: a child that left with a nearly full head made the next
    # ones find no consolidation running and refit whole (dropping the round they raced)
    from models.train import consolidation
    from models.train.enrolment import MAX_REFINEMENTS

    searched: list[bool] = []
    forced: list[bool] = []

    def rounds_with(held: list[int], written: list[str | None], carried: list[int] | None = None) -> list[Any]:
        """`held`: current's refinements before the first round and after each; `carried` by each round."""
        left, versions, came = iter(held), iter(written), iter(carried or [0] * len(written))
        searched.clear()
        forced.clear()

        def one_round(
            store: Path, *, keep_versions: int | None = None, search: bool = True, force: bool = False
        ) -> Any:
            searched.append(search)
            forced.append(force)
            return consolidation.Consolidated(next(versions), 1, next(came), 0.5, "r", search)

        monkeypatch.setattr(consolidation, "refinements_of", lambda store: next(left))
        monkeypatch.setattr(consolidation, "consolidate", one_round)
        return consolidation.consolidate_all(tmp_path)

    # a round current went away from (an enrolment refitted whole) writes nothing: the next starts from there
    assert len(rounds_with([5, 9, 40, MAX_REFINEMENTS, 3, 0, 99], ["v1", None, "v3", "v4", "v5", "v6"])) == 5
    # while enrolments keep coming (a round carried 8 or more, or the head is half full) the rounds are quick
    rounds_with([5, 20, MAX_REFINEMENTS, 40, 12, 3, 0], ["v1", "v2", "v3", "v4", "v5", "v6"], [20, 9, 7, 12, 3, 0])
    assert searched == [True, False, False, False, False, True] and not any(forced)
    rounds_with([5, 20, 0, 0], ["v1", "v2", "v3"], [20, 9, 0])  # it ended on a quick one: one more searches
    assert searched == [True, False, True] and forced == [False, False, True]
    held_then = iter([5, 0])  # a product of one photo: a round asked to search cannot, and none follows it
    monkeypatch.setattr(consolidation, "refinements_of", lambda store: next(held_then))
    monkeypatch.setattr(
        consolidation, "consolidate", lambda store, **options: consolidation.Consolidated("v1", 1, 0, 0.5, "r", False)
    )
    assert len(consolidation.consolidate_all(tmp_path)) == 1
    monkeypatch.setattr(consolidation, "MAX_ROUNDS_S", 0.0)  # past its time: it stops once the head has room
    half = MAX_REFINEMENTS // 2
    assert len(rounds_with([1, MAX_REFINEMENTS, half + 1, half, 9], ["v1", "v2", "v3", "v4"])) == 3
    monkeypatch.setattr(consolidation, "MAX_ROUNDS_S", 1e9)
    held = [MAX_REFINEMENTS] * 6
    assert len(rounds_with(held, ["v1", None, None, None, "v5"])) == 1 + consolidation.MAX_DROPPED  # kept moving
    recorded = json.loads((tmp_path / consolidation.PROGRESS_FILE).read_text())
    assert recorded["round_started_at"] is None and set(recorded["last_round_s"]) == {"search", "quick"}
    monkeypatch.setattr(  # a round with nothing to refit keeps the last round's seconds as the estimate
        consolidation, "consolidate", lambda store, **options: consolidation.Consolidated(None, 0, 0, 0.0, "")
    )
    consolidation.record_progress(tmp_path, None, last_round_s=123.0)
    monkeypatch.setattr(consolidation, "refinements_of", lambda store: 0)
    consolidation.consolidate_all(tmp_path)
    assert json.loads((tmp_path / consolidation.PROGRESS_FILE).read_text())["last_round_s"]["search"] == 123.0

    def failing(store: Path, **options: Any) -> consolidation.Consolidated:
        raise consolidation.TrainingError("a round that fails")

    monkeypatch.setattr(consolidation, "consolidate", failing)
    with pytest.raises(consolidation.TrainingError):
        consolidation.consolidate_all(tmp_path)
    assert json.loads((tmp_path / consolidation.PROGRESS_FILE).read_text())["round_started_at"] is None
    monkeypatch.setattr(consolidation, "MAX_RUN_S", 0.0)  # past its whole time: one round, however full the head
    assert len(rounds_with([MAX_REFINEMENTS] * 4, ["v1", "v2", "v3"])) == 1


def test_a_consolidation_that_stops_with_refinements_left_sends_itself_again(tmp_path: Path) -> None:
    # past its time a child stops with quick enrolments left, and the tasks their enrolments sent gave up meanwhile
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from worker.metrics import WorkerMetrics
    from worker.tasks import run_consolidation

    version(tmp_path, "v1", 3)
    sent: list[dict[str, Any]] = []
    task = SimpleNamespace(apply_async=lambda **options: sent.append(options))
    runtime = SimpleNamespace(
        consolidator=SimpleNamespace(store=tmp_path, consolidate=lambda: (DONE, 5.0)),
        metrics=WorkerMetrics(CollectorRegistry()),
        settings=SimpleNamespace(consolidate_after_s=10.0),
    )
    assert run_consolidation(task, runtime)["state"] == DONE  # type: ignore[arg-type]
    assert sent == [{"countdown": 10.0}]
    version(tmp_path, "v2", 0)  # all folded in
    assert run_consolidation(task, runtime)["state"] == DONE  # type: ignore[arg-type]
    assert sent == [{"countdown": 10.0}]
