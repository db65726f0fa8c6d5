"""
rl-zoo3 for every algorithm: the baselines' yml files and samplers, the literal ``python -m rl_zoo3.train`` with
``--eval-freq`` (the cost-aware evaluation writes cost arrays, ``monitor.csv`` has the episode cost), and two tiny
``-optimize`` trials (a fast CI variant with one baseline; all five algorithms marked ``expensive``).
"""

from __future__ import annotations

import inspect
import pathlib

import numpy as np
import optuna
import pytest
import yaml
from test_zoo import ENV_ID, SMALL, hook_installed, run, zoo_train  # noqa: F401  (fixture)

from sb3_safemeta.zoo import hyperparams_opt
from sb3_safemeta.zoo.registration import SAFEMETA_ALGOS, hyperparams_path

BASELINES = ("maml_cost_penalty", "meta_cpo", "meta_crpo")
TABLE2_LIMITS = {
    "SafeMetaHalfCheetahVel-v0": 10.0,
    "SafeMetaHumanoidDir-v0": 20.0,
    "SafeMetaHopperVel-v0": 5.0,
    "SafeMetaSwimmerNoise-v0": 5.0,
    "SafeMetaPointCircle-v0": 10.0,
    "SafeMetaCarCircleHazard-v0": 10.0,
    "SafeMetaPointButton-v0": 10.0,
}
# a tiny budget per algorithm: one meta-iteration of one task (2 rollouts x 100 steps), cheap adaptation
TINY = {
    "safemeta": SMALL,
    "safe_adapter": SMALL[1:],
    "maml_cost_penalty": SMALL[:3],
    "meta_cpo": [*SMALL[:3], "inner_cg_max_steps:3", "cg_max_steps:3"],
    "meta_crpo": [*SMALL[:3], "cg_max_steps:3"],
}
ROLLZOO_KEYS = {"policy", "n_timesteps", "n_envs", "policy_kwargs", "meta_test_kwargs"}  # not constructor arguments


@pytest.mark.parametrize("algo", BASELINES)
def test_baseline_yml_keys_are_constructor_arguments_for_every_scenario(algo: str) -> None:
    config = yaml.safe_load(hyperparams_path(algo).read_text())
    arguments = set(inspect.signature(SAFEMETA_ALGOS[algo].__init__).parameters)
    assert {ENV_ID, "default", *TABLE2_LIMITS} <= set(config)
    for env_id, entry in config.items():
        assert set(entry) - ROLLZOO_KEYS <= arguments, (env_id, set(entry) - ROLLZOO_KEYS - arguments)
        if env_id in TABLE2_LIMITS:
            assert entry["cost_limit"] == TABLE2_LIMITS[env_id] and entry["gamma"] == 0.99
            assert entry["meta_batch_size"] == 10 and "pi=[64, 64]" in entry["policy_kwargs"]
            assert entry["n_envs"] * entry["n_steps"] == (5000 if "Point" in env_id or "Car" in env_id else 8000)
    # the faithful variants are the files' choices
    assert config["default"].get("penalty", "violation") == "violation"
    assert config["default"].get("meta_step", "cpo") == "cpo"
    assert config["default"].get("meta_update", "running_mean") == "running_mean"


@pytest.mark.parametrize("algo", BASELINES)
def test_baseline_samplers_return_constructor_arguments(algo: str) -> None:
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize").ask()
    kwargs = hyperparams_opt.SAFEMETA_SAMPLERS[algo](trial, 2, 1, {})
    assert set(kwargs) <= set(inspect.signature(SAFEMETA_ALGOS[algo].__init__).parameters)
    assert hyperparams_opt.SAFEMETA_CONVERTERS[algo](trial.params) == kwargs  # study names = constructor names
    for name, distribution in trial.distributions.items():
        if name.endswith("_kl") or name in ("cost_penalty", "inner_lr"):
            assert distribution.log, name


def test_literal_train_with_eval_freq_writes_cost_arrays(tmp_path: pathlib.Path, hook_installed: None) -> None:  # noqa: F811
    """
    ``python -m rl_zoo3.train --algo meta_cpo --env SafeMetaPointNav-v0 -n 400 --eval-freq 200``: two cost-aware
    evaluations (after one CPO step on 2 unseen tasks), evaluations.npz with cost arrays, the episode cost in
    monitor.csv, best_model.zip only if a feasible evaluation happened; enjoy prints the episode costs.
    """
    args = zoo_train("rl_zoo3.train", "meta_cpo", tmp_path / "logs", "-n", "400", hyperparams=TINY["meta_cpo"])
    args[args.index("--eval-freq") + 1] = "200"
    result = run([*args, "--eval-episodes", "2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hyperparams/meta_cpo.yml" in result.stdout
    folder = tmp_path / "logs" / "meta_cpo" / f"{ENV_ID}_1"
    data = np.load(folder / "evaluations.npz")
    np.testing.assert_array_equal(data["timesteps"], [200, 400])
    assert data["costs"].shape == (2, 2, 1) and data["meta_policy_costs"].shape == (2, 2, 1)
    assert np.all(data["costs"] >= 0) and np.all(data["cost_limits"] == 10.0)
    assert "Eval num_timesteps=200" in result.stdout and "Eval num_timesteps=400" in result.stdout
    assert (folder / "best_model.zip").is_file() == bool(np.any(data["feasible"]))
    header = next(line for line in (folder / "0.monitor.csv").read_text().splitlines() if not line.startswith("#"))
    assert header.split(",") == ["r", "l", "t", "episode_cost"]
    enjoy = run(["-m", "sb3_safemeta.zoo.enjoy", "--algo", "meta_cpo", "-f", str(tmp_path / "logs"), "-n", "2"], cwd=tmp_path)
    assert enjoy.returncode == 0, enjoy.stderr[-3000:]
    assert "Episode 0: Reward" in enjoy.stdout and "Cost" in enjoy.stdout


def optimize_two_trials(algo: str, folder: pathlib.Path) -> list[optuna.trial.FrozenTrial]:
    hyperparams = [*TINY[algo], "meta_test_kwargs:dict(n_tasks=1,n_adapt_steps=1)"]
    args = zoo_train("rl_zoo3.train", algo, folder, "-n", "200", "-optimize", "--n-trials", "2", "--n-startup-trials", "1",
                     hyperparams=hyperparams)  # fmt: skip
    result = run(args, cwd=folder.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "intermediate evaluations for pruning" not in result.stdout  # nothing is pruned
    assert "Optuna plots" in result.stdout or "Optuna plot '" in result.stdout  # written, or why not
    database = folder / algo / f"{ENV_ID}_study.db"
    study = optuna.load_study(study_name=f"{algo}_{ENV_ID}", storage=f"sqlite:///{database}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 2
    for trial in trials:
        assert len(trial.user_attrs["constraint"]) == 1 and trial.constraints
        assert np.isfinite(trial.value)
    assert list((folder / algo).glob("report_*_history.*"))  # Optuna's optimisation history was drawn
    return trials


def test_optimize_two_trials_of_a_baseline(tmp_path: pathlib.Path, hook_installed: None) -> None:  # noqa: F811
    """The fast CI variant: meta_crpo; its study parameters are its sampler's, the objective its meta-test."""
    trials = optimize_two_trials("meta_crpo", tmp_path / "logs")
    for trial in trials:
        assert set(trial.params) == {"adapt_kl", "eta_tol", "meta_lr"}
        assert trial.user_attrs["meta_test_n_adapt_steps"] == 1  # scored by its own adaptation (meta-test)


@pytest.mark.expensive
@pytest.mark.parametrize("algo", sorted(SAFEMETA_ALGOS))
def test_optimize_two_trials_every_algorithm(algo: str, tmp_path: pathlib.Path, hook_installed: None) -> None:  # noqa: F811
    optimize_two_trials(algo, tmp_path / "logs")
