"""Objects, the pure parts: the rule that decides an object from its frames' votes, its calibration on folds, the
frame's `object` and `object_end` on the wire, and the operating point kept in the novelty record."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from broker.admission import Inbound, admit
from broker.codes import ErrorCode
from broker.contract import FrameRequest, object_event
from broker.errors import FrameRejected, SettingsError
from models.answer.head import Decision
from models.answer.novelty import NoveltyModel, with_operating_point
from models.answer.object_rule import FrameVote, ObjectRule, best_answer, early_answer
from models.errors import InvalidModel
from models.train.object_calibration import calibrate_objects
from worker.object_tracker import vote_of
from worker.settings import WorkerSettings

RULE = ObjectRule(single_threshold=0.5, more_thresholds=(0.6, 0.7))


def votes(*pairs: tuple[str | None, float]) -> list[FrameVote]:
    return [FrameVote(f"f{i}", float(i), product, "tools", 0.8, novelty) for i, (product, novelty) in enumerate(pairs)]


def test_the_threshold_follows_the_count_of_agreeing_frames() -> None:
    assert [RULE.threshold(m) for m in (1, 2, 3, 4, 9)] == [0.5, 0.6, 0.7, 0.7, 0.7]
    assert ObjectRule(single_threshold=0.4).threshold(5) == 0.4  # a version trained before objects
    assert ObjectRule().threshold(3) is None


def test_three_agreeing_frames_under_their_threshold_decide_early() -> None:
    answer = early_answer(votes(("drill", 0.65), ("drill", 0.6), ("drill", 0.7)), RULE)
    assert answer is not None and answer.product == "drill" and answer.agreeing == 3 and answer.frames == 3
    assert answer.novelty == pytest.approx(0.65) and answer.category == "tools"
    # one frame alone at 0.65 would be refused: the single-frame threshold is 0.5
    assert best_answer(votes(("drill", 0.65)), RULE).product is None


def test_two_agreeing_frames_wait_and_end_with_their_answer() -> None:
    two = votes(("drill", 0.3), ("drill", 0.4))
    assert early_answer(two, RULE) is None
    assert best_answer(two, RULE).product == "drill"


def test_frames_that_disagree_or_look_new_end_unknown() -> None:
    split = best_answer(votes(("drill", 0.1), ("saw", 0.1)), RULE)
    assert split.product is None and split.agreeing == 1 and split.category == "tools"
    novel = best_answer(votes(("drill", 0.75), ("drill", 0.8), ("drill", 0.9)), RULE)
    assert novel.product is None and novel.agreeing == 3
    assert best_answer([], RULE).product is None


def test_a_majority_wins_over_a_dissenting_frame() -> None:
    answer = best_answer(votes(("drill", 0.2), ("saw", 0.1), ("drill", 0.3)), RULE)
    assert answer.product == "drill" and answer.agreeing == 2 and answer.frames == 3


def test_frames_that_failed_count_without_a_vote() -> None:
    failed = [FrameVote("f9", 9.0)]
    answer = best_answer(votes(("drill", 0.2)) + failed, RULE)
    assert answer.product is None and answer.frames == 2  # one vote of two frames is no majority


def test_without_a_novelty_score_only_recognised_frames_vote() -> None:
    rule = ObjectRule()
    refused = [FrameVote(f"f{i}", float(i), "drill", "tools", 0.4, None, recognized=False) for i in range(3)]
    assert best_answer(refused, rule).product is None
    named = [FrameVote(f"f{i}", float(i), "drill", "tools", 0.9, None, recognized=True) for i in range(3)]
    assert early_answer(named, rule) is not None


def test_a_vote_survives_its_record() -> None:
    vote = FrameVote("cam-1-17", 1234.5, "drill", "tools", 0.912345678, 0.25, True)
    assert FrameVote.from_record(vote.record()) == FrameVote("cam-1-17", 1234.5, "drill", "tools", 0.912346, 0.25, True)
    with pytest.raises(KeyError):
        FrameVote.from_record({"p": "drill"})


def test_a_frame_votes_for_its_heads_best_product_even_when_refused() -> None:
    top = [
        {"product": "drill", "category": "tools", "score": 0.55},
        {"product": "saw", "category": "tools", "score": 0.3},
    ]
    refused = Decision("unknown", None, "tools", 0.55, 0.9, top, novelty=0.8, novel=True)
    vote = vote_of("f1", 10.0, refused)
    assert (vote.product, vote.score, vote.novelty, vote.recognized) == ("drill", 0.55, 0.8, False)
    assert vote_of("f2", 11.0, Decision("recognized", "drill", "tools", 0.9, 0.95, top, novelty=0.1)).recognized
    assert vote_of("f3", 12.0, None).product is None


def test_calibration_on_folds_refuses_the_never_seen_objects_it_is_asked_to() -> None:
    rng = np.random.default_rng(0)
    products = np.repeat([f"p{i}" for i in range(20)], 30)
    unseen = np.isin(products, [f"p{i}" for i in range(10)])
    # never-seen frames score higher on average, with noise a mean of several frames smooths
    scores = np.clip(np.where(unseen, 0.7, 0.2) + rng.normal(0, 0.2, len(products)), 0, 1)
    predicted = np.where(unseen, "p15", products)
    single = 0.45
    calibration = calibrate_objects(scores, unseen, products, predicted, single, max_frames=5, seed=1)
    assert len(calibration.more_thresholds) == 4
    rule = ObjectRule(single_threshold=single, more_thresholds=calibration.more_thresholds)
    folds = calibration.report["folds"]
    assert folds["unseen"]["unknown"] >= 0.95  # what it was calibrated for (within the draws' noise)
    assert folds["known"]["right"] > 0.9 and folds["known"]["wrong"] == 0.0
    # the mean of three never-seen frames is steadier than one: three may take a looser threshold than one
    assert rule.threshold(3) > single
    assert calibration.report["thresholds"][0] == single


def test_calibration_without_enough_hidden_products_keeps_the_single_threshold() -> None:
    products = np.array(["a"] * 5 + ["b"] * 5)
    unseen = products == "a"
    calibration = calibrate_objects(np.full(10, 0.4), unseen, products, products, 0.45, max_frames=4)
    assert calibration.more_thresholds == (0.45, 0.45, 0.45)


def test_the_object_operating_point_rides_in_the_novelty_record() -> None:
    model = NoveltyModel(np.zeros(5), 0.0, 0.5, 0.8, (0.55, 0.6))
    again = NoveltyModel.from_record(model.record())
    assert again.object_thresholds == (0.55, 0.6) and again.threshold == 0.5
    older = {key: value for key, value in model.record().items() if key != "object_thresholds"}
    assert NoveltyModel.from_record(older).object_thresholds == ()
    with pytest.raises(InvalidModel):
        NoveltyModel.from_record({**model.record(), "object_thresholds": [1.5]})
    moved = with_operating_point(model, np.array([0.2, 0.9]), np.array([False, True]), 0.9)
    assert moved.object_thresholds == (0.55, 0.6)


def inbound(**properties: str) -> Inbound:
    return Inbound("p/cam/frame", b"\xff\xd8 not checked here", {"frame_id": "f1", **properties})


def test_a_frame_carries_its_object_to_the_worker() -> None:
    request = admit(inbound(object="part-0042", object_end="1"), device="cam", max_payload_bytes=1000, received_at=1.0)
    assert (request.object_name, request.object_end) == ("part-0042", True)
    again = FrameRequest.from_task_kwargs(request.to_task_kwargs())
    assert (again.object_name, again.object_end) == ("part-0042", True)
    plain = admit(inbound(), device="cam", max_payload_bytes=1000, received_at=1.0)
    assert plain.object_name is None and "object" not in plain.to_task_kwargs()  # what an earlier worker reads


@pytest.mark.parametrize(
    "properties",
    [{"object": ""}, {"object": "x" * 65}, {"object": "part 1"}, {"object": "a/b"}, {"object_end": "1"},
     {"object": "p1", "object_end": "yes"}],
)  # fmt: skip
def test_a_malformed_object_is_refused_as_bad_metadata(properties: dict[str, str]) -> None:
    with pytest.raises(FrameRejected) as refused:
        admit(inbound(**properties), device="cam", max_payload_bytes=1000, received_at=1.0)
    assert refused.value.code == ErrorCode.BAD_METADATA


def test_an_object_event_names_its_frames_and_its_decision() -> None:
    event = object_event(
        device="cam",
        name="part-1",
        product=None,
        category="tools",
        confidence=0.41,
        novelty=0.77,
        agreeing=2,
        frame_ids=["a", "b", "c"],
        first_received_at=100.0,
        reason="gap",
        catalog=None,
        model_name="m",
        model_version="v1",
        line="press-3",
        decided_at=101.25,
    )
    assert event["kind"] == "object" and event["product"] == "unknown" and event["status"] == "unknown"
    assert event["frames"] == 3 and event["frame_ids"] == ["a", "b", "c"] and event["decision_seconds"] == 1.25
    assert event["first_received_at"].endswith("Z") and event["line"] == "press-3"


def test_one_frame_decides_no_more_than_its_own_answer() -> None:
    refused = FrameVote("f1", 1.0, "drill", "tools", 0.3, 0.1, recognized=False)  # under the confidence threshold
    assert best_answer([refused], RULE).product is None
    assert best_answer([replace(refused, recognized=True)], RULE).product == "drill"


def test_object_settings_are_read_once_and_checked() -> None:
    settings = WorkerSettings.from_env({"PARTSIGHT_OBJECT_GAP_MS": "500", "PARTSIGHT_PUBLISH_TIMEOUT_S": "4"})
    objects = settings.objects
    assert (objects.gap_s, objects.agree, objects.max_frames, objects.auto) == (0.5, 3, 10, True)
    assert objects.lease_s == 18.0  # twice the publish timeout and 10 s: never while the first try still waits
    assert not WorkerSettings.from_env({"PARTSIGHT_OBJECT_AUTO": "0"}).objects.auto
    for wrong in (
        {"PARTSIGHT_OBJECT_AGREE": "5", "PARTSIGHT_OBJECT_MAX_FRAMES": "4"},
        {"PARTSIGHT_OBJECT_KEEP_S": "10"},
        {"PARTSIGHT_OBJECT_GAP_MS": "0"},
        {"PARTSIGHT_OBJECT_AUTO": "maybe"},
    ):
        with pytest.raises(SettingsError):
            WorkerSettings.from_env(wrong)
