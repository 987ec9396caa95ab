"""``aos dashboard`` in a real browser (Debian's headless Chromium) against the live stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_gateway.client import GatewayClient
from aos_gateway.settings import Settings
from tests.integration.conftest import run_aos, write_cards
from tests.ports import free_port

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1900",
    "--virtual-time-budget=10000",
]
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Chromium is not installed (scripts/setup installs Debian's chromium package)")
    return exe


@pytest.fixture(scope="module")
def dashboard(stack_env: dict[str, str], sinks: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("dashboard") / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aos_gateway.cli.main", "dashboard", "--port", str(port)],
        env={**os.environ, **stack_env, "AOS_DASHBOARD__REFRESH_S": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with _NO_PROXY.open(url + "healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, "aos dashboard exited"
            assert time.monotonic() < deadline, "aos dashboard did not answer"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def _figures(url: str) -> dict[str, Any]:
    with _NO_PROXY.open(url + "api/dashboard", timeout=10) as r:
        body: dict[str, Any] = json.loads(r.read())
        return body


def test_bad_arguments_get_one_line(stack_env: dict[str, str]) -> None:
    out = run_aos(stack_env, "dashboard", "--port", "70000", check=False)
    assert out.returncode != 0 and "a port is 1..65535" in out.stderr and "Traceback" not in out.stderr


def test_the_page_shows_a_task_within_seconds_of_its_result_in_a_real_browser(
    settings: Settings,
    stack_env: dict[str, str],
    worker: subprocess.Popen[bytes],
    dashboard: str,
    tmp_path: Path,
) -> None:
    tag = uuid.uuid4().hex[:6]
    path = write_cards(
        tmp_path / "cards.jsonl",
        # a domain no other test's agents cover (the registry is shared by the session's tests)
        [{"agent_id": f"Birdsong-{tag}", "description": "Identifies bird species from recordings of their songs."}],
    )
    run_aos(stack_env, "agents", "register", str(path), "--wait")
    text = f"Which bird species sings this melodic whistle at dawn? dash-{tag}"
    with GatewayClient(settings) as client:
        client.listen(executions=True)
        tid = client.submit(text)
        client.flush()
        client.wait(tid, 60)
        client.wait_execution(tid, 60)
        t_result = time.monotonic()
    # the JSON the page polls: the task shows up with its result, within seconds
    while True:
        d = _figures(dashboard)
        row = next((x for x in d["decisions"] if x["task_id"] == tid), None)
        if row is not None and row["result"] is not None:
            break
        late = time.monotonic() - t_result
        assert late < 30, f"task not on the dashboard 30 s after its result: {d['decisions'][:3]}"
        time.sleep(0.2)
    lag = time.monotonic() - t_result
    print(f"dashboard shows the result {lag:.2f}s after the client saw it")
    assert row["top_agent"] == f"Birdsong-{tag}" and row["status"] == "PLANNED"
    assert d["totals"]["tasks"] >= 1 and d["stages"] and d["agents"]

    # the page itself, rendered by Chromium (plotly.js served by the dashboard: no network)
    chromium = _chromium()
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([*common, "--dump-dom", dashboard], capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / "dashboard.png"
    subprocess.run([*common, f"--screenshot={shot}", dashboard], capture_output=True, timeout=120, check=True)
    keep = os.environ.get("AOS_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "dashboard.png")
    print(f"screenshot: {shot}")

    err = re.search(r'<span id="error">([^<]*)</span>', dom)
    assert err is not None and err.group(1) == "", err
    assert 'data-loaded="0"' not in dom, "the page never rendered its figures"
    assert f"dash-{tag}" in dom and f"Birdsong-{tag}" in dom  # the decision row, with its agent
    for plot in ("throughput", "stages", "agents", "curve"):
        assert re.search(f'id="plot-{plot}"[^>]*data-state="plot"', dom), f"{plot} was not drawn"
    assert dom.count('class="main-svg"') >= 8  # plotly drew (two svg layers per plot)
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
