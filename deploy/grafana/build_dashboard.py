"""Builds deploy/grafana/dashboards/partsight.json, the operators' dashboard, from the panel list below.

    python deploy/grafana/build_dashboard.py            # rewrite the JSON
    python deploy/grafana/build_dashboard.py --check    # exit 1 when the JSON is not what this script makes

The tests run `--check` and evaluate every expression against a real Prometheus scraping a running
bridge and worker. Standard library only: it runs wherever the repository is checked out.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).parent / "dashboards" / "partsight.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GPU_ONLY = "partsight_worker_gpu_memory"  # exported by GPU workers only
API_ONLY = "partsight_api_"  # exported by `partsight api` only


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # timeseries, stat, table, bargauge
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    thresholds: tuple[tuple[float, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


RATE = "$__rate_interval"
WORKERS = 'job="partsight-worker"'

ROWS = (
    Row(
        "Overview",
        (
            Panel(
                "Frames in",
                (Query("partsight:frames_received:rate1m"),),
                kind="stat",
                unit="reqps",
                width=4,
                height=4,
            ),
            Panel(
                "Queue depth",
                (Query("partsight:queue_depth_frames"),),
                kind="stat",
                unit="short",
                width=4,
                height=4,
                thresholds=((0, "green"), (500, "orange"), (900, "red")),
            ),
            Panel(
                "p99 frame to result",
                (Query('partsight:stage_latency_seconds:p99{stage="total"}'),),
                kind="stat",
                unit="s",
                width=4,
                height=4,
                thresholds=((0, "green"), (1, "orange"), (2, "red")),
            ),
            Panel(
                "Error ratio",
                (Query("partsight:error_ratio:rate5m"),),
                kind="stat",
                unit="percentunit",
                width=4,
                height=4,
                thresholds=((0, "green"), (0.01, "orange"), (0.05, "red")),
            ),
            Panel(
                "Unknown ratio (30 min)",
                (Query("partsight:unknown_ratio:rate30m"),),
                kind="stat",
                unit="percentunit",
                width=4,
                height=4,
            ),
            Panel(
                "Processes up",
                (Query('sum(up{job=~"partsight-.*"})', instant=True),),
                kind="stat",
                unit="short",
                width=4,
                height=4,
                description="Bridges, workers and APIs Prometheus can scrape.",
            ),
        ),
    ),
    Row(
        "Throughput",
        (
            Panel(
                "Frames in and answers out",
                (
                    Query("partsight:frames_received:rate1m", "frames in"),
                    Query("sum(partsight:answers:rate1m)", "results out"),
                    Query("sum(partsight:errors:rate5m)", "errors out"),
                ),
                unit="reqps",
                description="Frames the bridges received; results and error messages sent back to devices.",
            ),
            Panel(
                "Queue depth and bound",
                (
                    Query("partsight:queue_depth_frames", "frames admitted, not yet answered"),
                    Query("min(partsight_queue_limit_frames)", "bound (beyond: overloaded)"),
                ),
                description=(
                    "Frames admitted and not yet answered (waiting in Redis or held by a worker); beyond the bound,"
                    " frames are answered 'overloaded'."
                ),
            ),
            Panel(
                "Batch fill",
                (
                    Query(
                        f"sum(rate(partsight_worker_batch_size_frames_sum[{RATE}]))"
                        f" / sum(rate(partsight_worker_batch_size_frames_count[{RATE}]))"
                        " / max(partsight_worker_max_batch_size_frames)",
                        "mean batch / largest batch",
                    ),
                ),
                unit="percentunit",
                description="How full the micro-batches run: low at light load, near 100% when the model is the limit.",
            ),
            Panel(
                "Latency by stage, p50 and p99",
                (
                    Query("partsight:stage_latency_seconds:p50", "{{stage}} p50"),
                    Query("partsight:stage_latency_seconds:p99", "{{stage}} p99"),
                ),
                unit="s",
                description="Queue, decode, features, classify, publish and total, per frame.",
            ),
        ),
    ),
    Row(
        "Answers",
        (
            Panel(
                "Errors by code",
                (Query("partsight:errors:rate5m", "{{code}}"),),
                unit="reqps",
                stack=True,
                description="Error messages on devices' error topics: the worker's codes and the bridge's refusals.",
            ),
            Panel(
                "Unknown ratio",
                (
                    Query("partsight:unknown_ratio:rate30m", "last 30 min"),
                    Query("partsight:unknown_ratio:rate1d", "last day"),
                ),
                unit="percentunit",
                description="Frames answered 'unknown'. A jump: new products on the line, or changed light; retrain.",
            ),
            Panel(
                "Results by category",
                (Query(f"sum by (category) (rate(partsight_worker_results_total[{RATE}]))", "{{category}}"),),
                unit="reqps",
                stack=True,
            ),
            Panel(
                "Devices: time since last frame",
                (Query("time() - partsight:device_last_frame_timestamp_seconds", instant=True),),
                kind="table",
                unit="s",
                thresholds=((0, "green"), (60, "orange"), (300, "red")),
                description="Each device's last frame at any bridge; red after 5 minutes (the DeviceSilent alert).",
                extra={
                    "transformations": [
                        {
                            "id": "organize",
                            "options": {
                                "excludeByName": {"Time": True},
                                "renameByName": {"Value": "seconds since last frame"},
                            },
                        },
                        {"id": "sortBy", "options": {"sort": [{"field": "seconds since last frame", "desc": True}]}},
                    ]
                },
            ),
        ),
    ),
    Row(
        "Open set",
        (
            Panel(
                "Never-seen frames",
                (
                    Query(
                        f"sum(rate(partsight_worker_novel_frames_total[{RATE}])) / "
                        f"clamp_min(sum(rate(partsight_worker_novelty_ratio_count[{RATE}])), 1e-9)",
                        "share refused as never seen",
                    ),
                    Query(
                        f"histogram_quantile(0.5, sum by (le) (rate(partsight_worker_novelty_ratio_bucket[{RATE}])))",
                        "median novelty",
                    ),
                ),
                unit="percentunit",
                width=24,
                description=(
                    "Share of answered frames whose novelty reached the model's threshold (answered unknown: they "
                    "look like no enrolled product), and the median novelty. A rise means the line shows products "
                    "the model was never taught: look at the review queue and enrol them."
                ),
            ),
        ),
    ),
    Row(
        "Objects: one decision per part",
        (
            Panel(
                "Objects decided by outcome and reason",
                (
                    Query(
                        f"sum by (outcome, reason) (rate(partsight_worker_objects_total[{RATE}]))",
                        "{{outcome}} ({{reason}})",
                    ),
                ),
                unit="ops",
                stack=True,
                description=(
                    "Objects (frames of one part, one event each) decided per second: recognized or unknown, and "
                    "what decided them: frames that agreed, the device's last frame, the most frames an object "
                    "takes, or the gap after its last frame. Many `unknown (gap)` mean parts the model does not "
                    "know, or frames that disagree."
                ),
            ),
            Panel(
                "Frames per object and seconds to a decision",
                (
                    Query(
                        f"sum(rate(partsight_worker_object_frames_sum[{RATE}])) / "
                        f"clamp_min(sum(rate(partsight_worker_object_frames_count[{RATE}])), 1e-9)",
                        "frames per object",
                    ),
                    Query(
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(partsight_worker_object_decision_seconds_bucket[{RATE}])))",
                        "seconds to decide p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(partsight_worker_object_decision_seconds_bucket[{RATE}])))",
                        "seconds to decide p99",
                    ),
                    Query("max(partsight_objects_open)", "open objects"),
                    Query("max(partsight_object_events_unpublished)", "events not yet published"),
                ),
                description=(
                    "Frames each decided object had, seconds from its first frame to its event, objects waiting "
                    "for frames or their gap, and events the broker has not yet confirmed (published again "
                    "after the publish timeout)."
                ),
            ),
        ),
    ),
    Row(
        "Enrolment and API",
        (
            Panel(
                "API requests by route and status",
                (
                    Query(
                        f"sum by (route, status) (rate(partsight_api_requests_total[{RATE}]))",
                        "{{route}} {{status}}",
                    ),
                ),
                unit="reqps",
                stack=True,
                description=(
                    "Requests to `partsight api` by route template (never an id) and HTTP status: 401/403 are "
                    "missing or wrong tokens, 413/415/422 bad uploads, 503 overloaded or MQTT down, 504 no answer "
                    "in PARTSIGHT_API_TIMEOUT_S."
                ),
            ),
            Panel(
                "API latency p50 and p99",
                (
                    Query(
                        "histogram_quantile(0.5, sum by (le, route) "
                        f"(rate(partsight_api_request_seconds_bucket[{RATE}])))",
                        "{{route}} p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le, route) "
                        f"(rate(partsight_api_request_seconds_bucket[{RATE}])))",
                        "{{route}} p99",
                    ),
                ),
                unit="s",
                description="Seconds per request by route; for /v1/recognize it includes the queue and the worker.",
            ),
            Panel(
                "Enrolments by outcome",
                (
                    Query(
                        f"sum by (outcome) (increase(partsight_worker_enrolments_total[{RATE}]))",
                        "{{outcome}}",
                    ),
                    Query(
                        f"sum by (source) (increase(partsight_api_enrolments_requested_total[{RATE}]))",
                        "requested: {{source}}",
                    ),
                    Query(
                        'sum by (outcome) (increase(partsight_bridge_enrolments_total{outcome!="enqueued"}'
                        f"[{RATE}]))",
                        "refused over MQTT: {{outcome}}",
                    ),
                    Query(
                        'sum by (outcome) (increase(partsight_worker_consolidations_total{outcome=~"done|failed"}'
                        f"[{RATE}]))",
                        "consolidations: {{outcome}}",
                    ),
                    Query(
                        f"sum(increase(partsight_worker_enrolments_waiting_total[{RATE}]))",
                        "told to wait for a consolidation",
                    ),
                ),
                description=(
                    "Enrolments the workers finished (done: a new version is current) or failed (current stayed; "
                    "the PartsightEnrolmentsFailing alert), those requested through the API, MQTT enrolments "
                    "the bridge refused, by code, the consolidations that fold quick enrolments into a "
                    "refitted head (PartsightConsolidationFailing), and the requests told to wait for one (the "
                    "model held as many quick enrolments as it may: minutes at hundreds of products)."
                ),
            ),
            Panel(
                "Enrolment seconds p50 and p99",
                (
                    Query(
                        "histogram_quantile(0.5, sum by (le) (rate(partsight_worker_enrolment_seconds_bucket[1h])))",
                        "p50 (last hour)",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le) (rate(partsight_worker_enrolment_seconds_bucket[1h])))",
                        "p99 (last hour)",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le) "
                        "(rate(partsight_worker_consolidation_seconds_bucket[1h])))",
                        "consolidation p99 (last hour)",
                    ),
                ),
                unit="s",
                description=(
                    "A worker's time for one quick enrolment: the new photos' features, the refinement, the "
                    "version written and made current; and a consolidation's, the refit in a child process. Over "
                    "an hour: enrolments are few."
                ),
            ),
            Panel(
                "Review queue depth and drops",
                (
                    Query("max(partsight_worker_review_items)", "items"),
                    Query(f"sum(rate(partsight_worker_review_kept_total[{RATE}]))", "kept per second"),
                    Query(
                        f"sum by (reason) (rate(partsight_worker_review_dropped_total[{RATE}]))",
                        "dropped: {{reason}}",
                    ),
                ),
                width=24,
                description=(
                    "Frames kept for an operator to label (unknown, or two products close), items in the shared "
                    "store (max over workers: they all see the same store), and what was not kept or was removed "
                    "to hold its bounds, by reason."
                ),
            ),
        ),
    ),
    Row(
        "Workers and model",
        (
            Panel(
                "Model served",
                (Query("partsight_model_info", instant=True),),
                kind="table",
                description="Model name and version, backbone, engine and device of each worker.",
                extra={
                    "transformations": [
                        {
                            "id": "organize",
                            "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True}},
                        }
                    ]
                },
            ),
            Panel(
                "Model reloads",
                (
                    Query(f"sum by (outcome) (increase(partsight_worker_model_reloads_total[{RATE}]))", "{{outcome}}"),
                    Query("partsight_worker_model_refused", "{{instance}} refusing the store's current version"),
                ),
                description=(
                    "New versions workers loaded or refused (a refused version failed verification: the worker "
                    "keeps serving the previous one and its log says why)."
                ),
            ),
            Panel(
                "Connections",
                (
                    Query("partsight_bridge_mqtt_connected", "bridge {{instance}} MQTT"),
                    Query("partsight_bridge_redis_connected", "bridge {{instance}} Redis"),
                    Query("partsight_worker_mqtt_connected", "worker {{instance}} MQTT"),
                ),
                description="1 while connected.",
            ),
            Panel(
                "Worker CPU",
                (Query(f"rate(process_cpu_seconds_total{{{WORKERS}}}[{RATE}])", "{{instance}}"),),
                unit="percentunit",
                description="CPU seconds per second of each worker process (1 = one core).",
            ),
            Panel(
                "Memory (resident)",
                (Query('process_resident_memory_bytes{job=~"partsight-.*"}', "{{job}} {{instance}}"),),
                unit="bytes",
            ),
            Panel(
                "GPU memory in use",
                (
                    Query(
                        "partsight_worker_gpu_memory_used_bytes / partsight_worker_gpu_memory_total_bytes",
                        "{{instance}}",
                    ),
                ),
                unit="percentunit",
                width=24,
                description="GPU workers only (empty on a CPU-only deployment).",
            ),
        ),
    ),
)


def _targets(panel: Panel) -> list[dict[str, Any]]:
    return [
        {
            "datasource": DATASOURCE,
            "expr": query.expr,
            "legendFormat": query.legend or "__auto",
            "refId": chr(ord("A") + index),
            **({"instant": True, "range": False, "format": "table"} if query.instant or panel.kind == "table" else {}),
        }
        for index, query in enumerate(panel.queries)
    ]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    steps = [
        {"color": colour, "value": None if n == 0 else value} for n, (value, colour) in enumerate(panel.thresholds)
    ]
    custom: dict[str, Any] = {}
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
        if panel.stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "custom": custom,
                "thresholds": {"mode": "absolute", "steps": steps or [{"color": "green", "value": None}]},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if panel.kind == "timeseries" else {},
        "targets": _targets(panel),
    }
    if panel.kind == "table" and panel.thresholds:
        result["fieldConfig"]["defaults"]["custom"] = {"cellOptions": {"type": "color-background"}}
    result.update(panel.extra)
    return result


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + line_height
                line_height = 0
            panels.append(_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": "partsight-operations",
        "title": "partsight: operations",
        "description": "Frames, queue, latency, answers, enrolment, the API, devices, workers and model of partsight.",
        "tags": ["partsight"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"selected": True, "text": "Prometheus", "value": "partsight-prometheus"},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in the dashboard, in panel order."""
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is out of date: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(build()['panels'])} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
