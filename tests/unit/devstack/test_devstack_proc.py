"""Port and pid-file helpers."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aos_gateway.devstack._proc import pid_alive, port_answers, port_taken, read_pid, spawn_detached, tail, wait_dead
from tests.ports import free_port


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_listening_port_is_taken_and_answers(listener: int) -> None:
    assert port_taken(listener)
    assert port_answers(listener)


def test_bound_but_not_listening_port_is_taken() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        assert port_taken(int(s.getsockname()[1]))


def test_free_port_is_not_taken() -> None:
    port = free_port()
    assert not port_taken(port)
    assert not port_answers(port)


def test_ipv6_mapped_listener_counts_as_taken() -> None:
    # the JVM listens on [::ffff:127.0.0.1]
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::ffff:127.0.0.1", 0))
        except OSError:
            pytest.skip("IPv4-mapped addresses unsupported")
        s.listen()
        assert port_taken(int(s.getsockname()[1]))


@pytest.mark.parametrize("content", ["", "abc", "-5", "0", "12 34"])
def test_garbled_pid_file_reads_as_none(tmp_path: Path, content: str) -> None:
    f = tmp_path / "x.pid"
    f.write_text(content)
    assert read_pid(f) is None


def test_pid_file_round_trip_and_missing(tmp_path: Path) -> None:
    f = tmp_path / "x.pid"
    assert read_pid(f) is None
    f.write_text(f"{os.getpid()}\n")
    assert read_pid(f) == os.getpid()


def test_own_process_is_alive() -> None:
    assert pid_alive(os.getpid())


def test_exited_detached_child_is_dead_not_a_zombie(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    pid = spawn_detached([sys.executable, "-c", "print('hi')"], log)
    assert wait_dead(pid, 10.0)  # reaped by pid_alive, not left as a zombie
    assert not pid_alive(pid)
    assert log.read_text().strip() == "hi"


def test_running_detached_child_is_alive_then_dead_after_kill(tmp_path: Path) -> None:
    pid = spawn_detached([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "out.log")
    try:
        assert pid_alive(pid)
        assert os.getsid(pid) == pid  # its own session: a Ctrl-C here does not reach it
    finally:
        os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid)


def test_tail_of_missing_and_long_files(tmp_path: Path) -> None:
    assert "does not exist" in tail(tmp_path / "nope.log")
    f = tmp_path / "a.log"
    f.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(f, 3) == "line 97\nline 98\nline 99"


def test_tail_since_shows_only_new_lines(tmp_path: Path) -> None:
    f = tmp_path / "a.log"
    f.write_text("old 1\nold 2\n")
    mark = f.stat().st_size
    with f.open("a") as out:
        out.write("new 1\n")
    assert tail(f, 10, since=mark) == "new 1"
    assert tail(f, 10, since=mark + 100) == "old 1\nold 2\nnew 1"  # a rotated (shorter) file: show its end


def test_memory_mb_reads_proc_status() -> None:
    from aos_gateway.devstack._proc import memory_mb

    now, peak = memory_mb(os.getpid()), memory_mb(os.getpid(), "VmHWM")
    assert now is not None and peak is not None and 0 < now <= peak
    assert memory_mb(2**22 + 12345) is None  # above pid_max: no such process
    assert memory_mb(os.getpid(), "NoSuchField") is None
