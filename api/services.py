"""What the routes share: settings, the stores under the model store, the recognizer, the dispatcher, metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.dispatch import Dispatcher
from api.errors import INTERNAL, UNAVAILABLE, UNKNOWN_PRODUCT, ApiError, not_found, unavailable
from api.metrics import ApiMetrics
from api.products import Products
from api.recognize import Recognizer
from api.settings import ApiSettings
from models.errors import EnrolmentError
from models.store.enrolment_requests import EnrolmentStore, check_product_id
from models.store.review_store import ReviewStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    recognizer: Recognizer
    dispatcher: Dispatcher
    metrics: ApiMetrics
    products: Products
    enrolments: EnrolmentStore
    review: ReviewStore

    def enrol(
        self, product: str, photos: Sequence[tuple[str, bytes]], record: Mapping[str, Any] | None, source: str
    ) -> str:
        """Store an enrolment and queue it for the workers; its id. One that Redis refuses is marked failed (503)."""
        try:
            enrolment = self.enrolments.create(product, photos, record=record, source=source)
        except EnrolmentError as exc:
            if isinstance(exc.__cause__, OSError):
                logger.error("cannot store an enrolment of %s: %s", product, exc)
                raise ApiError(500, INTERNAL, exc.message) from exc
            raise ApiError(422, exc.code, exc.message) from exc
        try:
            self.dispatcher.enrol(enrolment)
        except Exception as exc:  # kombu and redis raise many kinds; all mean "not queued"
            message = f"the enrolment could not be queued (Redis: {exc})"
            logger.warning("enrolment %s of %s: %s", enrolment, product, message)
            self.enrolments.failed(enrolment, UNAVAILABLE, message)
            raise unavailable(message) from exc
        self.metrics.enrolments_requested.labels(source=source).inc()
        logger.info("enrolment %s: %d photo(s) of %s from %s, queued", enrolment, len(photos), product, source)
        return enrolment


def product_id(value: str) -> str:
    """A product id from a path or a label; any other string is an unknown product, never a path."""
    try:
        return check_product_id(value)
    except EnrolmentError as exc:
        raise not_found(UNKNOWN_PRODUCT, f"no product {value[:80]!r}") from exc
