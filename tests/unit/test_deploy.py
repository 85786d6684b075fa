"""The shipped deployment files, checked offline: promtool on the Prometheus files and their alert unit tests,
the Compose specification, the Kubernetes schemas (kustomize-rendered too), the Dockerfiles, the dashboard."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from partsight.testing.harness import dashboard_builder

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
K8S_VERSION = "1.30.0"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (the README's test command does)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)


def test_prometheus_config_and_rules_pass_promtool() -> None:
    checked = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = sorted(str(p) for p in (DEPLOY / "prometheus" / "rules").glob("*.yml"))
    checked = promtool("check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_a_promtool_unit_test_that_passes() -> None:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "alerts.yml").read_text())
    names = {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    suite_path = DEPLOY / "prometheus" / "tests" / "alerts_test.yml"
    suite = yaml.safe_load(suite_path.read_text())
    firing = {
        case["alertname"] for test in suite["tests"] for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    assert names == firing, f"alerts without a firing test: {names - firing}"
    ran = promtool("test", "rules", str(suite_path))
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_a_broken_alert_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: raise the error-ratio threshold and the suite goes red."""
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    alerts = tmp_path / "prometheus" / "rules" / "alerts.yml"
    alerts.write_text(
        alerts.read_text().replace("partsight:error_ratio:rate5m > 0.05", "partsight:error_ratio:rate5m > 0.5")
    )
    ran = promtool("test", "rules", str(tmp_path / "prometheus" / "tests" / "alerts_test.yml"))
    assert ran.returncode != 0 and "PartsightErrorRatioHigh" in ran.stdout + ran.stderr


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    checked = check_compose(DEPLOY / "compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = compose()
    broken["services"]["bridge"]["restart_policy"] = "always"  # not a Compose key
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    assert check_compose(tmp_path / "compose.yaml").returncode != 0


def test_compose_keeps_secrets_in_files_and_state_on_volumes() -> None:
    document = compose()
    services = document["services"]
    assert {"mosquitto", "redis", "bridge", "worker", "worker-gpu", "prometheus", "grafana"} <= set(services)
    assert all("file" in secret and secret["file"].startswith("./secrets/") for secret in document["secrets"].values())
    text = (DEPLOY / "compose.yaml").read_text()
    literal = re.compile(r"(?i)password[\w-]*[ \t]*[:=][ \t]*['\"]?\w")  # a password written in the file itself
    assert not literal.search(text.replace("PASSWORD_FILE", "").replace("__FILE", ""))
    for name in ("bridge", "worker", "worker-gpu"):
        env = services[name]["environment"]
        assert env["PARTSIGHT_MQTT_PASSWORD_FILE"].startswith("/run/secrets/")
        assert env["PARTSIGHT_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert (ROOT / services[name]["build"]["dockerfile"]).is_file()
    assert services["worker-gpu"]["profiles"] == ["gpu"] and services["worker-gpu"]["runtime"] == "nvidia"
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "profiles" not in services["worker"]  # the CPU worker runs by default
    assert {"mosquitto-data", "redis-data", "prometheus-data", "grafana-data"} <= set(document["volumes"])
    mosquitto = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "persistence true", "max_queued_messages 100000", "acl_file"):
        assert line in mosquitto
    redis = (DEPLOY / "redis" / "redis.conf").read_text()
    assert "appendonly yes" in redis and "appendfsync always" in redis and "maxmemory-policy noeviction" in redis


def test_the_acl_confines_each_device_to_its_own_topics() -> None:
    lines = [
        line.split() for line in (DEPLOY / "mosquitto" / "acl").read_text().splitlines() if line and line[0] != "#"
    ]
    patterns = [line[1:] for line in lines if line[0] == "pattern"]
    assert ["write", "partsight/%u/frame"] in patterns
    assert ["read", "partsight/%u/result/#"] in patterns and ["read", "partsight/%u/error"] in patterns
    assert all("+" not in topic and "#" not in topic.rstrip("#") for access, topic in patterns if access != "read")
    assert not any(line[0] == "topic" and line[-1].startswith("#") for line in lines)  # no catch-all topic rule


def kubernetes_documents(paths: list[Path]) -> list[dict[str, Any]]:
    return [
        doc
        for path in paths
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") != "Kustomization"
    ]


KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    # the fields of keda.sh/v1alpha1 we use, as KEDA 2.x's CRDs define them (no schema ships offline)
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                        "additionalProperties": False,
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "pollingInterval": {"type": "integer"},
                    "cooldownPeriod": {"type": "integer"},
                    "advanced": {"type": "object"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"}},
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    }
                },
            }
        },
    },
}


def validate_kubernetes(documents: list[dict[str, Any]]) -> None:
    import jsonschema
    import kubernetes_validate

    for document in documents:
        if document["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(document, KEDA_SCHEMAS[document["kind"]])
        else:
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_kubernetes_manifests_follow_the_kubernetes_schemas() -> None:
    import kubernetes_validate

    base = kubernetes_documents(sorted((KUBERNETES / "base").glob("*.yaml")))
    validate_kubernetes(base)
    kinds = {doc["kind"] for doc in base}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "ScaledObject"} <= kinds
    assert "Secret" not in kinds  # referenced, never shipped
    broken = copy.deepcopy(next(doc for doc in base if doc["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = {"nine": 9301}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def rendered(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests were checked one by one above")
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_kustomize_renders_valid_base_and_gpu_overlay() -> None:
    for folder in (KUBERNETES / "base", KUBERNETES / "overlays" / "gpu"):
        validate_kubernetes(rendered(folder))
    gpu = {(doc["kind"], doc["metadata"]["name"]): doc for doc in rendered(KUBERNETES / "overlays" / "gpu")}
    container = gpu[("Deployment", "partsight-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].startswith("partsight-worker-cuda:")
    assert {"name": "PARTSIGHT_DEVICE", "value": "cuda"} in container["env"]
    assert container["env"].count({"name": "PARTSIGHT_DEVICE", "value": "cuda"}) == 1
    assert not any(e["name"] == "PARTSIGHT_DEVICE" and e.get("value") == "cpu" for e in container["env"])


def test_kubernetes_workloads_probe_health_and_reference_secrets() -> None:
    documents = kubernetes_documents(sorted((KUBERNETES / "base").glob("*.yaml")))
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    for name, port in (("partsight-bridge", 9301), ("partsight-worker", 9302)):
        pod = by_name[("Deployment", name)]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["ports"][0]["containerPort"] == port
        assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        secret_volumes = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert secret_volumes == ["partsight-secrets"]
        assert ("PodDisruptionBudget", name) in by_name
    trigger = by_name[("ScaledObject", "partsight-worker")]["spec"]["triggers"][0]
    from broker.contract import FRAME_QUEUE

    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == FRAME_QUEUE
    config = by_name[("ConfigMap", "partsight-mosquitto")]["data"]
    assert config["acl"] == (DEPLOY / "mosquitto" / "acl").read_text()
    assert config["mosquitto.conf"] == (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert (
        by_name[("ConfigMap", "partsight-redis")]["data"]["redis.conf"] == (DEPLOY / "redis" / "redis.conf").read_text()
    )


def dockerfile(name: str) -> Any:
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=(DEPLOY / "docker" / name).open("rb"))
    return parser


@pytest.mark.parametrize("name", ["bridge.Dockerfile", "worker-cpu.Dockerfile", "worker-cuda.Dockerfile"])
def test_images_are_multi_stage_non_root_and_health_checked(name: str) -> None:
    parsed = dockerfile(name)
    instructions = [(i["instruction"], i["value"]) for i in parsed.structure]
    stages = [value for kind, value in instructions if kind == "FROM"]
    assert len(stages) >= 2 and " AS build" in stages[0]
    final = instructions[max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM") :]
    users = [value for kind, value in final if kind == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(kind == "HEALTHCHECK" and "/healthz" in value for kind, value in final)
    assert any(kind == "COPY" and value.startswith("--from=build") for kind, value in final)


def test_the_bridge_image_carries_only_the_bridge() -> None:
    parsed = dockerfile("bridge.Dockerfile")
    copies = [i["value"] for i in parsed.structure if i["instruction"] == "COPY"]
    sources = " ".join(copies)
    assert "models/" not in sources and "worker/" not in sources and "pyproject" not in sources
    requirements = [
        line.strip()
        for line in (DEPLOY / "docker" / "bridge-requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert requirements == declared[: len(requirements)]  # the bridge block of pyproject, in order
    assert not any(re.match(r"(torch|torchvision|scikit-learn|pillow|numpy)\b", r, re.I) for r in requirements)


def test_the_dashboard_is_what_its_generator_makes() -> None:
    built = subprocess.run(
        [sys.executable, str(DEPLOY / "grafana" / "build_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    dashboard = dashboard_builder().build()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in ("Frames in and answers out", "Queue depth and bound", "Batch fill", "Latency by stage, p50 and p99"):
        assert wanted in titles
    for wanted in ("Errors by code", "Unknown ratio", "Results by category", "Devices: time since last frame"):
        assert wanted in titles
    assert {"Model served", "Worker CPU", "Memory (resident)", "GPU memory in use"} <= titles
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
