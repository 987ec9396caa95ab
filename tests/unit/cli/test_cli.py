from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aos_gateway.cli.main import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["frobnicate"], "invalid choice"),
        (["submit"], "--text"),
        (["bench", "pipeline", "--rate", "-1"], "must be > 0"),
        (["agents", "register", "/no/such/file.jsonl"], "no such file"),
        (["bench", "network", "--data", "/no/such/dir"], "no such folder"),
        (["bench", "network", "--instances", "0"], "must be > 0"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "matching", "--agents", __file__, "--train", __file__, "--test", __file__, "--fallback"],
        ["learn", "matching", "--agents", __file__, "--train", __file__, "--fallback"],
        ["learn", "matching", "--from-experience", "--feedback", "bandit", "--fallback"],
    ],
)
def test_fallback_without_bandit_feedback_from_a_file_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2  # checked before any file is read or Kafka reached
    err = capsys.readouterr().err
    assert "--fallback needs --feedback bandit" in err and len(err.strip().splitlines()) == 1


def test_unreachable_kafka_is_one_line_exit_1() -> None:
    env = {"AOS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "AOS_KAFKA__REQUEST_TIMEOUT_S": "2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "aos_gateway.cli.main", "topics", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.startswith("aos:")]
    assert len(lines) == 1 and "cannot reach Kafka" in lines[0] and "Traceback" not in out.stderr


def test_importing_the_package_does_not_import_torch_or_faust() -> None:
    code = (
        "import sys, aos_gateway, aos_gateway.contracts, aos_gateway.settings, aos_gateway.topics, aos_gateway.client; "
        "print('torch' in sys.modules, 'faust' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_network_plan_reads_as_stages_with_roles_and_dependencies() -> None:
    from aos_gateway.cli.main import format_plan

    step = {
        "step_id": "s2",
        "stage": 1,
        "agent_id": "pdf",
        "agent_name": "PDF",
        "score": 0.9,
        "depends_on": ["s1"],
        "timeout_ms": 1000,
        "retries": 1,
        "fallback_agent_id": "p2",
        "expected_latency_ms": 200,
        "role": "convert it into a PDF",
    }
    plan = {
        "task_id": "t",
        "status": "PLANNED",
        "reason": None,
        "planner": "network-genetic",
        "predicted_quality": 0.5,
        "estimated_duration_ms": 1100,
        "steps": [step],
        "notes": [],
        "timings": {"submitted": 1, "planned": 31},
    }
    out = format_plan(plan)
    assert "network-genetic: predicted quality 0.500, estimated 1100 ms" in out
    assert "stage 1 s2: PDF for 'convert it into a PDF' (score 0.900, after s1, fallback p2)" in out


def test_learn_matching_from_unlabelled_tasks_writes_a_state_of_adapted_prototypes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aos_gateway.matching.learned import LearnedState

    agents, tasks, out = tmp_path / "agents.jsonl", tmp_path / "tasks.jsonl", tmp_path / "state.npz"
    agents.write_text(
        json.dumps({"agent_id": "Weather", "description": "Forecasts for any city."})
        + "\n"
        + json.dumps({"agent_id": "News", "description": "Headlines of the day."})
        + "\n"
    )
    asks = ["Will it rain in Oslo tomorrow?", "What happened in the markets today?", "Is it sunny in Rome?"]
    tasks.write_text("".join(json.dumps({"text": t}) + "\n" for t in asks))  # no "gold": unlabelled
    argv = ["learn", "matching", "--agents", str(agents), "--train", str(tasks), "--feedback", "none"]
    assert main([*argv, "--no-publish", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prototypes"] and report["memories"] == 0 and report["tasks"] == 3 and report["version"] is None
    state = LearnedState.from_bytes(out.read_bytes())
    assert state.agent_ids == ["Weather", "News"] and state.prototypes is not None
    assert state.prototypes.shape == (2, 384) and state.metadata["feedback"] == "none" and state.metadata["model"]
    # a labelled mode refuses the same file: it names the line without a right agent
    assert main([*argv[:-1], "gold", "--no-publish"]) == 1
    assert "tasks.jsonl:1" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["bandit", "none"])
def test_a_feedback_mode_with_the_experience_history_is_a_usage_error(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["learn", "matching", "--from-experience", "--feedback", mode]) == 2  # before Kafka is reached
    err = capsys.readouterr().err
    assert "--feedback applies to a --train file" in err and len(err.strip().splitlines()) == 1
