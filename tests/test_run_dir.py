"""
Run directories (sb3_safemeta.common.run_dir) and the main job's lock, atomic writes and resume rules
(issue 16, findings 1-4 and 6). Tiny budgets: a meta-iteration of 2 tasks x 2 envs x 100 steps.
"""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

from sb3_safemeta import SafeMetaDual
from sb3_safemeta.__main__ import RunStateError, main
from sb3_safemeta.common import callbacks as callbacks_module
from sb3_safemeta.common.run_dir import (
    RunLock,
    RunLockedError,
    atomic_path,
    atomic_write_bytes,
    remove_stale_temporaries,
    temporary_name,
)

TINY = ["--meta-batch-size", "2", "--n-envs", "2", "--n-steps", "100", "--test-tasks", "1", "--adapt-steps", "1",
        "--no-baseline"]  # fmt: skip
REPO = pathlib.Path(__file__).resolve().parents[1]
# the children load run_dir.py alone (standard library only): no torch import, they start in milliseconds
LOAD_RUN_DIR = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("run_dir", {str(REPO / "sb3_safemeta" / "common" / "run_dir.py")!r})
run_dir = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_dir)
"""
HOLD_LOCK = (
    LOAD_RUN_DIR
    + """
import sys, time
run_dir.RunLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(120)
"""
)


def python_child(code: str, *args: str) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )


def progress_iterations(path: pathlib.Path) -> list[int]:
    with open(path, newline="") as handle:
        return [int(float(row["meta/iterations"])) for row in csv.DictReader(handle)]


def progress_rows(path: pathlib.Path) -> dict[int, dict[str, str]]:
    with open(path, newline="") as handle:
        return {int(float(row["meta/iterations"])): row for row in csv.DictReader(handle)}


# ---------------------------------------------------------------- the lock
def test_a_second_lock_is_refused_with_the_holder_and_a_stale_lock_is_taken_over(tmp_path: pathlib.Path) -> None:
    child = python_child(HOLD_LOCK, str(tmp_path))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"pid {child.pid} on host .*started 20") as caught:
            RunLock(tmp_path).acquire()
        assert caught.value.holder["pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # kill -9 never released the lock: its record stays, the kernel's lock is gone
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == child.pid
    with RunLock(tmp_path) as lock:
        assert lock.stale_holder is not None and lock.stale_holder["pid"] == child.pid
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):  # not re-entrant, even in one process
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path) as lock:  # released cleanly: nothing stale
        assert lock.stale_holder is None


# ---------------------------------------------------------------- atomic writes
def test_temporary_names_are_unique_per_process_and_call_and_keep_the_suffix(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "meta_policy.zip"
    names = {temporary_name(target) for _ in range(50)}
    assert len(names) == 50
    assert all(name.suffix == ".zip" and f".{os.getpid()}." in name.name and name.parent == tmp_path for name in names)


def test_concurrent_writers_of_one_file_never_collide(tmp_path: pathlib.Path) -> None:
    """Finding 1: a shared temporary name made one of two overlapping checkpoint writers crash on the rename."""
    target, errors = tmp_path / "checkpoints" / "safemeta_latest.zip", []

    def writer(byte: int) -> None:
        try:
            for _ in range(30):
                atomic_write_bytes(target, bytes([byte]) * 200_000)
        except Exception as error:  # pragma: no cover - the failure this test guards against
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(byte,)) for byte in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    content = target.read_bytes()
    assert len(content) == 200_000 and len(set(content)) == 1
    assert [path.name for path in target.parent.iterdir()] == [target.name]


def test_a_failed_write_leaves_the_old_file(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "meta_test.json"
    target.write_text('{"old": 1}')
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temporary:
        temporary.write_text('{"new"')
        raise KeyboardInterrupt  # the writer dies half-way
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["meta_test.json"]


KEEP_WRITING = (
    LOAD_RUN_DIR
    + """
import sys
print('writing', flush=True)
for index in range(10_000):
    run_dir.atomic_write_bytes(sys.argv[1], bytes([index % 250 + 1]) * 3_000_000)
"""
)


def test_kill_9_during_writes_leaves_a_complete_file(tmp_path: pathlib.Path) -> None:
    """Finding 3: a kill during a write left a zip that failed with "wasn't a zip-file"."""
    target = tmp_path / "meta_policy.zip"
    for delay in (0.3, 0.55, 0.8):
        child = python_child(KEEP_WRITING, str(target))
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        if target.exists():
            content = target.read_bytes()
            assert len(content) == 3_000_000 and len(set(content)) == 1
        removed = remove_stale_temporaries(tmp_path)
        assert all(".tmp" in path.name for path in removed)
        assert [path.name for path in tmp_path.iterdir()] in ([], ["meta_policy.zip"])


# ---------------------------------------------------------------- the main job
def test_a_main_job_on_a_locked_out_stops_before_writing(tmp_path: pathlib.Path) -> None:
    """Finding 1, fast: the folder is held by another process; the main job names it and writes nothing."""
    child = python_child(HOLD_LOCK, str(tmp_path))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {child.pid} on host"):
            main([*TINY, "--meta-iterations", "1", "--out", str(tmp_path)])
        assert sorted(path.name for path in tmp_path.iterdir()) == [".lock"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    main([*TINY, "--meta-iterations", "1", "--out", str(tmp_path)])  # the holder died: its lock is taken over
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "finished"


@pytest.mark.expensive
def test_two_main_jobs_on_one_out(tmp_path: pathlib.Path) -> None:
    """Finding 1: the second job stops with the holder's pid before it writes anything; the first is intact."""
    code = "import sys\nfrom sb3_safemeta.__main__ import main\nmain(sys.argv[1:])\n"
    first = python_child(code, *TINY, "--meta-iterations", "3", "--seed", "0", "--out", str(tmp_path))
    try:
        deadline = time.time() + 60
        while not (tmp_path / "run.json").exists():  # written under the lock
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        with pytest.raises(RunLockedError, match=f"pid {first.pid}"):
            main([*TINY, "--meta-iterations", "3", "--seed", "1", "--out", str(tmp_path)])
    finally:
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert progress_iterations(tmp_path / "progress.csv") == [1, 2, 3]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["options"]["seed"] == 0 and run["status"] == "finished"
    assert SafeMetaDual.load(tmp_path / "meta_policy.zip").meta_iterations == 3


class Killed(BaseException):
    """Stands for kill -9 in-process: nothing after it runs (the lock is released as the kernel would)."""


def kill_after_meta_iteration(monkeypatch: pytest.MonkeyPatch, iteration: int, before_checkpoint: bool = False) -> None:
    """Die at the end of meta-iteration ``iteration``: after its progress row, before or after its checkpoint."""
    original = callbacks_module.MetaCheckpointCallback._on_meta_iteration_end

    def dying(self: callbacks_module.MetaCheckpointCallback) -> bool:
        if before_checkpoint and self.model.meta_iterations == iteration:
            raise Killed
        result = original(self)
        if self.model.meta_iterations == iteration:
            raise Killed
        return result

    monkeypatch.setattr(callbacks_module.MetaCheckpointCallback, "_on_meta_iteration_end", dying)


def test_resume_after_a_kill_logs_each_iteration_once_and_matches_an_uninterrupted_run(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 6: iterations redone after the checkpoint appeared twice in the progress log."""
    arguments = [*TINY, "--meta-iterations", "2", "--checkpoint-every", "1"]
    main([*arguments, "--out", str(tmp_path / "whole")])
    with monkeypatch.context() as patch:
        kill_after_meta_iteration(patch, 2, before_checkpoint=True)  # iteration 2 is logged, the checkpoint holds 1
        with pytest.raises(Killed):
            main([*arguments, "--out", str(tmp_path / "cut")])
    assert progress_iterations(tmp_path / "cut" / "progress.csv") == [1, 2]
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "training"
    main(["--resume", "--out", str(tmp_path / "cut")])  # the run's options come from run.json
    whole, cut = progress_rows(tmp_path / "whole" / "progress.csv"), progress_rows(tmp_path / "cut" / "progress.csv")
    assert sorted(cut) == [1, 2]
    for iteration in (1, 2):  # the resumed run is bit-identical: the same logged values, the timings aside
        for key, value in whole[iteration].items():
            if not key.startswith("time/"):
                assert cut[iteration][key] == value, (iteration, key)
    np.testing.assert_array_equal(
        json.loads((tmp_path / "cut" / "meta_test.json").read_text())["returns"],
        json.loads((tmp_path / "whole" / "meta_test.json").read_text())["returns"],
    )


def test_resume_of_a_finished_run_changes_nothing(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 2: --resume of a finished run trained one more meta-iteration and overwrote the results."""
    main([*TINY, "--meta-iterations", "1", "--out", str(tmp_path)])
    before = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in tmp_path.iterdir() if path.is_file()}
    capsys.readouterr()
    report = main([*TINY, "--meta-iterations", "1", "--resume", "--out", str(tmp_path)])
    assert "holds a finished run (1 meta-iterations" in capsys.readouterr().out
    after = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in tmp_path.iterdir() if path.is_file()}
    assert after.keys() == before.keys()
    for name in before:
        if name != ".lock":
            assert after[name] == before[name], name
    np.testing.assert_array_equal(report.returns, json.loads((tmp_path / "meta_test.json").read_text())["returns"])
    # without --resume an existing run is never overwritten
    with pytest.raises(RunStateError, match=r"already holds a run .*--resume"):
        main([*TINY, "--meta-iterations", "1", "--out", str(tmp_path)])


def test_resume_of_a_run_killed_during_its_final_save_trains_no_more(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 2 (second case): killed while writing meta_policy.zip, the resumed run saved one more iteration."""
    original_save = SafeMetaDual.save

    def dying_save(self: SafeMetaDual, path, *args, **kwargs) -> None:
        if pathlib.Path(path).name.startswith(".meta_policy.zip"):
            pathlib.Path(path).write_bytes(b"PK\x03\x04 half a zip")
            raise Killed
        original_save(self, path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(SafeMetaDual, "save", dying_save)
        with pytest.raises(Killed):
            main([*TINY, "--meta-iterations", "2", "--checkpoint-every", "1", "--out", str(tmp_path)])
    assert not (tmp_path / "meta_policy.zip").exists()  # never half-written
    main(["--resume", "--out", str(tmp_path)])
    assert zipfile.is_zipfile(tmp_path / "meta_policy.zip")
    assert SafeMetaDual.load(tmp_path / "meta_policy.zip").meta_iterations == 2
    assert progress_iterations(tmp_path / "progress.csv") == [1, 2]
    assert not [path for path in tmp_path.rglob("*") if ".tmp" in path.name]


def test_resume_refuses_changed_options_unless_overridden(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 4: --resume with changed options silently trained with the saved ones."""
    with monkeypatch.context() as patch:
        kill_after_meta_iteration(patch, 1)
        with pytest.raises(Killed):
            main([*TINY, "--meta-iterations", "2", "--checkpoint-every", "1", "--out", str(tmp_path)])
    changed = ["--cost-limit", "3", "--meta-batch-size", "3", "--target-kl", "0.05"]
    with pytest.raises(RunStateError) as caught:
        main(["--resume", *changed, "--out", str(tmp_path)])
    message = str(caught.value)
    for text in (
        "--cost-limit: run 10.0, given 3.0",
        "--meta-batch-size: run 2, given 3",
        "--target-kl: run 0.01, given 0.05",
    ):
        assert text in message
    assert "--override meta-batch-size,cost-limit,target-kl" in message
    with pytest.raises(SystemExit):  # the model's buffers and task stream cannot change
        main(["--resume", "--n-steps", "50", "--override", "n-steps", "--out", str(tmp_path)])
    main(["--resume", *changed, "--override", "cost-limit,meta-batch-size", "--override", "target-kl", "--out", str(tmp_path)])
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "finished"
    assert run["options"]["cost_limit"] == 3.0 and run["options"]["meta_batch_size"] == 3
    assert run["overrides"][0]["after_meta_iterations"] == 1  # the checkpoint's
    assert run["overrides"][0]["changes"] == {
        "--cost-limit": [10.0, 3.0],
        "--meta-batch-size": [2, 3],
        "--target-kl": [0.01, 0.05],
    }
    model = SafeMetaDual.load(tmp_path / "meta_policy.zip")
    assert model.meta_batch_size == 3 and model.target_kl == 0.05
    np.testing.assert_array_equal(model.cost_limit, [3.0])
    assert json.loads((tmp_path / "meta_test.json").read_text())["cost_limits"] == [[3.0]]


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--test-tasks", "0", "argument --test-tasks: must be >= 1, got 0"),  # finding 8: failed after training
        ("--adapt-steps", "-1", "argument --adapt-steps: must be >= 0, got -1"),  # finding 8
        ("--meta-batch-size", "0.5", "argument --meta-batch-size: expected an integer, got '0.5'"),
        ("--n-steps", "0", "argument --n-steps: must be >= 1, got 0"),
        ("--target-kl", "nan", "argument --target-kl: must be > 0, got nan"),
        ("--cost-limit", "-1", "argument --cost-limit: must be >= 0, got -1"),
        ("--env", "CartPole-v1", "argument --env: CartPole-v1 is not a task family"),  # finding 7: AttributeError
        ("--env", "NoSuchFamily-v0", "argument --env:"),
        ("--override", "target-kl", "argument --override: only with --resume"),
    ],
)
def test_cli_options_are_checked_before_any_work(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], option: str, value: str, expected: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([option, value, "--out", str(tmp_path / "out")])
    assert caught.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was written


@pytest.mark.expensive
def test_kill_9_of_the_main_job_during_training_then_resume(tmp_path: pathlib.Path) -> None:
    """A real kill -9 after the first checkpoint: the resumed run takes over the stale lock and ends like a whole run."""
    code = "import sys\nfrom sb3_safemeta.__main__ import main\nmain(sys.argv[1:])\n"
    arguments = [*TINY, "--meta-iterations", "4", "--checkpoint-every", "1"]
    job = python_child(code, *arguments, "--out", str(tmp_path / "cut"))
    checkpoint = tmp_path / "cut" / "checkpoints" / "safemeta_latest.zip"
    deadline = time.time() + 120
    while not checkpoint.exists():
        assert job.poll() is None and time.time() < deadline, job.communicate()
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "training"
    main(["--resume", "--out", str(tmp_path / "cut")])
    main([*arguments, "--out", str(tmp_path / "whole")])
    assert progress_iterations(tmp_path / "cut" / "progress.csv") == [1, 2, 3, 4]
    cut, whole = progress_rows(tmp_path / "cut" / "progress.csv"), progress_rows(tmp_path / "whole" / "progress.csv")
    for iteration in (1, 2, 3, 4):
        assert cut[iteration]["meta/meta_policy_return"] == whole[iteration]["meta/meta_policy_return"], iteration
    assert not [path for path in (tmp_path / "cut").rglob("*") if ".tmp" in path.name]
