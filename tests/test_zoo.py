"""rl-zoo3 integration: the literal `python -m rl_zoo3.train --algo safemeta` (startup hook), the launcher, Optuna."""

from __future__ import annotations

import os
import pathlib
import sqlite3
import subprocess
import sys
import uuid
import zipfile

import optuna
import pytest
import yaml

from sb3_safemeta.zoo import hyperparams_opt, install_hook
from sb3_safemeta.zoo.registration import SAFEMETA_ALGOS, hyperparams_path

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV_ID = "SafeMetaPointNav-v0"
# tiny budget: one meta-iteration of one task (2 rollouts x 100 steps), cheap adaptation
SMALL = ["meta_batch_size:1", "n_steps:100", "n_envs:1", "fit_steps:5", "n_dual_steps:5", "backtrack_steps:3"]


def run(args: list[str], cwd: pathlib.Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def zoo_train(
    module: str, algo: str, folder: pathlib.Path, *extra: str, hyperparams: list[str] = SMALL, env_id: str = ENV_ID
) -> list[str]:
    return ["-m", module, "--algo", algo, "--env", env_id, "-f", str(folder), "--seed", "0", "--num-threads", "1",
            "--eval-freq", "-1", *extra, "--hyperparams", *hyperparams]  # fmt: skip


@pytest.fixture(scope="module")
def hook_installed() -> None:
    if not install_hook.is_installed():
        pytest.fail(
            f"the rl-zoo3 startup hook is not in {install_hook.site_dir()}: run scripts/install.sh or"
            " `python -m sb3_safemeta.zoo.install_hook install` after `pip install -e .`"
        )


def test_hook_file_and_hyperparams_files() -> None:
    # d and delta of the paper's Table 2; lambda = lambda_c (Appendix D.2) calibrated in our units so that one A^s step
    # has a KL close to 0.03 (benchmarks/calibrate_lambda.py; docs/guide/scenarios.md, "lambda calibration"), the same
    # in both files
    table2 = {
        "SafeMetaHalfCheetahVel-v0": (3.0, 10.0),
        "SafeMetaHumanoidDir-v0": (5.0, 20.0),
        "SafeMetaHopperVel-v0": (2.0, 5.0),
        "SafeMetaSwimmerNoise-v0": (0.92, 5.0),
        "SafeMetaPointCircle-v0": (1.3, 10.0),
        "SafeMetaCarCircleHazard-v0": (3.6, 10.0),
        "SafeMetaPointButton-v0": (1.4, 10.0),
    }
    for algo in SAFEMETA_ALGOS:
        path = hyperparams_path(algo)
        assert path == REPO / "hyperparams" / f"{algo}.yml"
        config = yaml.safe_load(path.read_text())
        assert "default" in config and ENV_ID in config
        for env_id, (lambda_, limit) in table2.items():
            entry = config[env_id]
            assert entry["cost_limit"] == limit
            if algo not in ("safemeta", "safe_adapter"):  # the baselines have no A^s (tests/test_zoo_baselines.py)
                continue
            assert (entry["lambda_"], entry["lambda_c"], entry["delta_c"]) == (lambda_, lambda_, 0.0)
            assert entry["gamma"] == 0.99 and "pi=[64, 64]" in entry["policy_kwargs"] and "Tanh" in entry["policy_kwargs"]
    assert yaml.safe_load(hyperparams_path("safemeta").read_text())["SafeMetaHalfCheetahVel-v0"]["target_kl"] == 1e-3


def test_samplers_log_scale_and_converter() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    trial = study.ask()
    kwargs = hyperparams_opt.sample_safemeta_params(trial, 2, 1, {})
    assert set(kwargs) == {"lambda_", "lambda_c", "delta_c", "beta", "n_dual_steps", "target_kl"}
    distributions = trial.distributions
    assert distributions["lambda"].log and distributions["lambda_c"].log and distributions["target_kl"].log
    assert not distributions["delta"].log
    # the converter maps the study's names back to constructor arguments (rl-zoo3's --trial-id path)
    assert hyperparams_opt.convert_safe_adaptation_params(trial.params) == kwargs
    adapter_kwargs = hyperparams_opt.sample_safe_adapter_params(study.ask(), 2, 1, {})
    assert "target_kl" not in adapter_kwargs and "lambda_" in adapter_kwargs


def test_literal_rl_zoo3_train_saves_loadable_zip(tmp_path: pathlib.Path, hook_installed: None) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_safemeta import SafeMetaDual

    result = run(zoo_train("rl_zoo3.train", "safemeta", tmp_path / "logs", "-n", "200"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hyperparams/safemeta.yml" in result.stdout
    path = tmp_path / "logs" / "safemeta" / f"{ENV_ID}_1" / f"{ENV_ID}.zip"
    assert path.is_file()
    model = SafeMetaDual.load(path, env=make_vec_env(ENV_ID, n_envs=1))
    assert model.meta_batch_size == 1 and model.n_steps == 100 and model.cost_limit == pytest.approx(10.0)
    # -n 200: one meta-iteration of 2 x 100 steps, or two whose first is the cost step (1 x 100 steps, Algorithm 2
    # lines 10-12); which one depends on the seeded rollouts, so the test checks the budget was spent, not the branch
    assert model.meta_iterations in (1, 2) and model.num_timesteps >= 200
    # our enjoy loads it from the same log folder and runs it
    result = run(["-m", "sb3_safemeta.zoo.enjoy", "--algo", "safemeta", "-f", str(tmp_path / "logs"), "-n", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 episodes: return" in result.stdout


def test_safe_adapter_on_a_safety_gymnasium_family(tmp_path: pathlib.Path, hook_installed: None) -> None:
    """One rollout and one adaptation step on SafeMetaPointCircle-v0 (float64 observations and actions)."""
    env_id = "SafeMetaPointCircle-v0"
    args = zoo_train("rl_zoo3.train", "safe_adapter", tmp_path / "logs", "-n", "500",
                     hyperparams=["n_steps:500", "n_envs:1", *SMALL[3:]], env_id=env_id)  # fmt: skip
    result = run(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "logs" / "safe_adapter" / f"{env_id}_1" / f"{env_id}.zip").is_file()


def test_enjoy_picks_the_latest_experiment_with_a_model(tmp_path: pathlib.Path) -> None:
    from huggingface_sb3 import EnvironmentName

    from sb3_safemeta.zoo.enjoy import latest_experiment_with_model

    env_name = EnvironmentName(ENV_ID)
    for exp_id, has_model in [(1, True), (2, True), (3, False)]:  # 3: an --optimize run, no model
        folder = tmp_path / "safemeta" / f"{ENV_ID}_{exp_id}"
        folder.mkdir(parents=True)
        if has_model:
            (folder / f"{ENV_ID}.zip").touch()
    (tmp_path / "safemeta" / f"{ENV_ID}_study.db").touch()
    assert latest_experiment_with_model(str(tmp_path), "safemeta", env_name) == 2
    assert latest_experiment_with_model(str(tmp_path), "safemeta", env_name, load_best=True) == 0
    assert latest_experiment_with_model(str(tmp_path), "safe_adapter", env_name) == 0


def test_importing_our_manager_first_still_registers_it(tmp_path: pathlib.Path, hook_installed: None) -> None:
    # the enjoy launcher imports sb3_safemeta.zoo.exp_manager, which imports rl_zoo3.exp_manager: the hook must
    # not import our module while it is half-initialised (circular import), and must still replace the manager
    code = (
        "import sb3_safemeta.zoo.exp_manager as ours, rl_zoo3.exp_manager as zoo; "
        "assert zoo.ExperimentManager is ours.SafeMetaExperimentManager"
    )
    result = run(["-W", "error::UserWarning", "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_launcher_trains_safe_adapter(tmp_path: pathlib.Path) -> None:
    args = zoo_train("sb3_safemeta.zoo.train", "safe_adapter", tmp_path / "logs", "-n", "200", hyperparams=SMALL[1:])
    result = run(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "logs" / "safe_adapter" / f"{ENV_ID}_1" / f"{ENV_ID}.zip").is_file()


def test_clear_errors(tmp_path: pathlib.Path, hook_installed: None) -> None:
    result = run(["-m", "rl_zoo3.train", "--algo", "nosuch", "--env", ENV_ID], cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'nosuch'" in result.stderr
    assert "'safemeta'" in result.stderr and "'safe_adapter'" in result.stderr
    bad = ["meta_batch_size:'two'", *SMALL[1:]]
    result = run(zoo_train("rl_zoo3.train", "safemeta", tmp_path / "logs", "-n", "200", hyperparams=bad), cwd=tmp_path)
    assert result.returncode != 0 and "meta_batch_size" in result.stderr.splitlines()[-1]


def assert_trains_with_trial(folder: pathlib.Path, storage: list[str], trial: optuna.trial.FrozenTrial) -> None:
    """Train with ``--trial-id <trial.number>`` and check that the saved config holds that trial's values."""
    args = zoo_train("rl_zoo3.train", "safemeta", folder, "-n", "200", *storage, "--trial-id", str(trial.number))
    result = run(args, cwd=folder.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading from Optuna study" in result.stdout
    # --optimize made an experiment folder without a model: the training run is the one with a zip
    (run_folder,) = [path.parent for path in (folder / "safemeta").glob(f"{ENV_ID}_*/{ENV_ID}.zip")]
    config = dict(yaml.unsafe_load((run_folder / ENV_ID / "config.yml").read_text()))
    expected = hyperparams_opt.convert_safe_adaptation_params(trial.params)
    expected["n_dual_steps"] = 5  # --hyperparams (SMALL) overrides the study's values
    assert {key: config[key] for key in expected} == pytest.approx(expected)


def test_optimize_two_trials_constrained(tmp_path: pathlib.Path, hook_installed: None) -> None:
    hyperparams = [*SMALL, "meta_test_kwargs:dict(n_tasks=1,n_adapt_steps=1)"]
    args = zoo_train("rl_zoo3.train", "safemeta", tmp_path / "logs", "-n", "200", "-optimize", "--n-trials", "2",
                     "--n-startup-trials", "1", "--no-optim-plots", hyperparams=hyperparams)  # fmt: skip
    result = run(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    database = tmp_path / "logs" / "safemeta" / f"{ENV_ID}_study.db"
    assert database.is_file()  # the default storage is a local SQLite file
    with sqlite3.connect(database):
        pass
    study = optuna.load_study(study_name=f"safemeta_{ENV_ID}", storage=f"sqlite:///{database}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 2
    for trial in trials:
        assert {"lambda", "lambda_c", "delta", "beta", "n_dual_steps", "target_kl"} <= set(trial.params)
        constraint = trial.user_attrs["constraint"]
        assert constraint == pytest.approx([trial.user_attrs["max_episode_cost"][0] - trial.user_attrs["cost_limit"][0]])
        assert trial.constraints  # given to Optuna's constrained optimisation
    # --trial-id 0 (which rl-zoo3 alone ignores: it tests the id for truth) trains with trial 0's values
    storage = ["--storage", f"sqlite:///{database}", "--study-name", f"safemeta_{ENV_ID}"]
    assert_trains_with_trial(tmp_path / "logs", storage, study.trials[0])
    feasible = [trial for trial in trials if trial.user_attrs["constraint"][0] <= 0]
    if feasible:
        best = study.best_trial
        assert best.user_attrs["constraint"][0] <= 0
        assert best.value == max(trial.value for trial in feasible)
        assert "Best feasible trial" in result.stdout
    else:
        assert "No feasible trial" in result.stdout


@pytest.mark.skipif(
    not os.environ.get("SB3_SAFEMETA_TEST_POSTGRES_URL"),
    reason="set SB3_SAFEMETA_TEST_POSTGRES_URL to a PostgreSQL database URL (see docs/guide/tuning.md)",
)
def test_optimize_on_postgresql_storage(tmp_path: pathlib.Path, hook_installed: None) -> None:
    """A 2-trial constrained study in a real PostgreSQL database (``--storage``), then training with trial 1's values."""
    url = os.environ["SB3_SAFEMETA_TEST_POSTGRES_URL"]
    study_name = f"sb3_safemeta_test_{uuid.uuid4().hex[:12]}"
    hyperparams = [*SMALL, "meta_test_kwargs:dict(n_tasks=1,n_adapt_steps=1)"]
    storage = ["--storage", url, "--study-name", study_name]
    args = zoo_train("rl_zoo3.train", "safemeta", tmp_path / "logs", "-n", "200", "-optimize", "--n-trials", "2",
                     "--n-startup-trials", "1", "--no-optim-plots", *storage, hyperparams=hyperparams)  # fmt: skip
    try:
        result = run(args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"storage {url}" in result.stdout
        assert not list((tmp_path / "logs").rglob("*_study.db"))  # no local SQLite fallback
        study = optuna.load_study(study_name=study_name, storage=url)
        trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
        assert len(trials) == 2
        for trial in trials:
            assert {"lambda", "lambda_c", "delta"} <= set(trial.params)
            assert len(trial.user_attrs["constraint"]) == 1 and trial.constraints
        assert "rl_zoo3.train" in study.user_attrs["command"]
        # rl-zoo3's --trial-id path reads the trial back from the same database
        assert_trains_with_trial(tmp_path / "logs", storage, trials[1])
    finally:
        try:
            optuna.delete_study(study_name=study_name, storage=url)
        except KeyError:  # the study was never created
            pass


@pytest.mark.expensive
def test_wheel_ships_hook_and_hyperparams(tmp_path: pathlib.Path) -> None:
    result = run(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("sb3_safemeta-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert install_hook.PTH_NAME not in names  # the startup hook is opt-in (install_hook install), never shipped
    assert "sb3_safemeta/zoo/_startup.py" in names
    assert any(name.endswith("data/share/sb3_safemeta/hyperparams/safemeta.yml") for name in names)


def test_rl_zoo3_enjoy_imports() -> None:
    """rl_zoo3.enjoy imports requests without declaring it: the zoo extra of setup.cfg must bring it."""
    import importlib

    importlib.import_module("rl_zoo3.enjoy")


def _startup_hook_ran(site_dir: pathlib.Path, env: dict[str, str]) -> bool:
    """
    Run a fresh interpreter that processes ``site_dir``'s .pth files, then imports rl-zoo3.

    :return: whether the hook registered ``safemeta`` (it must not have read its file before rl-zoo3 was imported)
    """
    code = (
        f"import site, sys; site.addsitedir({str(site_dir)!r}); assert '{install_hook.STARTUP_MODULE}' not in sys.modules; "
        "import rl_zoo3.utils; print('safemeta' in rl_zoo3.utils.ALGOS)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return result.stdout.strip() == "True"


def test_startup_hook_opt_out_and_no_code_from_pythonpath(tmp_path: pathlib.Path) -> None:
    """
    The .pth line honours SB3_SAFEMETA_NO_ZOO_HOOK before reading any file, and executes only the _startup.py of the
    installed package (its absolute path is in the line): an sb3_safemeta/zoo/_startup.py planted in a directory on
    PYTHONPATH is never executed.
    """
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    install_hook.install(site_dir)
    assert install_hook.is_installed(site_dir)
    assert repr(str(install_hook.startup_path())) in (site_dir / install_hook.PTH_NAME).read_text()
    env = {key: value for key, value in os.environ.items() if key not in ("SB3_SAFEMETA_NO_ZOO_HOOK", "PYTHONPATH")}
    assert _startup_hook_ran(site_dir, env)
    assert not _startup_hook_ran(site_dir, {**env, "SB3_SAFEMETA_NO_ZOO_HOOK": "1"})

    planted = tmp_path / "planted" / "sb3_safemeta" / "zoo"
    planted.mkdir(parents=True)
    (planted.parent / "__init__.py").write_text("")
    marker = tmp_path / "planted_code_ran"
    (planted / "_startup.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    assert _startup_hook_ran(site_dir, {**env, "PYTHONPATH": str(tmp_path / "planted")})
    assert not marker.exists()


def test_startup_file_imports_nothing_at_start() -> None:
    """_startup.py imports only sys (already loaded at start-up): no importlib.abc, no sb3_safemeta, no rl-zoo3."""
    import ast

    tree = ast.parse(install_hook.startup_path().read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert [alias.name for node in top_level for alias in node.names] == ["sys"]
