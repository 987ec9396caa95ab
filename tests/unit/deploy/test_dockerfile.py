"""The Dockerfile: pinned base image, CPU and CUDA variants, the package with its extras, non-root, ``aos worker``.

No Docker engine here: the instructions are parsed and checked; the image is not built.
"""

from __future__ import annotations

import fnmatch
import json
import re

import pytest
from deploy_checks import DOCKERFILE, ROOT, image_is_pinned, unknown_settings


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, args = logical.partition(" ")
        out.append((word.upper(), args.strip()))
        logical = ""
    return out


def _args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ARG defaults (the last one wins, as within a stage)."""
    defaults: dict[str, str] = {}
    for word, args in instructions:
        if word == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name] = value.strip("'\"")
    return defaults


INSTRUCTIONS = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
ARGS = _args(INSTRUCTIONS)


def _resolve(value: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: ARGS.get(m.group(1), m.group(0)), value)


def _from_images() -> list[str]:
    return [_resolve(args.split()[0]) for word, args in INSTRUCTIONS if word == "FROM"]


def test_every_base_image_is_pinned() -> None:
    images = _from_images()
    assert len(images) >= 2, "a build stage and a runtime stage"
    for image in images:
        assert "$" not in image, f"FROM {image}: an ARG without a default"
        assert image_is_pinned(image), f"FROM {image} is not pinned to a version tag"
        assert image.startswith("python:3.11."), f"FROM {image}: Python 3.11 with its patch version"


def test_torch_is_pinned_for_both_variants() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", ARGS["TORCH_VERSION"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", ARGS["TORCHVISION_VERSION"])
    assert ARGS["VARIANT"] == "cpu"
    torch_step = next(args for word, args in INSTRUCTIONS if word == "RUN" and "torch==" in args)
    assert "cpu)" in torch_step and "cuda)" in torch_step
    assert "--index-url" in torch_step and ARGS["TORCH_CPU_INDEX"].startswith("https://download.pytorch.org/whl/cpu")


def test_installs_the_package_with_its_extras() -> None:
    install = next(args for word, args in INSTRUCTIONS if word == "RUN" and "pip install '." in args)
    extras = re.search(r"pip install '\.\[([\w,]+)\]'", install)
    assert extras is not None
    assert {"vision", "audio"} <= set(extras.group(1).split(","))


def test_runs_as_non_root_with_entrypoint_aos_and_command_worker() -> None:
    users = [args for word, args in INSTRUCTIONS if word == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    entrypoint = json.loads(next(args for word, args in reversed(INSTRUCTIONS) if word == "ENTRYPOINT"))
    assert entrypoint[-1] == "aos"
    assert json.loads(next(args for word, args in reversed(INSTRUCTIONS) if word == "CMD")) == ["worker"]


def test_env_settings_are_real_settings() -> None:
    names = [
        pair.split("=", 1)[0] for word, args in INSTRUCTIONS if word == "ENV" for pair in args.split() if "=" in pair
    ]
    assert "AOS_WORKER__DATA_DIR" in names
    assert unknown_settings(names) == []


def _dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last matching rule wins,
    a rule matching a parent folder matches what is inside, ``**/`` matches at any depth."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        pattern = rule.removeprefix("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if hit:
            excluded = not rule.startswith("!")
    return excluded


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else() -> None:
    copied = [
        src
        for word, args in INSTRUCTIONS
        if word == "COPY" and not args.startswith("--from")
        for src in args.split()[:-1]
    ]
    assert {"pyproject.toml", "README.md", "schemas", "connectors", "aos_gateway"} <= set(copied)
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: missing"
        assert not _dockerignore_excludes(src), f".dockerignore drops {src}, which the Dockerfile copies"
    for private in (".venv", ".aos", ".git", "tests", "aos_gateway/__pycache__", "deploy"):
        assert _dockerignore_excludes(private), f"{private} would be sent to the Docker daemon"


@pytest.mark.parametrize("path", ["aos_gateway/settings.py", "schemas/aos.tasks.TaskRequest.avsc"])
def test_dockerignore_rule_reader(path: str) -> None:
    assert not _dockerignore_excludes(path)
    assert _dockerignore_excludes(".venv/bin/python")
