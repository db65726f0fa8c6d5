"""The ``reproduce --jobs N`` workers end with the process that started them (no orphans writing into runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = """
import multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor
from sb3_safemeta.reproduce.cli import exit_with_parent

if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(1, context, initializer=exit_with_parent, initargs=(os.getpid(), 0.1))
    print(pool.submit(os.getpid).result(), flush=True)  # one worker: the one that then sleeps
    pool.submit(time.sleep, 120)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """:return: whether ``pid`` runs (a zombie that no init reaps, as in some containers, counts as ended)"""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _orphan_after_parent_killed() -> tuple[int, bool]:
    """Start a pool's parent, kill it with SIGKILL; :return: the worker's pid and whether it runs 10 s later"""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())  # type: ignore[union-attr]
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10.0
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return worker, _alive(worker)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX re-parenting")
def test_workers_end_when_the_parent_is_killed():
    worker, alive = _orphan_after_parent_killed()
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the worker outlived its killed parent by 10 s"


def test_runs_in_worker_processes_finish(tmp_path):
    """``--jobs 2``: two smoke runs in the watched worker processes both finish, like the same runs in one process."""
    from sb3_safemeta.reproduce import BUDGETS, RunSpec
    from sb3_safemeta.reproduce.cli import run_all
    from sb3_safemeta.reproduce.runs import read_state, run_directory

    specs = [RunSpec("SafeMetaDual", "SafeMetaPointNav-v0", 0), RunSpec("MetaCPO", "SafeMetaPointNav-v0", 0)]
    results = run_all(specs, BUDGETS["smoke"], str(tmp_path), jobs=2, verbose=0)
    assert sorted(status for _, status in results) == ["done", "done"], results
    for spec in specs:
        assert read_state(run_directory(tmp_path, BUDGETS["smoke"], spec))["status"] == "done"
