from __future__ import annotations

import pytest

from broker.errors import TopicError
from broker.topics import Topics


def test_topics_are_built_under_the_prefix() -> None:
    topics = Topics("plant-7/partsight")
    assert topics.frame("cam-1") == "plant-7/partsight/cam-1/frame"
    assert topics.result("cam-1") == "plant-7/partsight/cam-1/result"
    assert topics.error("cam-1") == "plant-7/partsight/cam-1/error"
    assert topics.enrol("cam-1") == "plant-7/partsight/cam-1/enrol"
    assert topics.status("bridge", "gw-2") == "plant-7/partsight/status/bridge/gw-2"


def test_frame_topic_round_trips_to_its_device() -> None:
    topics = Topics()
    for device in ("cam-1", "línea-3", "a.b:c", "x" * 128):
        assert topics.device_of_frame_topic(topics.frame(device)) == device
        assert topics.device_of_enrol_topic(topics.enrol(device)) == device


@pytest.mark.parametrize(
    "topic",
    [
        "partsight/cam/result",
        "other/cam/frame",
        "partsight/a/b/frame",
        "partsight//frame",
        "partsight/frame",
        "partsight/status/frame",
        "partsight/" + "x" * 129 + "/frame",
    ],
)
def test_other_topics_are_not_frame_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        Topics().device_of_frame_topic(topic)
    with pytest.raises(TopicError):  # nor, with `frame` read as `enrol`, enrol topics
        Topics().device_of_enrol_topic(topic.replace("frame", "enrol"))


def test_frame_and_enrol_topics_are_told_apart() -> None:
    with pytest.raises(TopicError):
        Topics().device_of_frame_topic("partsight/cam/enrol")
    with pytest.raises(TopicError):
        Topics().device_of_enrol_topic("partsight/cam/frame")


@pytest.mark.parametrize("device", ["", "a/b", "a+b", "a#", "tab\tid", "nul\x00"])
def test_device_ids_that_cannot_be_a_topic_level_are_refused(device: str) -> None:
    with pytest.raises(TopicError):
        Topics().result(device)


def test_subscription_is_shared_only_with_a_group() -> None:
    assert Topics().frame_subscription() == "partsight/+/frame"
    assert Topics().frame_subscription("bridges") == "$share/bridges/partsight/+/frame"
    assert Topics().enrol_subscription() == "partsight/+/enrol"
    assert Topics().enrol_subscription("bridges") == "$share/bridges/partsight/+/enrol"


@pytest.mark.parametrize("prefix", ["", "/a", "a/", "a/+", "#", "$SYS"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(TopicError):
        Topics(prefix)
