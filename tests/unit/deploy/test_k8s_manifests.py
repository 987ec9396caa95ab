"""deploy/k8s: built-in kinds against Kubernetes' own OpenAPI schemas, custom resources by structure.

kubernetes-validate (PyPI, schemas bundled) validates Namespace, ConfigMap, Secret, Deployment,
Service and PodDisruptionBudget strictly (unknown fields are errors). It has no schemas for custom
resources (it raises SchemaNotFoundError), so the Strimzi (Kafka, KafkaNodePool, KafkaTopic,
KafkaConnect, KafkaConnector) and KEDA (ScaledObject) resources are checked here against the
fields their operators require, and against each other: labels name existing clusters, KEDA's
consumer group is the Faust app id, every catalog topic exists. A kind that neither covers fails.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from deploy_checks import K8S, image_is_pinned, load_yaml, load_yaml_docs, project_version, unknown_settings

from aos_gateway import topics
from aos_gateway.settings import WorkerSettings

K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests are checked against
NOT_RESOURCES = {"kustomization.yaml"}
EXAMPLES = {"secrets.example.yaml"}

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": _NAME, "namespace": _NAME, "labels": {"type": "object"}, "annotations": {"type": "object"}},
}


def _cr(api: str, kind: str, spec: dict[str, Any], cluster_label: bool = False) -> dict[str, Any]:
    metadata = copy.deepcopy(_METADATA)
    if cluster_label:
        metadata["required"] = [*metadata["required"], "labels"]
        metadata["properties"]["labels"] = {"type": "object", "required": ["strimzi.io/cluster"]}
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": metadata, "spec": spec},
    }


_STRIMZI = "kafka.strimzi.io/v1beta2"
_RESOURCES = {
    "type": "object",
    "properties": {"requests": {"type": "object"}, "limits": {"type": "object"}},
    "required": ["requests", "limits"],
}
_SCALARS = {"type": "object", "additionalProperties": {"type": ["string", "integer", "number", "boolean"]}}
#: the fields the operators require, with their types (a subset of the CRDs' own schemas)
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "KafkaTopic": _cr(
        _STRIMZI,
        "KafkaTopic",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["topicName", "partitions", "replicas", "config"],
            "properties": {
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": _SCALARS,
            },
        },
        cluster_label=True,
    ),
    "KafkaNodePool": _cr(
        _STRIMZI,
        "KafkaNodePool",
        {
            "type": "object",
            "required": ["replicas", "roles", "storage"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 1},
                "roles": {"type": "array", "items": {"enum": ["controller", "broker"]}, "minItems": 1},
                "storage": {"type": "object", "required": ["type"]},
                "resources": _RESOURCES,
            },
        },
        cluster_label=True,
    ),
    "Kafka": _cr(
        _STRIMZI,
        "Kafka",
        {
            "type": "object",
            "required": ["kafka", "entityOperator"],
            "properties": {
                "kafka": {
                    "type": "object",
                    "required": ["listeners"],
                    "properties": {
                        "listeners": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "port", "type", "tls"],
                                "properties": {
                                    "name": {"type": "string", "pattern": "^[a-z0-9]{1,11}$"},
                                    "port": {"type": "integer", "minimum": 9092},
                                    "type": {
                                        "enum": [
                                            "internal",
                                            "route",
                                            "loadbalancer",
                                            "nodeport",
                                            "ingress",
                                            "cluster-ip",
                                        ]
                                    },
                                    "tls": {"type": "boolean"},
                                },
                            },
                        },
                        "config": _SCALARS,
                    },
                },
                "entityOperator": {"type": "object", "required": ["topicOperator"]},
            },
        },
    ),
    "KafkaConnect": _cr(
        _STRIMZI,
        "KafkaConnect",
        {
            "type": "object",
            "required": ["bootstrapServers", "config", "replicas", "resources"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "bootstrapServers": {"type": "string"},
                "config": _SCALARS,
                "resources": _RESOURCES,
                "build": {
                    "type": "object",
                    "required": ["output", "plugins"],
                    "properties": {
                        "output": {"type": "object", "required": ["type", "image"]},
                        "plugins": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "artifacts"],
                                "properties": {
                                    "artifacts": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": {
                                            "type": "object",
                                            "required": ["type", "url", "sha512sum"],
                                            "properties": {
                                                "type": {"enum": ["jar", "tgz", "zip", "maven", "other"]},
                                                "url": {"type": "string", "pattern": "^https://"},
                                                "sha512sum": {"type": "string", "pattern": "^[0-9a-f]{128}$"},
                                            },
                                        },
                                    }
                                },
                            },
                        },
                    },
                },
            },
        },
    ),
    "KafkaConnector": _cr(
        _STRIMZI,
        "KafkaConnector",
        {
            "type": "object",
            "required": ["class", "tasksMax", "config"],
            "properties": {
                "class": {"type": "string"},
                "tasksMax": {"type": "integer", "minimum": 1},
                "state": {"enum": ["running", "paused", "stopped"]},
                "config": _SCALARS,
            },
        },
        cluster_label=True,
    ),
    "ScaledObject": _cr(
        "keda.sh/v1alpha1",
        "ScaledObject",
        {
            "type": "object",
            "required": ["scaleTargetRef", "triggers", "minReplicaCount", "maxReplicaCount"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"]},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    ),
}


def _files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_RESOURCES)


def _docs(include_examples: bool = True) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in _files():
        if include_examples or path.name not in EXAMPLES:
            for doc in load_yaml_docs(path):
                yield path, doc


def _kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in _docs() if d["kind"] == kind]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _kind(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` is not a valid resource: Kubernetes' schema, else ours, else unknown kind."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return
    except kubernetes_validate.SchemaNotFoundError:
        pass
    schema = CRD_SCHEMAS.get(doc.get("kind", ""))
    if schema is None:
        raise AssertionError(f"no schema for {doc.get('apiVersion')} {doc.get('kind')}")
    jsonschema.validate(doc, schema)


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_every_manifest_is_valid(path: Path) -> None:
    docs = load_yaml_docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        validate(doc)
        assert doc["metadata"].get("namespace", "aos") == "aos" or doc["kind"] == "Namespace"


@pytest.mark.parametrize(
    ("kind", "name", "breakage"),
    [
        ("Deployment", "aos-worker", lambda d: d["spec"].__setitem__("replicas", "two")),
        ("Deployment", "aos-worker", lambda d: d["spec"]["template"]["spec"].__setitem__("containerz", [])),
        ("Service", "aos-ingress", lambda d: d["spec"]["ports"][0].pop("port")),
        ("KafkaTopic", "aos.tasks.v1", lambda d: d["spec"].__setitem__("partitions", 0)),
        ("KafkaTopic", "aos.tasks.v1", lambda d: d["metadata"]["labels"].pop("strimzi.io/cluster")),
        ("KafkaConnect", "aos-connect", lambda d: d["spec"]["build"]["plugins"][0]["artifacts"][0].pop("sha512sum")),
        ("ScaledObject", "aos-worker", lambda d: d["spec"]["triggers"][0]["metadata"].__setitem__("lagThreshold", 5)),
        ("ScaledObject", "aos-worker", lambda d: d.__setitem__("specs", {})),
    ],
)
def test_a_broken_manifest_is_rejected(kind: str, name: str, breakage: Any) -> None:
    doc = copy.deepcopy(_one(kind, name))
    validate(doc)
    breakage(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc)


def test_an_unknown_kind_is_not_skipped() -> None:
    with pytest.raises(AssertionError, match="no schema"):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_kustomization_lists_every_manifest_but_the_examples() -> None:
    kust = load_yaml(K8S / "kustomization.yaml")
    listed = set(kust["resources"])
    assert listed == {p.name for p in _files()} - EXAMPLES
    assert not listed & EXAMPLES, "example Secrets must never be applied"
    image = next(i for i in kust["images"] if i["name"] == "aos-gateway")
    assert image["newTag"] == project_version()


def test_gpu_overlay_makes_a_valid_worker_on_gpu_nodes() -> None:
    overlay = K8S / "overlays" / "gpu"
    kust = load_yaml(overlay / "kustomization.yaml")
    assert kust["resources"] == ["../.."]
    assert {i["name"]: i["newTag"] for i in kust["images"]} == {"aos-gateway-cuda": f"{project_version()}-cuda"}
    [patch_ref] = kust["patches"]
    patch = load_yaml(overlay / patch_ref["path"])
    base = _one(patch["kind"], patch["metadata"]["name"])
    merged = _strategic_merge(copy.deepcopy(base), patch)
    validate(merged)
    pod = merged["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    [worker] = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["image"].split(":")[0] == "aos-gateway-cuda"
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["AOS_METRICS__PORT"] == "9108", "the base's env survives the patch"
    assert unknown_settings(env) == []


def _strategic_merge(base: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge for what the overlay uses: maps merge, lists of named items
    merge by name, other lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        for key, value in patch.items():
            base[key] = _strategic_merge(base[key], value) if key in base else value
        return base
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        by_name = {i["name"]: i for i in base if isinstance(i, dict) and "name" in i}
        for item in patch:
            if item["name"] in by_name:
                _strategic_merge(by_name[item["name"]], item)
            else:
                base.append(item)
        return base
    return patch


def test_deployments_pin_images_set_resources_and_run_as_non_root() -> None:
    deployments = _kind("Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"aos-worker", "aos-ingress", "aos-dashboard"}
    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        for c in _containers(dep):
            assert image_is_pinned(c["image"]), f"{name}: {c['image']}"
            assert c["image"] == f"aos-gateway:{project_version()}", f"{name}: the image kustomization.yaml maps"
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), f"{name}: requests"
            assert "memory" in res["limits"], f"{name}: a memory limit"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert [c["args"] for c in pod["containers"]] in (
            [["worker"]],
            [["serve"]],
            [["dashboard"]],
        ), name


def test_gateway_env_vars_are_settings() -> None:
    names: list[str] = []
    for cm in _kind("ConfigMap"):
        names += list(cm["data"])
    for secret in _kind("Secret"):
        names += [k for k in secret.get("stringData", {}) if k.startswith("AOS_")]
    for dep in _kind("Deployment"):
        for c in _containers(dep):
            names += [e["name"] for e in c.get("env", [])]
    assert "AOS_KAFKA__BOOTSTRAP_SERVERS" in names
    assert unknown_settings(names) == []


def test_references_to_config_maps_and_secrets_resolve() -> None:
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in _kind("ConfigMap")}
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in _kind("Secret")}
    for dep in _kind("Deployment"):
        for c in _containers(dep):
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert src["configMapRef"]["name"] in config_maps
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in secrets
    connect = _one("KafkaConnect")
    for env in connect["spec"]["template"]["connectContainer"]["env"]:
        ref = env["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]], f"{env['name']}: {ref}"
    assert connect["spec"]["build"]["output"]["pushSecret"] in secrets


def test_example_secrets_hold_placeholders_only() -> None:
    for secret in load_yaml_docs(K8S / "secrets.example.yaml"):
        for key, value in secret.get("stringData", {}).items():
            if re.search(r"password|token|key|auth|dockerconfig", key, re.IGNORECASE):
                assert "CHANGE-ME" in value, f"{secret['metadata']['name']}.{key} must be a placeholder"
        assert "data" not in secret, "placeholders go in stringData, readable"


def test_services_select_deployments_and_target_named_ports() -> None:
    deployments = _kind("Deployment")
    for svc in _kind("Service"):
        selector = svc["spec"]["selector"]
        [dep] = [d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        port_names = {p["name"] for c in _containers(dep) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_keda_scales_the_worker_on_the_faust_groups_lag() -> None:
    scaled = _one("ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    worker = _one("Deployment", target["name"])
    assert [c["args"] for c in worker["spec"]["template"]["spec"]["containers"]] == [["worker"]]
    bootstrap = _one("ConfigMap", "aos-gateway-config")["data"]["AOS_KAFKA__BOOTSTRAP_SERVERS"]
    partitions = {t.name: t.partitions for t in topics.ALL}
    triggered = set()
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["consumerGroup"] == WorkerSettings().app_id, "Faust's consumer group is the app id"
        assert meta["bootstrapServers"] == bootstrap
        assert meta["topic"] in partitions, f"{meta['topic']} is not in the topic catalog"
        assert scaled["spec"]["maxReplicaCount"] <= partitions[meta["topic"]], (
            f"more workers than {meta['topic']} has partitions would idle"
        )
        assert int(meta["lagThreshold"]) > 0
        triggered.add(meta["topic"])
    assert {topics.TASKS.name, topics.PERCEIVED.name, topics.MATCHED.name, topics.PLANS.name} <= triggered
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_strimzi_resources_fit_together() -> None:
    kafka = _one("Kafka")
    cluster = kafka["metadata"]["name"]
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    pools = _kind("KafkaNodePool")
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == cluster for p in pools)
    roles = {r for p in pools for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    plain = next(listener for listener in kafka["spec"]["kafka"]["listeners"] if not listener["tls"])

    for topic in _kind("KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert topic["spec"]["replicas"] <= brokers
        assert int(topic["spec"]["config"]["min.insync.replicas"]) < topic["spec"]["replicas"]

    bootstrap = f"{cluster}-kafka-bootstrap"
    connect = _one("KafkaConnect")
    assert connect["spec"]["bootstrapServers"] == f"{bootstrap}:{plain['port']}"
    assert _one("ConfigMap", "aos-gateway-config")["data"]["AOS_KAFKA__BOOTSTRAP_SERVERS"].startswith(bootstrap)
    assert connect["metadata"]["annotations"]["strimzi.io/use-connector-resources"] == "true"
    config = connect["spec"]["config"]
    assert config["config.providers"] == "env", "the connector configs resolve ${env:...}"
    for key in ("config", "offset", "status"):
        assert config[f"{key}.storage.replication.factor"] <= brokers
    [plugin] = connect["spec"]["build"]["plugins"]
    [artifact] = plugin["artifacts"]
    assert artifact["url"].startswith("https://repo1.maven.org/maven2/io/debezium/debezium-connector-jdbc/")
    for connector in _kind("KafkaConnector"):
        assert connector["metadata"]["labels"]["strimzi.io/cluster"] == connect["metadata"]["name"]
        assert connector["spec"]["class"] == "io.debezium.connector.jdbc.JdbcSinkConnector"
        env_refs = set(re.findall(r"\$\{env:(\w+)\}", " ".join(connector["spec"]["config"].values())))
        provided = {e["name"] for e in connect["spec"]["template"]["connectContainer"]["env"]}
        assert env_refs <= provided, f"{connector['metadata']['name']}: {env_refs - provided} unset in Connect"
