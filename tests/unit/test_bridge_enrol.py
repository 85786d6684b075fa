"""Admission of MQTT enrolments (`<prefix>/<device>/enrol`) and the task the bridge sends for them."""

from __future__ import annotations

import json

import pytest

from broker.admission import Inbound
from broker.codes import ErrorCode
from broker.contract import ENROL_QUEUE, ENROL_TASK, image_digest
from broker.enrol_messages import (
    PRODUCT_ID,
    EnrolRequest,
    admit_enrolment,
    enrol_hints,
    enrolment_refusal,
)
from broker.errors import FrameRejected

JPEG = b"\xff\xd8\xff\xe0fake photo"


def inbound(payload: bytes = JPEG, **props: str) -> Inbound:
    return Inbound(topic="partsight/cam/enrol", payload=payload, user_properties=props)


def admitted(message: Inbound, limit: int = 1000) -> EnrolRequest:
    return admit_enrolment(message, device="cam", max_payload_bytes=limit, received_at=7.0)


def refused(message: Inbound, limit: int = 1000) -> FrameRejected:
    with pytest.raises(FrameRejected) as caught:
        admitted(message, limit)
    return caught.value


def test_a_photo_with_its_product_and_catalog_record_is_admitted() -> None:
    catalog = json.dumps({"name": " Hex bolt M8 ", "category": "fasteners", "torque_nm": 25})
    request = admitted(inbound(product="bolt-m8", catalog=catalog, frame_id="e-1"))
    assert (request.device, request.frame_id, request.product, request.photo, request.received_at) == (
        "cam",
        "e-1",
        "bolt-m8",
        JPEG,
        7.0,
    )
    assert request.catalog == {"product": "bolt-m8", "name": "Hex bolt M8", "category": "fasteners", "torque_nm": 25}
    assert request.to_task_kwargs() == {
        "device": "cam",
        "frame_id": "e-1",
        "product": "bolt-m8",
        "catalog": request.catalog,
        "photo": JPEG,
        "received_at": 7.0,
    }
    assert EnrolRequest.from_task_kwargs(request.to_task_kwargs()) == request


def test_without_a_frame_id_the_photo_digest_names_it_so_a_redelivery_keeps_its_id() -> None:
    first, again = admitted(inbound(product="p")), admitted(inbound(product="p"))
    assert first.frame_id == again.frame_id == image_digest(JPEG) and first.catalog is None
    assert first.task_id == again.task_id and first.task_id.startswith("enrol-")
    assert admitted(inbound(product="q")).task_id != first.task_id  # the same photo for another product
    assert admitted(inbound(JPEG + b"x", product="p")).task_id != first.task_id


def test_size_is_checked_first_and_an_empty_payload_is_no_photo() -> None:
    assert refused(inbound(b"x" * 11, product="bad id"), limit=10).code == ErrorCode.PAYLOAD_TOO_LARGE
    assert refused(inbound(b"", product="p")).code == ErrorCode.UNSUPPORTED_FORMAT


def test_an_mqtt_3_client_without_properties_is_told_why() -> None:
    error = refused(inbound())
    assert error.code == ErrorCode.BAD_ENROLMENT and "MQTT 5" in error.message and "product" in error.message


@pytest.mark.parametrize("product", ["", "-lead", ".hidden", "a/b", "../x", "a b", "é", "x" * 129, "a\x00"])
def test_product_ids_that_are_no_folder_name_are_refused(product: str) -> None:
    assert refused(inbound(product=product)).code == ErrorCode.BAD_ENROLMENT


@pytest.mark.parametrize(
    "catalog",
    [
        "not json",
        "[1, 2]",
        '{"name": "n"}',
        '{"name": "", "category": "c"}',
        '{"name": "n", "category": 3}',
        '{"name": "n", "category": "c", "product": "other"}',
        '{"name": "n", "category": "c", "weight": NaN}',
        '{"name": "n", "category": "c", "pad": "' + "x" * 20_000 + '"}',
    ],
)
def test_catalog_records_that_break_the_rule_are_refused(catalog: str) -> None:
    assert refused(inbound(product="p", catalog=catalog)).code == ErrorCode.BAD_ENROLMENT


def test_a_bad_frame_id_is_bad_metadata_as_for_frames() -> None:
    assert refused(inbound(product="p", frame_id="has space")).code == ErrorCode.BAD_METADATA


def test_the_product_rule_is_the_model_stores() -> None:
    from models.store.enrolment_requests import PRODUCT_ID as STORE_RULE

    assert PRODUCT_ID.pattern == STORE_RULE.pattern


def test_a_refusal_names_what_it_can_in_the_shape_of_a_failed_enrolment() -> None:
    assert enrol_hints(inbound(product="p", frame_id="e-2"), 1000) == ("e-2", "p")
    assert enrol_hints(inbound(product="../p", frame_id="bad id"), 1000) == (None, None)
    assert enrol_hints(inbound(b"x" * 11), 10) == (None, None)  # too large: not hashed
    assert enrol_hints(inbound(), 1000) == (image_digest(JPEG), None)
    message = enrolment_refusal(
        device="cam", frame_id="e-2", product="p", code=ErrorCode.BAD_ENROLMENT, message="why", at=0.0
    )
    assert message == {
        "schema": "partsight/1",
        "type": "enrolment",
        "device": "cam",
        "frame_id": "e-2",
        "enrolment": None,
        "product": "p",
        "state": "failed",
        "version": None,
        "error": {"code": "bad_enrolment", "message": "why"},
        "at": "1970-01-01T00:00:00.000Z",
    }


def test_the_dispatcher_sends_the_enrol_task_by_name_with_the_photo_as_bytes() -> None:
    """Through Celery and kombu's msgpack for real (kombu's in-memory transport): bytes stay bytes."""
    from broker.dispatch import CeleryDispatcher

    dispatcher = CeleryDispatcher("redis://127.0.0.1:1/0")  # never reached: the app is pointed at memory://
    dispatcher.app.conf.broker_url = "memory://"
    request = admitted(inbound(product="bolt-m8", catalog='{"name": "Bolt", "category": "fasteners"}'))
    try:
        dispatcher.enqueue_enrolment(request)
        with dispatcher.app.connection_for_read() as connection:
            queue = connection.SimpleQueue(ENROL_QUEUE, accept=["msgpack"])
            message = queue.get(timeout=5)
            message.ack()
            queue.close()
    finally:
        dispatcher.close()
    assert message.headers["task"] == ENROL_TASK and message.headers["id"] == request.task_id
    assert message.content_type == "application/x-msgpack"
    args, kwargs, _ = message.decode()
    assert args == [] and kwargs == request.to_task_kwargs() and isinstance(kwargs["photo"], bytes)
