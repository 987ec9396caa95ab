"""Helpers of the deployment checks (docker-compose.yml, Dockerfile, deploy/): no test here."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from aos_gateway.settings_doc import unknown_variables

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

_TAG = re.compile(r"[\w][\w.-]{0,127}")  # Docker's tag grammar
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_is_pinned(image: str) -> bool:
    """A version tag (not ``latest``, not missing) or a digest."""
    if _DIGEST.search(image):
        return True
    _, _, last = image.rpartition("/")  # a registry's :port sits before the last slash
    name, colon, tag = last.partition(":")
    return bool(name) and bool(colon) and _TAG.fullmatch(tag) is not None and tag != "latest"


@cache
def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def unknown_settings(names: typing.Iterable[str]) -> list[str]:
    """The ``AOS_`` names among ``names`` that no setting reads (case-insensitive, as pydantic-settings)."""
    return unknown_variables(names, nested_only=False)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def load_script(path: Path) -> types.ModuleType:
    """A script of deploy/ as a module (deploy/ is not a package)."""
    name = f"_deploy_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
