"""docker-compose.yml: the Compose specification's JSON schema, pinned images, the gateway's build and settings.

No Docker engine is needed: the file is checked against the Compose specification's schema as
check-jsonschema ships it (``--builtin-schema vendor.compose-spec``, from PyPI), then for what the
schema cannot know.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import COMPOSE, ROOT, image_is_pinned, load_yaml, project_version, unknown_settings

GATEWAY_IMAGE = "aos-gateway"


def _compose() -> dict[str, Any]:
    doc = load_yaml(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _gateway_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _services().items() if "build" in s}


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE form
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    assert isinstance(env, dict)
    return env


def test_compose_file_matches_the_compose_specification() -> None:
    done = _check_jsonschema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("services", "worker", "depends_on", "kafka", "condition"), "service_happy", "service_happy"),
        (("services", "ingress", "ports"), "8080:8080", "8080:8080"),
        (("services", "grafana", "portz"), ["3000:3000"], "portz"),
    ],
)
def test_a_broken_compose_file_is_rejected(tmp_path: Path, path: tuple[str, ...], value: object, expected: str) -> None:
    doc = _compose()
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    done = _check_jsonschema(broken)
    assert done.returncode != 0
    assert expected in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("apache/kafka:4.1.1", True),
        ("quay.io/debezium/connect:3.3.1.Final", True),
        ("registry.local:5000/aos/aos-gateway:0.1.0-cuda", True),
        ("postgres@sha256:" + "a" * 64, True),
        ("postgres", False),
        ("postgres:latest", False),
        ("registry.local:5000/aos/aos-gateway", False),
        ("grafana/grafana:", False),
    ],
)
def test_image_pinning_rule(image: str, pinned: bool) -> None:
    assert image_is_pinned(image) is pinned


def test_every_image_is_pinned() -> None:
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"{name}: no image (a built service names its image and tag too)"
        assert image_is_pinned(image), f"{name}: image {image!r} is not pinned to a version tag"


def test_gateway_services_build_from_the_dockerfile() -> None:
    gateway = _gateway_services()
    assert {"worker", "ingress", "dashboard", "topics", "connectors"} <= set(gateway)
    version = project_version()
    for name, service in gateway.items():
        build = service["build"]
        assert isinstance(build, dict), f"{name}: build must name the context and the Dockerfile"
        assert build.get("context") == "."
        dockerfile = build.get("dockerfile")
        assert dockerfile == "Dockerfile" and (ROOT / dockerfile).is_file(), f"{name}: builds from {dockerfile!r}"
        variant = (build.get("args") or {}).get("VARIANT", "cpu")
        suffix = "" if variant == "cpu" else f"-{variant}"
        assert service["image"] == f"{GATEWAY_IMAGE}:{version}{suffix}", f"{name}: {service['image']}"
    for name, service in _services().items():
        if service["image"].split(":")[0] == GATEWAY_IMAGE:
            assert name in gateway, f"{name} runs the gateway image but does not build it"


def test_gateway_services_run_the_expected_commands() -> None:
    commands: dict[str, Any] = {name: s.get("command") for name, s in _gateway_services().items()}
    assert commands["worker"] == ["worker"]
    assert commands["ingress"] == ["serve"]
    assert commands["dashboard"] == ["dashboard"]
    assert commands["topics"] == ["topics", "create"]
    assert commands["connectors"][:2] == ["connect", "apply"]
    env = {name: _environment(s) for name, s in _gateway_services().items()}
    assert env["ingress"]["AOS_INGRESS__HOST"] == "0.0.0.0"
    assert str(env["ingress"]["AOS_INGRESS__PORT"]) == "8080"
    assert str(env["dashboard"]["AOS_DASHBOARD__PORT"]) == "8090"
    assert str(env["worker"]["AOS_METRICS__PORT"]) == "9108"
    assert env["worker"]["AOS_TIMESERIES__FLAVOUR"] == "influxdb"


def test_gateway_env_vars_are_settings() -> None:
    for name, service in _gateway_services().items():
        env = _environment(service)
        assert any(k.startswith("AOS_") for k in env), name
        assert unknown_settings(env) == [], f"{name}: not read by aos_gateway.settings.Settings"


def test_unknown_env_vars_are_caught() -> None:
    assert unknown_settings(["AOS_KAFKA__BOOTSTRAP_SERVERS", "AOS_TENANT", "PATH"]) == []
    assert unknown_settings(["AOS_KAFKA__BOOTSTRAP_SERVER", "AOS_NOPE__X"]) == [
        "AOS_KAFKA__BOOTSTRAP_SERVER",
        "AOS_NOPE__X",
    ]


def test_dependencies_wait_for_health_or_completion() -> None:
    services = _services()
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        if not one_shot:
            assert "healthcheck" in service, f"{name}: a long-running service needs a healthcheck"
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {dep}: {condition}"
                assert services[dep].get("restart") == "no", f"{dep} is waited for to complete: a one-shot"


def test_files_the_compose_file_mounts_exist() -> None:
    doc = _compose()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in doc["volumes"], f"{name} mounts undeclared volume {source}"
    for secret in doc.get("secrets", {}).values():
        assert (ROOT / secret["file"]).is_file()


def test_prometheus_scrapes_the_workers_metrics_port() -> None:
    prom = load_yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "aos-worker")
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"][0]["port"] == 9108
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
