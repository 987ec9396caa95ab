from __future__ import annotations

import argparse
import json
import shutil
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
        # bad numbers and paths (the same limits as the HTTP ingress; paths checked before any work)
        (["submit", "--text", "hi", "--top-k", "-3"], "1..100"),
        (["submit", "--text", "hi", "--top-k", "0"], "1..100"),
        (["submit", "--text", "hi", "--top-k", "101"], "1..100"),  # the ingress's limit too
        (["submit", "--text", "hi", "--max-cost", "-1"], "must be >= 0"),
        (["submit", "--text", "hi", "--max-latency-ms", "-1"], "0..2147483647"),
        (["deadletter", "list", "--limit", "-1"], "must be >= 0"),  # 0: all of them
        (["connect", "apply", "--wait", "-3"], "must be >= 0"),
        (["connect", "apply", "--dir", "/no/such/dir"], "no such folder"),
        (["bench", "encoder", "--n", "0"], "must be > 0"),
        (["bench", "index", "--queries", "-1"], "must be > 0"),
        (["bench", "index", "--seed", "-1"], "must be >= 0"),
        (["bench", "network", "--dev-limit", "-1"], "must be >= 0"),
        (["eval", "matching", "--agents", __file__, "--train", __file__, "--test", __file__, "--limit", "-2"], "> 0"),
        (
            ["learn", "matching", "--from-experience", "--out", "/no/such/dir/state.npz", "--no-publish"],
            "no such folder",
        ),
        (["learn", "matching", "--from-experience", "--out", "/", "--no-publish"], "is a folder"),
        (["learn", "network", "--out", "/no/such/dir/model.npz", "--no-publish"], "no such folder"),
        (["agents", "register", "/"], "is a folder, not a file"),
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


# -- arguments refused before any work (user review) --


def test_an_unknown_option_before_the_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2 and "unrecognized option --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "aos-gateway" in capsys.readouterr().out


def test_an_unrecognized_argument_is_reported_by_its_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["submit", "--text", "hi", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("aos submit: error: unrecognized arguments: --bogus") and len(err.strip().splitlines()) == 1


def _pillow() -> bool:
    import importlib.util

    return importlib.util.find_spec("PIL") is not None


@pytest.mark.parametrize(
    ("kind", "content", "needle"),
    [
        pytest.param(
            "image",
            b"root:x:0:0:root:/root:/bin/bash\n",
            "not an image",
            marks=pytest.mark.skipif(not _pillow(), reason="pillow not installed"),
        ),
        pytest.param(
            "audio",
            b"root:x:0:0:root:/root:/bin/bash\n",
            "not audio",
            marks=pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed"),
        ),
        ("image", b"", "empty"),
        ("audio", b"", "empty"),
    ],
)
def test_a_media_file_that_perception_would_refuse_is_refused_before_sending(
    kind: str, content: bytes, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "passwd"
    f.write_bytes(content)
    assert main(["submit", f"--{kind}", str(f), "--wait"]) == 2  # a usage error, before Kafka is reached
    err = capsys.readouterr().err
    assert err.startswith(f"aos submit: error: --{kind} {f}: ") and needle in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("env", "lines"),
    [
        (
            {"AOS_MATCHING__TOP_K": "abc"},
            ["aos: error: bad setting AOS_MATCHING__TOP_K: Input should be a valid integer"],
        ),
        (
            {"AOS_MATCHING__TOP_K": "abc", "AOS_POSTGRES__PORT": "notaport"},
            ["bad setting AOS_MATCHING__TOP_K:", "bad setting AOS_POSTGRES__PORT:"],
        ),
    ],
)
def test_a_bad_setting_is_one_line_per_field(
    env: dict[str, str], lines: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aos_gateway.settings import get_settings

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()  # read once per process: read this environment
    try:
        assert main(["agents", "list"]) == 1
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(lines) and "unexpected error" not in "".join(err)
    assert all(any(want in got for got in err) for want in lines)
    assert any("(got 'abc')" in got for got in err)


def test_a_step_no_agent_ran_reads_as_such() -> None:
    from aos_gateway.cli.main import format_result

    step = {"step_id": "s1", "status": "FAILED", "agent_id": None, "attempts": 0, "fallback_used": False}
    res = {
        "task_id": "t",
        "status": "FAILED",
        "reason": "no agent",
        "started_at": 1,
        "finished_at": 3,
        "output": None,
        "steps": [{**step, "output": None, "error": "no candidate"}],
    }
    out = format_result(res)
    assert "s1 FAILED (no agent ran, 0 attempts): no candidate" in out and "None" not in out
    res["steps"] = [{**step, "agent_id": "calc", "attempts": 2, "output": "84", "error": None}]
    assert "s1 FAILED by calc (2 attempts): '84'" in format_result(res)
    # on its fallback: the planned agent's error beside the answer (a review found it nowhere)
    fb = {**step, "status": "SUCCEEDED", "agent_id": "b", "attempts": 3, "fallback_used": True}
    res["steps"] = [{**fb, "output": "42", "error": "answered by the fallback; a: boom"}]
    assert "s1 SUCCEEDED by b (3 attempts, on its fallback): '42' (answered by the fallback; a: boom)" in format_result(
        res
    )


@pytest.mark.parametrize(
    ("states", "rc"),
    [
        ([(True, True, "pid 1"), (True, True, "pid 2")], 0),
        ([(True, True, "pid 1"), (False, False, "stopped")], 1),
        ([(True, True, "pid 1"), (True, False, "pid 3; 1 connectors: sink FAILED")], 1),
    ],
)
def test_dev_status_exits_1_when_a_part_is_down_or_failed(
    states: list[tuple[bool, bool, str]], rc: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import aos_gateway.devstack as devstack
    from aos_gateway.devstack.status import PartStatus

    parts = [
        PartStatus(f"part{i}", "127.0.0.1:1", running, healthy, d) for i, (running, healthy, d) in enumerate(states)
    ]

    class FakeStack:
        def __init__(self, _settings: object) -> None:
            pass

        def status(self) -> list[PartStatus]:
            return parts

    monkeypatch.setattr(devstack, "LocalStack", FakeStack)
    assert main(["dev", "status"]) == rc
    assert len(capsys.readouterr().out.strip().splitlines()) == len(states)  # the output is unchanged


def test_worker_stop_says_when_none_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from aos_gateway.cli import worker_proc

    stopped: list[str] = []
    monkeypatch.setattr(worker_proc, "running_pid", lambda _s, name="worker": None)  # never a real worker's pid
    monkeypatch.setattr(worker_proc, "stop", lambda _s, _p, name="worker": stopped.append(name))
    assert main(["worker", "--stop"]) == 0
    assert "worker: none running in the background" in capsys.readouterr().err and stopped == ["worker"]


def test_worker_status_and_exclusive_options(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aos_gateway.cli import worker_proc

    monkeypatch.setattr(worker_proc, "running_pid", lambda _s, name="worker": None)
    assert main(["worker", "--status"]) == 1
    assert "worker: not running in the background" in capsys.readouterr().out
    monkeypatch.setattr(worker_proc, "running_pid", lambda _s, name="worker": 4242)
    assert main(["worker", "--status"]) == 0
    assert "worker: running (pid 4242" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:  # a review: --stop --detach was taken (help says one or the other)
        main(["worker", "--stop", "--detach"])
    assert done.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_eval_refuses_an_empty_file_and_a_line_without_gold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agents, train, empty, nogold = (tmp_path / n for n in ("a.jsonl", "t.jsonl", "empty.jsonl", "nogold.jsonl"))
    agents.write_text(json.dumps({"agent_id": "Weather", "description": "Forecasts."}) + "\n")
    train.write_text(json.dumps({"text": "rain?", "gold": ["Weather"]}) + "\n")
    empty.write_text("\n")
    nogold.write_text(json.dumps({"text": "rain?"}) + "\n")
    base = ["eval", "matching", "--agents", str(agents)]
    assert main([*base, "--train", str(train), "--test", str(empty)]) == 1
    assert f"aos: error: no tasks in {empty}" in capsys.readouterr().err
    assert main([*base, "--train", str(nogold), "--test", str(train)]) == 1
    assert f'{nogold}:1: no "gold" (a list of agent ids)' in capsys.readouterr().err
    assert main(["eval", "matching", "--agents", str(empty), "--train", str(train), "--test", str(train)]) == 1
    assert "no agent cards in" in capsys.readouterr().err


def test_submit_takes_an_image_url_as_a_reference() -> None:
    """A review: `--image https://example.com/x.png` was read as a path: "not found: https:/example.com/x.png"."""
    from aos_gateway.cli.main import url_media_part

    part = url_media_part("image", "https://example.com/photos/x.png?size=2")
    assert part == {
        "mime_type": "image/png",
        "data": None,
        "uri": "https://example.com/photos/x.png?size=2",
        "size_bytes": 0,
        "sha256": None,
    }
    assert url_media_part("audio", "http://h/clip")["mime_type"] == "audio/*"
    with pytest.raises(argparse.ArgumentError, match="no host"):
        url_media_part("image", "https:///x.png")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "--text", "   "], "--text is blank"),
        (["submit", "--text", "hi", "--tenant", ""], "a tenant name cannot be empty"),
        (["submit", "--text", "hi", "--tenant", "a b/../c"], "no spaces, slashes or control characters"),
    ],
)
def test_submit_refuses_a_blank_text_and_a_bad_tenant(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
