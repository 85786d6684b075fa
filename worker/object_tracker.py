"""Frames of one physical part to one decision: each frame's vote into its object, the rule asked whether the
object is decided, the decision claimed once, and its event handed to the publisher.

A frame's object is the name it carries (MQTT 5 user property `object`) or the one the worker's grouping gave it
(worker.object_grouping). The object is decided early when `agree` of its frames agree
(models.answer.object_rule), or when it ends: its `object_end` frame, its `max_frames`-th frame, for a grouped
object its device's next frame starting another object (once every frame put in it has voted), or the gap after
its last frame (closed by `close_due`, which every worker's sweeper runs, so a device that went quiet, or a worker
killed mid-object, still gets its event).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from broker.contract import encode, object_event
from broker.framestore import VOTE_PREFIX, frame_field, object_key
from models.answer.head import Decision
from models.answer.object_rule import (
    DEFAULT_AGREE,
    DEFAULT_MAX_FRAMES,
    FrameVote,
    ObjectAnswer,
    ObjectRule,
    best_answer,
    early_answer,
)
from worker.object_book import (
    ALREADY_DECIDED,
    CHANGED,
    CLAIMED,
    DECIDED,
    PENDING,
    Append,
    Claim,
    ObjectBook,
    ObjectState,
)

logger = logging.getLogger(__name__)

AUTO_NAME_PREFIX = "auto-"  # worker.object_grouping's names
AUTO_KEEP_S = 600  # a grouped object's decision, and each grouped frame's object, are remembered this long
CLAIM_TRIES = 5  # a claim beaten by a frame appended meanwhile reads and decides again, this often at most
AGREED, ENDED, MAX_FRAMES, NEXT, GAP = "agreed", "object_end", "max_frames", "next_object", "gap"


@dataclass(frozen=True, slots=True)
class ObjectSettings:
    gap_s: float = 0.7  # PARTSIGHT_OBJECT_GAP_MS
    agree: int = DEFAULT_AGREE  # PARTSIGHT_OBJECT_AGREE
    max_frames: int = DEFAULT_MAX_FRAMES  # PARTSIGHT_OBJECT_MAX_FRAMES
    keep_s: int = 3600  # a decided object is remembered this long: its late frames are answered `decided`
    lease_s: float = 30.0  # an event not confirmed published within this is published again by a sweeper
    auto: bool = True  # PARTSIGHT_OBJECT_AUTO: frames without `object` are grouped by the worker (off: no object)


@dataclass(frozen=True, slots=True)
class Seen:
    """One answered frame of an object, as the pipeline tells the tracker."""

    device: str
    name: str
    ended: bool
    line: str | None
    vote: FrameVote
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Decided:
    """An object decided by this caller: its event, to publish on the device's event topic."""

    key: str
    device: str
    event: dict[str, Any]
    payload: bytes


def vote_of(frame_id: str, received_at: float, decision: Decision | None) -> FrameVote:
    """A frame's vote: its head's best product, whether its own answer named it, and its novelty."""
    if decision is None or not decision.top_k:
        return FrameVote(frame_id, received_at)
    best = decision.top_k[0]
    product = str(best["product"])
    return FrameVote(
        frame_id,
        received_at,
        product,
        str(best.get("category")) if best.get("category") is not None else None,
        float(best.get("score", 0.0)),
        decision.novelty,
        decision.product == product,
    )


class ObjectTracker:
    def __init__(
        self,
        book: ObjectBook,
        settings: ObjectSettings,
        *,
        on_decided: Callable[[Decided, str], None] = lambda decided, reason: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`on_decided(decided, reason)` runs once for each object this tracker decides (its metrics)."""
        self._book = book
        self.settings = settings
        self._on_decided = on_decided
        self._clock = clock

    def track(self, seen: Sequence[Seen], model: Any, moved_on: Sequence[str] = ()) -> tuple[list[str], list[Decided]]:
        """Each frame's object state (`pending` or `decided`) after it, and the objects this call decided: theirs,
        and those of `moved_on` (keys of grouped objects their device moved on from) whose frames have all voted."""
        keys = [object_key(item.device, item.name) for item in seen]
        appends = [
            Append(
                key,
                item.device,
                item.name,
                _vote_field(item),
                encode(item.vote.record()).decode(),
                item.line,
                item.ended,
            )
            for key, item in zip(keys, seen, strict=True)
        ]
        in_window = set(keys)
        left = [key for key in dict.fromkeys(moved_on) if key not in in_window]
        states, found = self._book.append_and_read(appends, self.settings.gap_s, left)  # one round trip
        last: dict[str, ObjectState] = {}
        for state in states:
            last[state.key] = state  # the state after the window's last frame of each object
        last.update((item.key, item) for item in found if item is not None and item.state == PENDING)
        outcome = self._decide_many(list(last.values()), model, final=False)
        decided = [result for result in outcome.values() if isinstance(result, Decided)]
        return [
            DECIDED if state.state != PENDING or isinstance(outcome[key], Decided) else str(outcome[key])
            for key, state in zip(keys, states, strict=True)
        ], decided

    def close_due(self, model: Any, limit: int = 100) -> list[Decided]:
        """Decide every open object whose gap has passed, with its best answer or unknown (their claims in one
        round trip). One object that fails is logged and left for the next sweep; the others are decided."""
        now = self._book.now()
        keys = self._book.due(now, limit)
        ready: list[ObjectState] = []
        for key, state in zip(keys, self._book.read_many(keys), strict=True):
            try:
                if state is None or state.state == DECIDED:
                    self._book.drop_open(key)
                elif self._book.still_coming(state):  # again a gap later: the objects due after it go first
                    self._book.postpone(key, now + self.settings.gap_s)
                else:
                    ready.append(state)
            except Exception as exc:
                logger.warning("could not close object %s (%s); the next sweep tries again", key, exc)
        outcome = self._decide_many(ready, model, final=True)
        return [result for result in outcome.values() if isinstance(result, Decided)]

    def _decide_many(self, states: Sequence[ObjectState], model: Any, *, final: bool) -> dict[str, Decided | str]:
        """Claim each object's decision where the rule gives one, all in one round trip: by object key, the Decided
        this caller publishes, or the object's state (`pending`; `decided` when another caller decided it). An
        object a frame joined meanwhile is read and decided again, CLAIM_TRIES times at most."""
        outcome: dict[str, Decided | str] = {}
        todo: list[tuple[str, ObjectState | None]] = [(state.key, state) for state in states]
        for attempt in range(CLAIM_TRIES):
            try:
                asks, replies = self._claim_round(todo, model, outcome, final=final)
            except Exception as exc:
                if attempt == 0:
                    raise  # Redis away: the window is tried again (a sweep, later)
                logger.warning("objects joined meanwhile are left for the next frame or sweep (%s)", exc)
                break  # the objects already claimed are published
            again = []
            for ask, reply in zip(asks, replies, strict=True):
                key = ask.claim.key
                if reply == CLAIMED:
                    decided = Decided(key, ask.event["device"], ask.event, ask.payload)
                    self._on_decided(decided, ask.reason)
                    outcome[key] = decided
                elif reply == CHANGED:
                    again.append(key)
                else:
                    outcome[key] = DECIDED if reply == ALREADY_DECIDED else PENDING
            todo = [(key, None) for key in again]  # read again in the next round
            if not todo:
                break
        for key, _ in todo:
            outcome.setdefault(key, PENDING)  # frames keep coming: the next frame (or the sweep) decides it
        return outcome

    def _claim_round(
        self,
        todo: list[tuple[str, ObjectState | None]],
        model: Any,
        outcome: dict[str, Decided | str],
        *,
        final: bool,
    ) -> tuple[list[_Ask], list[int]]:
        """One round: the objects read again where a round before was beaten (state None), each one's claim
        where the rule decides it (the others' states into `outcome`), all claimed in one round trip."""
        stale = [key for key, state in todo if state is None]
        fresh = dict(zip(stale, self._book.read_many(stale), strict=True))
        asks: list[_Ask] = []
        for key, state in todo:
            ask = self._ask(state if state is not None else fresh[key], model, final=final)
            if isinstance(ask, _Ask):
                asks.append(ask)
            else:
                outcome[key] = ask
        return asks, self._book.claim_many([ask.claim for ask in asks], lease_s=self.settings.lease_s)

    def _ask(self, state: ObjectState | None, model: Any, *, final: bool) -> _Ask | str:
        """The claim of the object's decision where the rule gives one; otherwise its state (`pending`, or
        `decided` by another caller). An object whose event cannot be made is left pending (and logged)."""
        if state is None:
            return PENDING  # expired: nothing left to decide
        if state.state == DECIDED:
            return DECIDED
        votes = votes_of(state)
        chosen = self._answer(state, votes, model, final=final)  # Redis errors propagate (still_coming)
        if chosen is None:
            return PENDING
        answer, reason = chosen
        try:
            now = self._clock()
            event = object_event(
                device=state.fields.get("device", ""),
                name=state.fields.get("object", ""),
                product=answer.product,
                category=answer.category,
                confidence=answer.confidence,
                novelty=answer.novelty,
                agreeing=answer.agreeing,
                frame_ids=[vote.frame_id for vote in votes],
                first_received_at=min((vote.received_at for vote in votes), default=now),
                reason=reason,
                catalog=model.catalog.get(answer.product) if answer.product else None,
                model_name=model.info.name,
                model_version=model.info.version,
                line=state.fields.get("line"),
                decided_at=now,
            )
            payload = encode(event)
        except Exception as exc:
            logger.warning("could not decide object %s (%s); the next frame or sweep tries again", state.key, exc)
            return PENDING
        return _Ask(Claim(state.key, payload.decode(), state.frames, self._keep_s(event)), event, payload, reason)

    def _keep_s(self, event: dict[str, Any]) -> int:
        """How long a decided object is remembered: a grouped one only as long as its frames' retries are."""
        grouped = str(event.get("object", "")).startswith(AUTO_NAME_PREFIX)
        return min(self.settings.keep_s, AUTO_KEEP_S) if grouped else self.settings.keep_s

    def _answer(
        self, state: ObjectState, votes: list[FrameVote], model: Any, *, final: bool
    ) -> tuple[ObjectAnswer, str] | None:
        rule: ObjectRule = replace(model.object_rule, agree=self.settings.agree, max_frames=self.settings.max_frames)
        if final:
            return best_answer(votes, rule), GAP
        if state.fields.get("ended") == "1":  # once every frame admitted before its end has voted
            return None if self._book.still_coming(state) else (best_answer(votes, rule), ENDED)
        if state.frames >= self.settings.max_frames:
            return best_answer(votes, rule), MAX_FRAMES
        early = early_answer(votes, rule)
        if early is not None:
            return early, AGREED
        return (best_answer(votes, rule), NEXT) if _moved_on_from(state) else None


@dataclass(frozen=True, slots=True)
class _Ask:
    claim: Claim
    event: dict[str, Any]
    payload: bytes
    reason: str


def votes_of(state: ObjectState) -> list[FrameVote]:
    """The object's frames in the order they were received; a vote that cannot be read is left out."""
    votes = []
    for field, raw in state.fields.items():
        if not field.startswith(VOTE_PREFIX):
            continue
        try:
            votes.append(FrameVote.from_record(json.loads(raw)))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("a frame's vote in object %s cannot be read (%s); left out", state.key, exc)
    return sorted(votes, key=lambda vote: (vote.received_at, vote.frame_id))


def _moved_on_from(state: ObjectState) -> bool:
    """A grouped object its device moved on from, every frame put in it voted (worker.object_grouping's `next`
    and `joined`; an object without `joined`, grouped by a worker of a release before it, waits for its gap)."""
    try:
        joined = int(state.fields["joined"])
    except (KeyError, ValueError):
        return False
    return state.fields.get("next") == "1" and state.frames >= max(joined, 1)


def _vote_field(item: Seen) -> str:
    return VOTE_PREFIX + frame_field(item.vote.frame_id, item.digest)
