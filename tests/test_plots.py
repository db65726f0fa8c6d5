"""``python -m sb3_safemeta.plots``: runs found in rl-zoo3 and reproduce folders, curves and their mean over seeds."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import yaml

from sb3_safemeta.plots import aggregate, find_runs, main


def zoo_run(folder: pathlib.Path, algo: str, run_id: int, timesteps, results, costs, limit=10.0) -> None:
    run = folder / algo / f"SafeMetaPointNav-v0_{run_id}"
    run.mkdir(parents=True)
    costs = np.asarray(costs, dtype=float)[..., None]
    np.savez(run / "evaluations.npz", timesteps=np.asarray(timesteps), results=np.asarray(results, dtype=float), costs=costs,
             cost_limits=np.full_like(costs, limit))  # fmt: skip


def test_curves_from_evaluations_monitor_and_reproduce_runs(tmp_path: pathlib.Path, capsys) -> None:
    # two seeds of meta_cpo: reward = mean over episodes, cost = max over episodes
    zoo_run(tmp_path, "meta_cpo", 1, [100, 200, 300], [[0, 2], [2, 4], [4, 6]], [[1, 3], [5, 1], [12, 0]])
    zoo_run(tmp_path, "meta_cpo", 2, [100, 200, 300], [[2, 2], [4, 4], [6, 6]], [[1, 1], [2, 2], [3, 3]])
    # a run with only monitor.csv (no --eval-freq): running mean over episodes, d from config.yml
    run = tmp_path / "safe_adapter" / "SafeMetaPointNav-v0_1"
    (run / "SafeMetaPointNav-v0").mkdir(parents=True)
    (run / "SafeMetaPointNav-v0" / "config.yml").write_text(yaml.dump([["cost_limit", 5.0], ["n_steps", 100]]))
    (run / "0.monitor.csv").write_text('#{"t_start": 0}\nr,l,t,episode_cost\n-10,100,1.0,2\n-6,100,2.0,4\n')
    # a reproduce run of the main job
    reproduce = tmp_path / "runs" / "seed0"
    reproduce.mkdir(parents=True)
    (reproduce / "run.json").write_text(json.dumps({"options": {"env": "SafeMetaPointNav-v0", "cost_limit": 10.0}}))
    (reproduce / "progress.csv").write_text(
        "meta/iterations,time/total_timesteps,meta/adapted_return,meta/adapted_cost_max\n1,3200,-150,4.5\n2,6400,-120,6.0\n"
    )
    curves = {(c.algo, c.source.name): c for c in find_runs(tmp_path)}
    assert set(curves) == {("meta_cpo", "evaluations.npz"), ("safe_adapter", "0.monitor.csv"), ("safemeta", "progress.csv")}
    monitor = curves[("safe_adapter", "0.monitor.csv")]
    np.testing.assert_array_equal(monitor.timesteps, [100, 200])
    np.testing.assert_array_equal(monitor.reward, [-10, -8])  # running mean
    np.testing.assert_array_equal(monitor.cost, [2, 3])
    assert monitor.cost_limit == 5.0
    reproduce_curve = curves[("safemeta", "progress.csv")]
    np.testing.assert_array_equal(reproduce_curve.cost, [4.5, 6.0]) and reproduce_curve.cost_limit == 10.0

    seeds = find_runs(tmp_path, algos=["meta_cpo"], envs=["SafeMetaPointNav-v0"])
    assert len(seeds) == 2
    grid, rewards, costs = aggregate(seeds, n_points=3)
    np.testing.assert_array_equal(grid, [100, 200, 300])
    np.testing.assert_array_equal(rewards.mean(axis=0), [1.5, 3.5, 5.5])
    np.testing.assert_array_equal(costs, [[3, 5, 12], [1, 2, 3]])

    output = tmp_path / "curves.png"
    main(
        ["--log-folder", str(tmp_path), "--algos", "meta_cpo", "safemeta", "--envs", "SafeMetaPointNav-v0", "-o", str(output)]
    )
    assert output.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "meta_cpo: 2 runs, final reward      5.50" in printed and "final cost    7.50 (d = 10)" in printed


def test_clear_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SystemExit):
        main(["--log-folder", str(tmp_path)])  # nothing to draw: argparse error naming what is needed
    with pytest.raises(FileNotFoundError, match="log-folder"):
        find_runs(tmp_path / "missing")
