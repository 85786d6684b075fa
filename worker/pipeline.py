"""A window of frames through the worker: claim all, read all, decode each, features in micro-batches, classify
together, publish every answer, then record what was answered, all in a handful of Redis round trips.

Each frame keeps its own fate: a frame that cannot be decoded gets its own error, a frame claimed by another
delivery or whose answer the broker did not take is retried alone; the rest of its window is answered.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from broker.codes import ErrorCode
from broker.contract import MAX_WINDOW_FRAMES, FrameRequest, Timings, encode, error_message, result_message
from models.answer.head import Decision
from models.answer.line_scope import LineScope, on_the_versions_scale
from models.answer.object_rule import FrameVote, ObjectRule
from models.bundle import ModelBundle
from models.errors import ImageError, LineError
from models.store.plant_lines import Line, Lines
from worker.batcher import Batched
from worker.budget import FrameBudget
from worker.errors import MalformedTask, SettleFailed
from worker.ledger import Claim, Settlement, ledger_key
from worker.line_filter import LineScopes
from worker.metrics import NO_CATEGORY, WorkerMetrics
from worker.object_grouping import Assigned, Unnamed
from worker.object_tracker import Decided, Seen, vote_of
from worker.publisher import DELIVERED, REFUSED, Answer
from worker.review_sink import FrameFeatures, NoReview

logger = logging.getLogger(__name__)

PUBLISH_RETRY_S = 2.0  # a frame whose answer the broker refused is tried again this much later
SETTLE_DELAYS_S = (0.1, 0.2, 0.4, 0.8, 1.5)  # recording answers is retried: an answer out but unrecorded would
# be sent twice, so a Redis restart in that moment is waited out (about 3 s, within the shortest claim)


class Ledger(Protocol):
    claim_ttl_s: int

    def claim_many(self, keys: Sequence[str]) -> list[Claim]: ...
    def settle(self, settlement: Settlement) -> None: ...


class Publisher(Protocol):
    def publish(self, answers: Sequence[Answer]) -> list[str]: ...


class FrameSource(Protocol):
    def get_many(self, keys: list[str]) -> list[FrameRequest | None]: ...


class FeatureBatcher(Protocol):
    def submit(self, item: Any) -> Any: ...


class ObjectFrames(Protocol):
    """worker.objects.Objects: frames into their objects, and the events of the objects they decided."""

    def track(
        self, seen: Sequence[Seen], model: ServedModel, moved_on: Sequence[str] = ()
    ) -> tuple[list[str], list[Decided]]: ...
    def group(self, frames: Sequence[Unnamed], model: ServedModel) -> Assigned | None: ...
    def publish(self, decided: Sequence[Decided]) -> None: ...


class ReviewQueue(Protocol):
    def offer(
        self, request: FrameRequest, result: Mapping[str, Any], features: FrameFeatures | None = None
    ) -> None: ...


NO_OBJECT_RULE = ObjectRule()  # a version without a novelty score: only frames its head answered vote


def _no_similarity() -> float | None:
    return None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    input_size: int


@dataclass(frozen=True, slots=True, eq=False)
class ServedModel:
    """One loaded model version: all a frame needs from decode to result. A frame keeps the version it started
    with to the end, so a reload never puts one version's features through another version's head."""

    info: ModelInfo
    prepare: Callable[[bytes], Any]  # decode (or, for a GPU decoder, check) one image
    features: Callable[[list[Any]], Sequence[np.ndarray | ImageError]]  # its engine, one batch of prepared images
    # its head and gallery: each row's decision, a row with a scope (its line's) answered among those products only
    classify: Callable[[np.ndarray, Sequence[LineScope | None] | None], list[Decision]]
    catalog: Mapping[str, Mapping[str, Any]]
    description: Mapping[str, str]  # name, version, backbone, engine, device: the partsight_model info labels
    categories: tuple[str, ...]
    transport_only: bool = False  # the `none` engine: no decode, no features; every frame answered unknown
    products: tuple[str, ...] = ()  # the head's products, in its order, and the category of each
    product_categories: tuple[str, ...] = ()
    feature_space: str = ""  # models.bundle.ModelBundle.feature_space ("": its features are not kept for review)
    same_product: Callable[[], float | None] = _no_similarity  # models.answer.same_product's, computed once
    object_rule: ObjectRule = NO_OBJECT_RULE  # its operating point for objects (frames of one part, one decision)
    bundle: ModelBundle | None = None  # the version as loaded: what an enrolment in this worker builds on


def features_by_model(items: list[tuple[ServedModel, Any]]) -> list[np.ndarray | ImageError]:
    """The micro-batcher's batch function: each prepared image goes through its own version's engine (a batch
    holds two versions only in the moment of a reload)."""
    results: list[np.ndarray | ImageError] = []
    start = 0
    while start < len(items):
        model = items[start][0]
        end = start + 1
        while end < len(items) and items[end][0] is model:
            end += 1
        results.extend(model.features([prepared for _, prepared in items[start:end]]))
        start = end
    return results


@dataclass(frozen=True, slots=True)
class FrameRef:
    """One frame a task names: its claim-check key (or the frame itself, inline), whom to answer, and the digest
    that tells a repeat of it from a new frame reusing its id. `task` is its entry as the task carried it."""

    device: str
    frame_id: str
    key: str | None
    digest: str
    inline: FrameRequest | None
    task: Mapping[str, Any]

    @property
    def ledger_key(self) -> str:
        return ledger_key(self.device, self.frame_id, self.digest)


def frame_ref(entry: Any) -> FrameRef:
    """One frame of a task, checked against the contract; MalformedTask if it cannot even be answered."""
    if not isinstance(entry, Mapping):
        raise MalformedTask(f"a frame must be a mapping, got {type(entry).__name__}")
    device, frame_id = entry.get("device"), entry.get("frame_id")
    if not isinstance(device, str) or not isinstance(frame_id, str):
        raise MalformedTask(f"a frame without a device and frame id: {sorted(map(str, entry))}")
    key, digest = entry.get("frame_key"), entry.get("digest") or ""
    if key is not None and not isinstance(key, str):
        raise MalformedTask("frame_key must be a string")
    if not isinstance(digest, str):
        raise MalformedTask("digest must be a string")
    inline = None
    if key is None:
        try:
            inline = FrameRequest.from_task_kwargs(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedTask(f"an inline frame that does not fit the contract: {exc!r}") from exc
    return FrameRef(device, frame_id, key, digest, inline, entry)


def task_entries(task: Mapping[str, Any]) -> list[Any]:
    """The frames a task carries: `frames` (a window) or the task itself (one frame, as older bridges sent)."""
    if "frames" not in task:
        return [task]
    frames = task["frames"]
    if not isinstance(frames, list):
        raise MalformedTask("frames must be a list")
    if len(frames) > MAX_WINDOW_FRAMES:
        raise MalformedTask(f"a task carries {len(frames)} frames, at most {MAX_WINDOW_FRAMES} are taken")
    return frames


@dataclass
class BatchOutcome:
    """Per frame: its status or error code, "duplicate", "busy" or "unpublished"; and what to retry when."""

    outcomes: list[str]
    retry: list[FrameRef] = field(default_factory=list)
    retry_after_s: float = 0.0


@dataclass
class _Frame:
    """One granted frame on its way through the window."""

    ref: FrameRef
    request: FrameRequest | None = None
    future: Any = None
    features: np.ndarray | None = None
    error: tuple[ErrorCode, str] | None = None
    decision: Decision | None = None
    line: Line | None = None  # the line it is answered on (named by the frame, or its device's)
    scope: LineScope | None = None  # how it was answered on that line (its ranker and threshold)
    object_name: str | None = None  # the object it belongs to: the one it names, or the worker's grouping's
    object_state: str | None = None  # its object's state after it (`pending`, `decided`), when it has an object
    result: dict[str, Any] | None = None  # the result sent, when a model looked at the frame (for review)
    kept_features: FrameFeatures | None = None  # its features, for the review queue to group look-alikes by
    decode_s: float = 0.0
    features_s: float = 0.0
    classify_s: float = 0.0  # its share of the window's one classify call
    queue_s: float = 0.0
    started: float = 0.0  # perf_counter when the worker began on it


def _on_the_versions_scale(vote: FrameVote, scope: LineScope | None, version_threshold: float | None) -> FrameVote:
    """A vote answered on a line at a novelty threshold of its own, its novelty put on the version's scale, where
    its object's operating point is (several agreeing frames compare their mean novelty with it)."""
    line_threshold = None if scope is None else scope.novelty_threshold
    if vote.novelty is None or line_threshold is None or version_threshold is None:
        return vote
    return dataclasses.replace(vote, novelty=on_the_versions_scale(vote.novelty, line_threshold, version_threshold))


class FramePipeline:
    def __init__(
        self,
        *,
        model: Callable[[], ServedModel],
        batcher: FeatureBatcher,
        ledger: Ledger,
        frames: FrameSource,
        publisher: Publisher,
        metrics: WorkerMetrics,
        max_payload_bytes: int,
        budget: FrameBudget | None = None,
        review: ReviewQueue | None = None,
        objects: ObjectFrames | None = None,
        lines: Callable[[], Lines] = Lines,
        line_scopes: LineScopes | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`lines`: the model store's lines as they are now (models.store.plant_lines.LinesView); `line_scopes`: how
        a frame on a line is answered (default: among its products by the head alone, no ranker of its own)."""
        self._budget = budget or FrameBudget(MAX_WINDOW_FRAMES)
        self._lines = lines
        self._scopes = line_scopes or LineScopes()
        self._review = review or NoReview()
        self._objects = objects
        self._sleep = sleep
        self._model = model  # the version served now; it changes when a new one is loaded
        self._batcher = batcher
        self._ledger = ledger
        self._frames = frames
        self._publisher = publisher
        self._metrics = metrics
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock
        self._stage = {  # label lookups once, not per frame
            name: metrics.stage_latency.labels(stage=name)
            for name in ("queue", "decode", "features", "classify", "publish", "total")
        }

    def handle(self, task: Mapping[str, Any]) -> BatchOutcome:
        """Answer every frame a task names. Frames that cannot even be addressed are counted and dropped.

        Redis errors before any answer went out propagate (the whole task is retried; its claims were given
        back). What must be retried alone comes back in the outcome. A retry that carries `settle` (answers a
        failed try sent but could not record) records it before claiming anything.
        """
        carried = task.get("settle")
        if isinstance(carried, Mapping):
            done, finished = carried.get("done") or [], carried.get("finished") or []
            self._ledger.settle(Settlement(done=[str(k) for k in done], finished=[str(k) for k in finished]))
        refs = []
        for entry in task_entries(task):
            try:
                refs.append(frame_ref(entry))
            except MalformedTask as exc:
                self._metrics.malformed_tasks.inc()
                logger.error("dropping a frame whose task entry does not fit the contract: %s", exc)
        return self.handle_frames(refs)

    def handle_frames(self, refs: list[FrameRef]) -> BatchOutcome:
        with self._budget.hold(len(refs)):  # claims are taken only once the frames can be worked on
            return self._handle_frames(refs)

    def _handle_frames(self, refs: list[FrameRef]) -> BatchOutcome:
        started = self._clock()
        claims = self._ledger.claim_many([ref.ledger_key for ref in refs])
        outcome = BatchOutcome(outcomes=[""] * len(refs))
        granted: list[int] = []
        finished: list[str] = []
        for index, (ref, claim) in enumerate(zip(refs, claims, strict=True)):
            if claim.granted:
                granted.append(index)
            elif claim.answered:
                outcome.outcomes[index] = "duplicate"
                self._metrics.duplicates.inc()
                logger.info("frame %s from %s was answered already; skipping the duplicate", ref.frame_id, ref.device)
                if ref.key:
                    finished.append(ref.key)
            else:
                outcome.outcomes[index] = "busy"
                outcome.retry.append(ref)
                outcome.retry_after_s = max(outcome.retry_after_s, claim.retry_after_s)
                logger.info(
                    "frame %s from %s is claimed by another delivery; retrying in %.1f s",
                    ref.frame_id,
                    ref.device,
                    claim.retry_after_s,
                )
        work = [_Frame(refs[index]) for index in granted]
        try:
            answers, decided = self._answer(work, started)
            publish_started = time.perf_counter()
            delivered = self._publisher.publish(answers)
            publish_s = time.perf_counter() - publish_started
        except BaseException:
            self._give_back(work)
            raise
        self._publish_events(decided)
        done: list[str] = []
        released: list[str] = []
        for index, frame, state in zip(granted, work, delivered, strict=True):
            if state == DELIVERED:
                done.append(frame.ref.ledger_key)
                if frame.ref.key:
                    finished.append(frame.ref.key)
                outcome.outcomes[index] = self._count(frame, publish_s)
                if frame.result is not None and frame.request is not None:  # queued, never written here
                    self._review.offer(frame.request, frame.result, frame.kept_features)
                continue
            self._metrics.publish_failures.inc()
            outcome.outcomes[index] = "unpublished"
            outcome.retry.append(frame.ref)
            if state == REFUSED:  # nothing is on its way: give the claim back, try again soon
                released.append(frame.ref.ledger_key)
                outcome.retry_after_s = max(outcome.retry_after_s, PUBLISH_RETRY_S)
            else:  # paho may still deliver it (its late PUBACK records it): try again once the claim lapses
                outcome.retry_after_s = max(outcome.retry_after_s, self._ledger.claim_ttl_s + 0.5)
        self._settle(Settlement(done=done, released=released, finished=finished), outcome)
        return outcome

    def _answer(self, work: list[_Frame], started: float) -> tuple[list[Answer], list[Decided]]:
        """Each granted frame's answer, in order (read, decode, features, classify, objects, encode), and the
        objects its frames decided."""
        keyed = [frame.ref.key for frame in work if frame.ref.key]
        stored = dict(zip(keyed, self._frames.get_many(keyed), strict=True)) if keyed else {}
        model, lines = self._model(), self._lines()
        for frame in work:
            frame.started = time.perf_counter()
            request = stored.get(frame.ref.key) if frame.ref.key else frame.ref.inline
            if request is None:  # the data expired (or was unreadable) before any worker read it
                frame.request = FrameRequest(frame.ref.device, frame.ref.frame_id, b"", started)
                frame.error = (ErrorCode.INTERNAL, "frame data expired or unreadable before it was answered")
                continue
            frame.request = request
            if self._on_its_line(frame, request, lines):
                self._prepare(model, frame, request)
        for frame in work:
            if frame.future is not None:
                self._collect(frame)
        self._classify(model, [frame for frame in work if frame.error is None])
        decided = self._track_objects(model, work)
        answers = []
        completed_at = self._clock()
        for frame in work:
            assert frame.request is not None  # set for every frame in the first loop
            late = self._late_delivery(frame.ref)
            if frame.error is None:
                try:
                    result = self._result(model, frame, started, completed_at)
                    answers.append(Answer(frame.request, encode(result), False, late))
                    if not model.transport_only:  # it looked at nothing: nothing to review
                        frame.result = result
                        if model.feature_space and frame.features is not None:
                            frame.kept_features = FrameFeatures(model.feature_space, frame.features, model.same_product)
                    continue
                except Exception as exc:  # one frame's result that cannot be encoded fails alone
                    logger.exception("the result of frame %s from %s failed", frame.ref.frame_id, frame.ref.device)
                    frame.error = (ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
            code, text = frame.error
            logger.info("frame %s from %s: %s (%s)", frame.ref.frame_id, frame.ref.device, code, text)
            message = error_message(frame.ref.device, frame.ref.frame_id, code, text, completed_at)
            answers.append(Answer(frame.request, encode(message), True, late))
        return answers, decided

    def _publish_events(self, decided: list[Decided]) -> None:
        """The events of the objects this window decided, after the frames' own answers; never fails the window
        (an event not handed to the broker now is in the outbox, which a sweeper publishes again)."""
        if not decided or self._objects is None:
            return
        try:
            self._objects.publish(decided)
        except Exception as exc:
            logger.warning("the events of %d object(s) wait in the outbox: %s", len(decided), exc)

    def _track_objects(self, model: ServedModel, work: list[_Frame]) -> list[Decided]:
        """Each frame of a named object into it (a frame that failed counts, without a vote, so its object still
        ends); Redis errors propagate, as the ledger's do: the window is tried again, and counts each frame once."""
        if self._objects is None:
            return []
        moved_on = self._group_unnamed(model, work)
        named = [frame for frame in work if frame.object_name is not None]
        if not named:
            return []
        seen = []
        for frame in named:
            request = frame.request
            assert request is not None and frame.object_name is not None
            vote = vote_of(request.frame_id, request.received_at, frame.decision if frame.error is None else None)
            vote = _on_the_versions_scale(vote, frame.scope, model.object_rule.single_threshold)
            line = frame.line.name if frame.line is not None else request.line
            seen.append(Seen(request.device, frame.object_name, request.object_end, line, vote, frame.ref.digest))
        states, decided = self._objects.track(seen, model, moved_on)
        for frame, state in zip(named, states, strict=True):
            frame.object_state = state
        return decided

    def _group_unnamed(self, model: ServedModel, work: list[_Frame]) -> list[str]:
        """Each frame's object: the one it names, else (answered frames with features) the one the worker's
        grouping puts it in; the grouped objects their devices moved on from."""
        assert self._objects is not None
        unnamed: list[tuple[_Frame, Unnamed]] = []
        for frame in work:
            request = frame.request
            if request is None or not request.image:
                continue
            if request.object_name is not None:
                frame.object_name = request.object_name
            elif frame.error is None and frame.features is not None:
                unnamed.append(
                    (frame, Unnamed(request.device, request.received_at, frame.features, frame.ref.ledger_key))
                )
        assigned = self._objects.group([item for _, item in unnamed], model) if unnamed else None
        if assigned is None:
            return []
        for (frame, _), name in zip(unnamed, assigned.names, strict=True):
            frame.object_name = name
        return assigned.moved_on

    def _late_delivery(self, ref: FrameRef) -> Callable[[], None]:
        """What runs (in paho's network thread) when an answer's PUBACK comes after the window stopped waiting:
        the frame is recorded as answered, so its retry skips it."""

        def record() -> None:
            try:
                self._ledger.settle(Settlement(done=[ref.ledger_key], finished=[ref.key] if ref.key else []))
            except Exception:
                logger.exception("could not record the late answer of frame %s from %s", ref.frame_id, ref.device)

        return record

    @staticmethod
    def _on_its_line(frame: _Frame, request: FrameRequest, lines: Lines) -> bool:
        """Find the frame's line; False (the frame refused `unknown_line`) when it names no line there is."""
        try:
            frame.line = lines.line_for(request.device, request.line)
        except LineError as exc:
            frame.error = (ErrorCode.UNKNOWN_LINE, exc.message)
            return False
        return True

    def _prepare(self, model: ServedModel, frame: _Frame, request: FrameRequest) -> None:
        if len(request.image) > self._max_payload_bytes:
            text = f"image is {len(request.image)} bytes, the limit is {self._max_payload_bytes}"
            frame.error = (ErrorCode.PAYLOAD_TOO_LARGE, text)
            return
        if model.transport_only:
            return
        try:
            prepared = model.prepare(request.image)  # decoded, or only checked for a GPU decoder
            frame.decode_s = time.perf_counter() - frame.started
            frame.future = self._batcher.submit((model, prepared))
        except ImageError as exc:
            frame.error = (ErrorCode(exc.code), exc.message)
        except Exception as exc:
            logger.exception("frame %s from %s failed inside the worker", frame.ref.frame_id, frame.ref.device)
            frame.error = (ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")

    def _collect(self, frame: _Frame) -> None:
        submitted = frame.started + frame.decode_s
        try:
            batched: Batched[np.ndarray | ImageError] = frame.future.result()
        except Exception as exc:
            logger.exception("features of frame %s from %s failed", frame.ref.frame_id, frame.ref.device)
            frame.error = (ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
            return
        frame.features_s = time.perf_counter() - submitted
        if isinstance(batched.value, ImageError):  # a frame only the batch's decoder could refuse
            frame.error = (ErrorCode(batched.value.code), batched.value.message)
        else:
            frame.features = batched.value

    def _classify(self, model: ServedModel, frames: list[_Frame]) -> None:
        if not frames:
            return
        t0 = time.perf_counter()
        try:
            if model.transport_only:
                rows = np.zeros((len(frames), 0), dtype=np.float32)
            else:
                rows = np.stack([frame.features for frame in frames])  # type: ignore[misc]
            scopes = [
                self._scopes.scope(
                    model.info.version, model.products, model.product_categories, frame.line, model.bundle
                )
                for frame in frames
            ]
            decisions = model.classify(rows, scopes)
            for frame, scope in zip(frames, scopes, strict=True):
                frame.scope = scope
        except Exception as exc:
            logger.exception("classifying %d frame(s) failed", len(frames))
            for frame in frames:
                frame.error = (ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
            return
        classify_s = (time.perf_counter() - t0) / len(frames)
        for frame, decision in zip(frames, decisions, strict=True):
            frame.decision = decision
            frame.classify_s = classify_s

    def _result(self, model: ServedModel, frame: _Frame, started: float, completed_at: float) -> dict[str, Any]:
        request, decision = frame.request, frame.decision
        assert request is not None and decision is not None
        frame.queue_s = max(0.0, started - request.received_at)
        work_s = frame.decode_s + frame.features_s + frame.classify_s
        timings = Timings(
            queue=frame.queue_s * 1000,
            decode=frame.decode_s * 1000,
            features=frame.features_s * 1000,
            classify=frame.classify_s * 1000,
            total=(frame.queue_s + work_s) * 1000,
        )
        return result_message(
            request=request,
            status=decision.status,
            product=decision.product,
            category=decision.category,
            confidence=decision.confidence,
            category_confidence=decision.category_confidence,
            top_k=decision.top_k,
            novelty=decision.novelty,
            matches=list(decision.matches),
            catalog=model.catalog.get(decision.product) if decision.product else None,
            model_name=model.info.name,
            model_version=model.info.version,
            timings=timings,
            completed_at=completed_at,
            line=frame.line.name if frame.line is not None else None,
            object_name=frame.object_name,
            object_state=frame.object_state,
        )

    def _count(self, frame: _Frame, publish_s: float) -> str:
        """Metrics of a frame whose answer the broker took; returns its status or error code."""
        if frame.error is not None:
            code = str(frame.error[0])
            self._metrics.errors.labels(code=code).inc()
            return code
        decision = frame.decision
        assert decision is not None
        stage = self._stage
        stage["queue"].observe(frame.queue_s)
        stage["decode"].observe(frame.decode_s)
        stage["features"].observe(frame.features_s)
        stage["classify"].observe(frame.classify_s)
        stage["publish"].observe(publish_s)
        stage["total"].observe(frame.queue_s + frame.decode_s + frame.features_s + frame.classify_s + publish_s)
        self._metrics.results.labels(status=decision.status, category=decision.category or NO_CATEGORY).inc()
        if decision.novelty is not None:
            self._metrics.novelty.observe(decision.novelty)
            if decision.novel:
                self._metrics.novel.inc()
        return decision.status

    def _give_back(self, work: list[_Frame]) -> None:
        """Release the claims of a window that failed before its answers went out, so its retry is not kept
        waiting for them to lapse (best effort: with Redis away they lapse on their own)."""
        if not work:
            return
        try:
            self._ledger.settle(Settlement(released=[frame.ref.ledger_key for frame in work]))
        except Exception as exc:
            logger.warning("could not give back %d claim(s): %s; they lapse on their own", len(work), exc)

    def _settle(self, settlement: Settlement, outcome: BatchOutcome) -> None:
        """Record the window's end; answers are out, so a Redis outage is waited out a few seconds, and then the
        task's retry carries what to record (written before its frames are claimed again)."""
        for delay in (*SETTLE_DELAYS_S, None):
            try:
                self._ledger.settle(settlement)
                return
            except Exception as exc:
                if delay is None:
                    logger.error("could not record %d answered frame(s): %s", len(settlement.done), exc)
                    raise SettleFailed(
                        list(settlement.done),
                        list(settlement.finished),
                        outcome.retry,
                        max(outcome.retry_after_s, PUBLISH_RETRY_S),
                    ) from exc
                logger.warning("recording %d answered frame(s) failed (%s); trying again", len(settlement.done), exc)
                self._sleep(delay)
