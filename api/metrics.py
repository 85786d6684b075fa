"""Prometheus metrics of the HTTP API. Every metric takes the registry it lives in; labels are bounded (routes are
the app's path templates, never a path with ids in it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OTHER_ROUTE = "other"  # a path no route matches (404s): one label, whatever was asked
ENROLMENT_SOURCES = ("api", "review")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "partsight_api_requests_total",
            "HTTP requests answered, by route (path template) and status code.",
            ["route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "partsight_api_request_seconds",
            "Time to answer an HTTP request, by route (a recognition waits for its worker's answer).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.enrolments_requested = Counter(
            "partsight_api_enrolments_requested_total",
            "Enrolments stored and queued for the workers, by source (api: photos posted; review: a label).",
            ["source"],
            registry=registry,
        )
        for source in ENROLMENT_SOURCES:
            self.enrolments_requested.labels(source=source)
        self.review_items = Gauge(
            "partsight_api_review_items", "Items in the review store (every status), at scrape time.", registry=registry
        )
        self.in_flight = Gauge(
            "partsight_api_recognitions_in_flight",
            "Frames published for recognition whose answer has not come yet.",
            registry=registry,
        )
        self.mqtt_connected = Gauge(
            "partsight_api_mqtt_connected", "1 while connected to the MQTT broker.", registry=registry
        )

    def precreate_routes(self, routes: Iterable[str]) -> None:
        for route in (*routes, OTHER_ROUTE):
            self.request_seconds.labels(route=route)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.request_seconds.labels(route=route).observe(seconds)

    def watch(
        self,
        *,
        review_items: Callable[[], float],
        in_flight: Callable[[], float],
        mqtt_connected: Callable[[], float],
    ) -> None:
        """Gauges read when scraped: the review store's size, the recognitions waiting, the MQTT connection."""
        self.review_items.set_function(review_items)
        self.in_flight.set_function(in_flight)
        self.mqtt_connected.set_function(mqtt_connected)
