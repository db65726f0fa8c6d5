"""The main job (README command one) end to end on a tiny budget: tables printed, zip, report and plot written, resume."""

import json
import pathlib

import numpy as np

from sb3_safemeta import SafeAdapter, SafeMetaDual
from sb3_safemeta.__main__ import main

TINY = ["--meta-iterations", "2", "--meta-batch-size", "2", "--n-envs", "2", "--n-steps", "100",
        "--test-tasks", "2", "--adapt-steps", "1", "--checkpoint-every", "1"]  # fmt: skip


def test_main_job_writes_the_zip_the_report_and_the_plot(tmp_path: pathlib.Path, capsys) -> None:
    report = main([*TINY, "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "Anytime safety (SafeMetaDual (meta-trained))" in printed
    assert "Anytime safety (same adaptation from the untrained policy)" in printed
    for name in ("meta_policy.zip", "meta_test.csv", "meta_test.json", "meta_test.png", "progress.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "meta_test.json").read_text())
    np.testing.assert_allclose(saved["returns"], report.returns)
    assert report.returns.shape == (2, 2)  # 2 tasks x (pi_[0] and one adapted policy)
    model = SafeMetaDual.load(tmp_path / "meta_policy.zip")
    assert model.meta_iterations == 2 and model.lambda_c == 10.0
    # the meta-policy zip is a SafeAdapter start, as the README says
    adapter = SafeAdapter.from_meta(tmp_path / "meta_policy.zip", env="SafeMetaPointNav-v0")
    observations = np.zeros((3, 2), dtype=np.float32)
    np.testing.assert_array_equal(
        adapter.predict(observations, deterministic=True)[0], model.predict(observations, deterministic=True)[0]
    )
    assert adapter.lambda_c == 10.0


def test_main_job_resume_of_a_finished_run_extends_nothing(tmp_path: pathlib.Path) -> None:
    """A finished run is reported, not extended (kills, overrides and the lock: tests/test_run_dir.py)."""
    main([*TINY, "--meta-iterations", "1", "--no-baseline", "--out", str(tmp_path)])
    main([*TINY, "--meta-iterations", "3", "--no-baseline", "--resume", "--out", str(tmp_path)])
    assert SafeMetaDual.load(tmp_path / "meta_policy.zip").meta_iterations == 1
