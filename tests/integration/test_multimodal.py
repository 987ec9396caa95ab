"""Image and audio tasks end to end: the real encoders in the real worker, on the real broker.

The speech clip is synthesised by espeak-ng and transcribed by Whisper tiny.en (synthetic speech
is hard on a tiny model: the transcript is judged by word overlap). No CLIP weights ship here, so
images are encoded by the real ViT-B-32 architecture with random weights, and every plan of an
image task must say so.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from aos_gateway.cli.deadletter_cmds import dead_letters
from aos_gateway.client import GatewayClient, new_task
from aos_gateway.contracts.records import MediaPart
from aos_gateway.settings import Settings
from tests.integration.conftest import run_aos, write_cards

pytestmark = pytest.mark.integration

SPOKEN = "what is the weather forecast for Paris tomorrow"


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def agents(
    tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str], worker: subprocess.Popen[bytes]
) -> dict[str, str]:
    """This module's agents, visible to its own tenant only: other modules' tasks never see them."""
    tag = uuid.uuid4().hex[:6]
    ids = {"weather": f"Weather-{tag}", "vision": f"Vision-{tag}", "sql": f"SQL-{tag}", "tenant": f"mm-{tag}"}
    cards = [
        {"agent_id": ids["weather"], "description": "Weather forecasts and current conditions for any city."},
        {
            "agent_id": ids["vision"],
            "description": "Describes photos and images: objects, scenes and colours.",
            "modalities": ["text", "image"],
        },
        {"agent_id": ids["sql"], "description": "Converts a natural language question into an SQL query."},
    ]
    for c in cards:
        c["tenant"] = ids["tenant"]
    path = write_cards(tmp_path_factory.mktemp("cards") / "cards.jsonl", cards)
    run_aos(stack_env, "agents", "register", str(path), "--wait")
    return ids


def _png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (96, 64), (255, 255, 255))
    ImageDraw.Draw(img).rectangle((20, 10, 70, 50), fill=color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_submit_audio_wait_json_returns_a_plan_with_the_clips_words(
    tmp_path: Path, stack_env: dict[str, str], agents: dict[str, str]
) -> None:
    wav = tmp_path / "sample.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), SPOKEN], check=True, capture_output=True)
    tenant = agents["tenant"]
    out = run_aos(stack_env, "submit", "--audio", str(wav), "--tenant", tenant, "--wait", "--json", "--timeout", "90")
    plan = json.loads(out.stdout)
    heard = _words(plan["transcript"] or "")
    overlap = len(heard & _words(SPOKEN)) / len(_words(SPOKEN))
    assert overlap >= 0.5, f"transcript {plan['transcript']!r} shares {overlap:.0%} of the words"
    assert plan["modalities"] == ["audio"] and plan["status"] == "PLANNED"
    # what was heard is routed as the words would be
    said = json.loads(run_aos(stack_env, "submit", "--text", SPOKEN, "--tenant", tenant, "--wait", "--json").stdout)
    assert plan["steps"][0]["agent_id"] == said["steps"][0]["agent_id"], (plan, said)


def test_text_and_image_task_flows_and_says_the_clip_weights_are_random(
    tmp_path: Path, stack_env: dict[str, str], agents: dict[str, str]
) -> None:
    img = tmp_path / "red.png"
    img.write_bytes(_png((220, 20, 20)))
    ask = ("submit", "--text", "Describe the objects in this photo", "--tenant", agents["tenant"], "--wait", "--json")
    plan = json.loads(run_aos(stack_env, *ask, "--image", str(img)).stdout)
    assert plan["status"] == "PLANNED" and plan["modalities"] == ["text", "image"]
    text_only = json.loads(run_aos(stack_env, *ask).stdout)
    # the text leads while fusion is untrained: the same agent as for the text alone
    assert plan["steps"][0]["agent_id"] == text_only["steps"][0]["agent_id"]
    assert any("RANDOM CLIP weights" in n for n in plan["notes"]), plan["notes"]


def test_image_only_task_is_matched_in_the_clip_space(
    tmp_path: Path, stack_env: dict[str, str], agents: dict[str, str]
) -> None:
    img = tmp_path / "blue.png"
    img.write_bytes(_png((20, 20, 220)))
    out = run_aos(
        stack_env, "submit", "--image", str(img), "--tenant", agents["tenant"], "--wait", "--json", check=False
    )
    plan = json.loads(out.stdout)
    assert plan["modalities"] == ["image"] and any("RANDOM CLIP weights" in n for n in plan["notes"])
    assert any("CLIP space" in n for n in plan["notes"])
    # random weights: whichever agent comes first means nothing, but the task was matched or
    # abstained for a stated reason, never lost
    assert plan["status"] == "PLANNED" or "below the threshold" in (plan["reason"] or ""), plan


def test_bad_media_is_dead_lettered_alone_and_the_batch_goes_on(settings: Settings, agents: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]

    def part(data: bytes, mime: str) -> MediaPart:
        return MediaPart(mime_type=mime, data=data, uri=None, size_bytes=len(data), sha256=None)

    bad = {
        f"{tag}-corrupt-image": new_task(
            "look at this", task_id=f"{tag}-corrupt-image", image=part(b"\x89PNG\r\n\x1a\nbroken", "image/png")
        ),
        f"{tag}-not-audio": new_task(
            None, task_id=f"{tag}-not-audio", audio=part(b"RIFF....WAVEjunk" * 10, "audio/wav")
        ),
        f"{tag}-missing-ref": new_task(
            None,
            task_id=f"{tag}-missing-ref",
            image=MediaPart(
                mime_type="image/png", data=None, uri="file:///nonexistent/x.png", size_bytes=0, sha256=None
            ),
        ),
    }
    good = new_task("Weather in Oslo this weekend", task_id=f"{tag}-good", tenant=agents["tenant"])
    with GatewayClient(settings) as client:
        for req in [*bad.values(), good]:
            client.submit(req)
        plan = client.wait(good["task_id"], timeout=60)
    assert plan["status"] == "PLANNED"
    found: dict[str, dict] = {}  # type: ignore[type-arg]
    deadline = time.monotonic() + 30
    while len(found) < len(bad) and time.monotonic() < deadline:
        found = {d["task_id"]: d for d in dead_letters(settings) if (d["task_id"] or "").startswith(tag)}
        time.sleep(0.5)
    assert set(found) == set(bad)
    assert all(d["stage"] == "perceive" for d in found.values())
    assert "image" in found[f"{tag}-corrupt-image"]["reason"]
    assert "audio" in found[f"{tag}-not-audio"]["reason"]
    assert (
        "not found" in found[f"{tag}-missing-ref"]["reason"] or "No such file" in found[f"{tag}-missing-ref"]["reason"]
    )
