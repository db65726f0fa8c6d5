"""The reproduction command (python -m sb3_safemeta.reproduce): smoke figure, resumable runs, hyper-parameter files."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import pathlib
import tempfile

import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st

import sb3_safemeta
from sb3_safemeta import MAMLCostPenalty, MetaCPO, MetaCRPO, SafeMetaDual
from sb3_safemeta.common.hyperparams import load_hyperparams
from sb3_safemeta.envs import SCENARIOS
from sb3_safemeta.reproduce import BUDGETS, RunSpec, main
from sb3_safemeta.reproduce import runs as runs_module
from sb3_safemeta.reproduce.curves import merge_rows, read_csv, write_csv
from sb3_safemeta.reproduce.runs import ALGORITHMS, algorithm_kwargs, make_env, read_curve, read_state, run, run_directory

SMOKE = BUDGETS["smoke"]


def test_figure1_smoke(tmp_path):
    """The CI command: both files, the four algorithms on both scenarios, both phases, all numbers finite."""
    main(["figure1", "--budget", "smoke", "--seeds", "1", "--out", str(tmp_path), "--quiet"])
    assert (tmp_path / "figure1.png").stat().st_size > 10_000
    with open(tmp_path / "figure1.csv", newline="") as file_handler:
        rows = list(csv.DictReader(file_handler))
    keys = {(row["algorithm"], row["env"], row["phase"]) for row in rows}
    for algorithm in ("SafeMetaDual", "MAMLCostPenalty", "MetaCPO", "MetaCRPO"):
        for env_id in ("SafeMetaHalfCheetahVel-v0", "SafeMetaPointCircle-v0"):
            assert (algorithm, env_id, "meta-train") in keys
            assert (algorithm, env_id, "meta-test") in keys
    # meta-train: a validation before training and after each of the 2 meta-iterations; meta-test: k = 0..K
    per_run = [row for row in rows if row["algorithm"] == "MetaCPO" and row["env"] == "SafeMetaPointCircle-v0"]
    assert [int(row["step"]) for row in per_run if row["phase"] == "meta-train"] == [0, 1, 2]
    assert [int(row["step"]) for row in per_run if row["phase"] == "meta-test"] == list(range(SMOKE.n_adapt_steps + 1))
    assert all(np.isfinite(float(row[key])) for row in rows for key in ("return", "max_cost", "seconds"))
    # figure 2 reuses the runs: nothing is redone, MetaCPO's normalized time is 1
    state_before = (
        run_directory(tmp_path, SMOKE, RunSpec("SafeMetaDual", "SafeMetaPointCircle-v0", 0)) / "state.json"
    ).read_text()
    main(["figure2", "--budget", "smoke", "--seeds", "1", "--out", str(tmp_path), "--quiet"])
    state_after = (
        run_directory(tmp_path, SMOKE, RunSpec("SafeMetaDual", "SafeMetaPointCircle-v0", 0)) / "state.json"
    ).read_text()
    assert state_before == state_after
    with open(tmp_path / "figure2.csv", newline="") as file_handler:
        times = list(csv.DictReader(file_handler))
    # per run: a meta-iteration, a meta-test step with its rollout, and the adaptation step alone (part of the latter)
    assert len(times) == 2 * 4 * 3
    for algorithm in ("SafeMetaDual", "MAMLCostPenalty", "MetaCPO", "MetaCRPO"):
        for env_id in ("SafeMetaHalfCheetahVel-v0", "SafeMetaPointCircle-v0"):
            run_times = [row for row in times if (row["algorithm"], row["env"]) == (algorithm, env_id)]
            seconds = {row["phase"]: float(row["seconds"]) for row in run_times}
            assert 0.0 < seconds["adaptation"] < seconds["meta-test"], (algorithm, env_id, seconds)
    assert all(float(row["normalized"]) == pytest.approx(1.0) for row in times if row["algorithm"] == "MetaCPO")

    # --merge-csv: the figures redrawn elsewhere from the CSVs alone are the same rows (the run folders are not needed)
    elsewhere = tmp_path / "elsewhere"
    smoke_elsewhere = ["--budget", "smoke", "--seeds", "1", "--out", str(elsewhere)]
    for figure in ("figure1", "figure2"):
        saved = tmp_path / f"{figure}.csv"
        main([figure, *smoke_elsewhere, "--plot-only", "--merge-csv", str(saved), "--quiet"])
        required = ("seconds", "normalized") if figure == "figure2" else ("return", "max_cost")
        assert read_csv(elsewhere / f"{figure}.csv", required) == read_csv(saved, required)
        assert (elsewhere / f"{figure}.png").stat().st_size > 10_000
    assert "Drawn from --merge-csv, not in the tables above (8 runs)" in (elsewhere / "figure1_summary.md").read_text()
    # a figure of the other kind is refused before anything runs, naming the missing column
    with pytest.raises(ValueError, match="no column \\['normalized'\\]"):
        main(["figure2", *smoke_elsewhere, "--merge-csv", str(tmp_path / "figure1.csv")])


def interrupt_after_first_iteration(spec, budget, out, monkeypatch) -> None:
    """Run ``spec`` and stop it, as if the process were killed, right after its first meta-iteration's state is saved."""
    original = runs_module._write_atomic

    def killed_after_first_iteration(path, text):
        original(path, text)
        if path.name == "state.json" and json.loads(text)["meta_iterations"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs_module, "_write_atomic", killed_after_first_iteration)
    with pytest.raises(KeyboardInterrupt):
        run(spec, budget, out, verbose=0)
    monkeypatch.setattr(runs_module, "_write_atomic", original)


def test_interrupted_run_resumes_bit_identical(tmp_path, monkeypatch):
    """A run killed after its first checkpoint resumes from it and ends exactly as an uninterrupted run."""
    budget = dataclasses.replace(SMOKE, meta_iterations=3)
    spec = RunSpec("SafeMetaDual", "SafeMetaHalfCheetahVel-v0", seed=3)
    run(spec, budget, tmp_path / "whole", verbose=0)
    interrupt_after_first_iteration(spec, budget, tmp_path / "split", monkeypatch)
    directory = run_directory(tmp_path / "split", budget, spec)
    assert read_state(directory)["status"] == "training" and read_state(directory)["meta_iterations"] == 1
    run(spec, budget, tmp_path / "split", verbose=0)

    whole = run_directory(tmp_path / "whole", budget, spec)
    assert read_state(directory)["status"] == "done"
    curve_whole, curve_split = read_curve(whole), read_curve(directory)
    assert [row["meta_iterations"] for row in curve_split] == [0, 1, 2, 3]
    for key in ("mean_return", "max_cost", "mean_return_meta", "max_cost_meta"):
        assert [row[key] for row in curve_split] == [row[key] for row in curve_whole]
    test_whole = json.loads((whole / "meta_test.json").read_text())
    test_split = json.loads((directory / "meta_test.json").read_text())
    assert test_split["returns"] == test_whole["returns"] and test_split["costs"] == test_whole["costs"]
    # a finished run is never redone
    mtime = (directory / "meta_test.json").stat().st_mtime_ns
    run(spec, budget, tmp_path / "split", verbose=0)
    assert (directory / "meta_test.json").stat().st_mtime_ns == mtime


def test_a_run_records_its_code_and_a_resume_with_other_code(tmp_path, monkeypatch):
    """config.json says which code started the run; a resume on another commit warns and is recorded, not hidden."""
    budget = dataclasses.replace(SMOKE, meta_iterations=2)
    spec = RunSpec("MetaCPO", "SafeMetaHalfCheetahVel-v0", seed=0)
    interrupt_after_first_iteration(spec, budget, tmp_path, monkeypatch)
    directory = run_directory(tmp_path, budget, spec)
    started = json.loads((directory / "config.json").read_text())["code"]
    assert started == runs_module.code_version()
    assert started["sb3_safemeta"] == sb3_safemeta.__version__ and started["PyTorch"] == th.__version__

    other = {**started, "git_commit": "0" * 40, "git_dirty": False}
    monkeypatch.setattr(runs_module, "code_version", lambda: other)
    with pytest.warns(UserWarning, match="resuming with code that may differ from the one the run started with"):
        run(spec, budget, tmp_path, verbose=0)
    config = json.loads((directory / "config.json").read_text())
    assert config["code"] == started and config["code_on_resume"] == [other]
    assert read_state(directory)["status"] == "done"


def test_redo_meta_test_keeps_meta_training_and_redoes_only_other_codes_tests(tmp_path, monkeypatch):
    """
    --redo-meta-test: a run whose meta-test was made by the current code is left alone; one made by other code does
    its meta-test again from the final meta-policy (same meta-training, same checkpoint), keeping the previous report.
    The meta-test is deterministic, so the redone report equals the previous one.
    """
    budget = dataclasses.replace(SMOKE, meta_iterations=2)
    spec = RunSpec("MetaCRPO", "SafeMetaHalfCheetahVel-v0", seed=0)
    first = {**runs_module.code_version(), "git_commit": "1" * 40, "git_dirty": False}
    monkeypatch.setattr(runs_module, "code_version", lambda: first)
    directory = run(spec, budget, tmp_path, verbose=0)
    files = {name: (directory / name).read_bytes() for name in ("checkpoint.zip", "curve.csv", "state.json", "meta_test.json")}
    assert json.loads(files["state.json"])["meta_test_code"]["git_commit"] == "1" * 40

    run(spec, budget, tmp_path, verbose=0, redo_meta_test=True)  # same code: nothing is redone
    assert {name: (directory / name).read_bytes() for name in files} == files

    second = {**first, "git_commit": "2" * 40}
    monkeypatch.setattr(runs_module, "code_version", lambda: second)
    # killed during the redone meta-test: the run is still done, with its previous report
    with monkeypatch.context() as patch:
        patch.setattr(MetaCRPO, "meta_test", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.warns(UserWarning, match="resuming with code"), pytest.raises(KeyboardInterrupt):
            run(spec, budget, tmp_path, verbose=0, redo_meta_test=True)
    assert read_state(directory) == json.loads(files["state.json"])
    assert (directory / "meta_test.json").read_bytes() == files["meta_test.json"]
    with pytest.warns(UserWarning, match="resuming with code"):
        run(spec, budget, tmp_path, verbose=0, redo_meta_test=True)
    assert (directory / "checkpoint.zip").read_bytes() == files["checkpoint.zip"]
    assert (directory / "curve.csv").read_bytes() == files["curve.csv"]
    assert (directory / "meta_test_previous.json").read_bytes() == files["meta_test.json"]
    assert (directory / "state_previous.json").read_bytes() == files["state.json"]
    state = read_state(directory)
    assert state["status"] == "done" and state["meta_test_code"]["git_commit"] == "2" * 40
    assert state["meta_iterations"] == 2 and state["train_seconds"] == json.loads(files["state.json"])["train_seconds"]
    previous, redone = (json.loads((directory / name).read_text()) for name in ("meta_test_previous.json", "meta_test.json"))
    for key in ("returns", "costs", "eval_returns", "eval_costs"):
        assert redone[key] == previous[key], key
    assert json.loads((directory / "config.json").read_text())["code_on_resume"] == [second, second]


def test_merge_rows_keeps_the_runs_under_out_and_the_selected_runs_of_the_csv(tmp_path):
    """A run found under --out replaces its CSV rows; CSV rows of runs outside the selection are not drawn."""

    def rows_of(algorithm, seed, value):
        return [
            {"algorithm": algorithm, "env": "SafeMetaPointCircle-v0", "seed": seed, "delta": 0.0, "phase": "meta-train",
             "step": step, "return": value, "max_cost": value, "seconds": float(step)}
            for step in (0, 10)
        ]  # fmt: skip

    path = tmp_path / "figure1.csv"
    write_csv(path, rows_of("MetaCPO", 0, 1.0) + rows_of("SafeMetaDual", 0, 2.0) + rows_of("SafeMetaDual", 1, 3.0))
    from_csv = read_csv(path)
    assert from_csv[0]["seed"] == 0 and from_csv[0]["step"] == 0 and from_csv[0]["return"] == 1.0
    assert from_csv[0]["mean_cost"] == ""  # a missing value stays missing
    local = rows_of("SafeMetaDual", 0, 9.0)  # redone under --out
    specs = [RunSpec(algorithm, "SafeMetaPointCircle-v0", 0) for algorithm in ("SafeMetaDual", "MetaCPO")]
    merged = merge_rows(local, from_csv, specs)
    assert [(row["algorithm"], row["seed"], row["return"]) for row in merged] == [
        ("SafeMetaDual", 0, 9.0), ("SafeMetaDual", 0, 9.0), ("MetaCPO", 0, 1.0), ("MetaCPO", 0, 1.0)
    ]  # fmt: skip
    path.write_text(
        "algorithm,env,seed,delta,phase,step,return,max_cost\nMetaCPO,SafeMetaPointCircle-v0,zero,0,meta-train,0,1,1\n"
    )
    with pytest.raises(ValueError, match="line 2"):
        read_csv(path)


ROW_VALUE = st.one_of(st.just(""), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**6), 10**6).map(float))
CSV_ROW = st.fixed_dictionaries(
    {
        "algorithm": st.sampled_from(list(ALGORITHMS)),
        "env": st.sampled_from(["SafeMetaPointCircle-v0", "SafeMetaHalfCheetahVel-v0"]),
        "seed": st.integers(0, 3),
        "delta": st.sampled_from([0.0, 0.5, 3.0]),
        "phase": st.sampled_from(["meta-train", "meta-test"]),
        "step": st.integers(0, 300),
        "return": st.floats(allow_nan=True, allow_infinity=True),
        "max_cost": st.floats(allow_nan=True, allow_infinity=True),
        "seconds": st.floats(0.0, 1e6),
        "mean_cost": ROW_VALUE,
        "eval_max_cost": ROW_VALUE,
        "complete": st.sampled_from([0, 1]),
    }
)


def _same(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(rows=st.lists(CSV_ROW, max_size=12), local=st.lists(CSV_ROW, max_size=6), seeds=st.integers(1, 4))
def test_figure_csv_round_trip_and_merge(rows, local, seeds):
    """
    Property: what write_csv writes, read_csv reads back with the same types and values (inf, nan, -0.0, 1e-308,
    missing values); merging keeps every row under --out first and unchanged, and adds exactly the CSV rows of the
    selected runs that have none under --out.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory, "figure.csv")
        write_csv(path, rows)
        read = read_csv(path)
    assert len(read) == len(rows)
    for written, back in zip(rows, read, strict=True):
        for column, value in written.items():
            assert _same(back[column], value) and type(back[column]) is type(value), (column, value, back[column])

    specs = [
        RunSpec(algorithm, env_id, seed, delta)
        for algorithm in ALGORITHMS
        for env_id in ("SafeMetaPointCircle-v0", "SafeMetaHalfCheetahVel-v0")
        for seed in range(seeds)
        for delta in ([0.0, 0.5, 3.0] if algorithm == "SafeMetaDual" else [0.0])
    ]

    def key(row):
        return row["algorithm"], row["env"], row["seed"], row["delta"]

    wanted = {(spec.algorithm, spec.env_id, spec.seed, spec.delta) for spec in specs}
    merged = merge_rows(local, read, specs)
    assert merged[: len(local)] == local
    added = merged[len(local) :]
    assert all(key(row) in wanted and key(row) not in {key(r) for r in local} for row in added)
    assert len(added) == sum(key(row) in wanted and key(row) not in {key(r) for r in local} for row in read)


def test_run_spec_validation():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        RunSpec("PPO", "SafeMetaHalfCheetahVel-v0", 0)
    with pytest.raises(ValueError, match="delta"):
        RunSpec("MetaCPO", "SafeMetaHalfCheetahVel-v0", 0, delta=1.0)
    with pytest.raises(ValueError, match="multiple of eval_freq"):
        dataclasses.replace(SMOKE, meta_iterations=3, eval_freq=2)


@pytest.mark.parametrize("env_id", sorted(SCENARIOS))
def test_every_scenario_has_valid_hyperparams(env_id):
    """safemeta.yml has an entry per scenario, with constructor arguments only; the runs take d from it."""
    entry = load_hyperparams("safemeta", env_id)
    accepted = inspect.signature(SafeMetaDual).parameters
    assert set(entry) <= set(accepted), set(entry) - set(accepted)
    for algorithm, cls in (
        ("SafeMetaDual", SafeMetaDual),
        ("MAMLCostPenalty", MAMLCostPenalty),
        ("MetaCPO", MetaCPO),
        ("MetaCRPO", MetaCRPO),
    ):
        kwargs = algorithm_kwargs(RunSpec(algorithm, env_id, 0), SMOKE)
        assert set(kwargs) <= set(inspect.signature(cls).parameters)
        if "cost_limit" in inspect.signature(cls).parameters:
            assert kwargs["cost_limit"] == entry["cost_limit"]
        assert kwargs["n_steps"] == SMOKE.n_steps(env_id) and kwargs["meta_batch_size"] == SMOKE.meta_batch_size


@pytest.mark.parametrize("algorithm", ["SafeMetaDual", "MAMLCostPenalty", "MetaCPO", "MetaCRPO"])
def test_budget_kl_bound_overrides_the_yml_for_every_algorithm(algorithm):
    """The small budget's KL bound of the meta step (0.01) replaces the yml's (the paper's 1e-3) for every algorithm
    whose meta step has a trust region, so that they are compared at the same one; the paper budget keeps the
    yml's. MetaCRPO's meta update (running mean) has none, and gets no such argument."""
    small = algorithm_kwargs(RunSpec(algorithm, "SafeMetaHalfCheetahVel-v0", 0), BUDGETS["small"])
    paper = algorithm_kwargs(RunSpec(algorithm, "SafeMetaHalfCheetahVel-v0", 0), BUDGETS["paper"])
    if algorithm == "MetaCRPO":
        assert "target_kl" not in small and "target_kl" not in paper
    else:
        assert BUDGETS["small"].target_kl == small["target_kl"] == 0.01
        assert BUDGETS["paper"].target_kl is None and paper["target_kl"] == 1e-3
    ALGORITHMS[algorithm]("MlpPolicy", make_env("SafeMetaHalfCheetahVel-v0", SMOKE, 0), **small)  # accepted


def test_budget_env_steps():
    paper = BUDGETS["paper"]
    # 300 meta-iterations x 10 tasks x 2 rollouts of 8000 steps, 31 validations of 10 tasks x 2 rollouts, 20 x 21 test rollouts
    assert paper.env_steps("SafeMetaHalfCheetahVel-v0") == 8000 * (2 * 10 * 300 + 2 * 10 * 31 + 21 * 20)
    assert paper.env_steps("SafeMetaPointCircle-v0") == 5000 * (2 * 10 * 300 + 2 * 10 * 31 + 21 * 20)


def test_main_job_and_zoo_read_the_same_entry():
    """The main job takes its defaults from hyperparams/safemeta.yml: its PointNav values, n_steps >= 500 on navigation."""
    from sb3_safemeta.__main__ import fill_from_yml, parse_args

    args = parse_args([])
    assert args.lambda_ is None and args.lambda_c is None and args.n_steps is None  # filled from the yml by main()
    args = fill_from_yml(args)
    assert (args.lambda_, args.lambda_c, args.n_steps, args.n_envs, args.target_kl, args.meta_batch_size) == (
        1.0,
        10.0,
        200,
        8,
        0.01,
        10,
    )
    circle = fill_from_yml(parse_args(["--env", "SafeMetaPointCircle-v0", "--lambda", "2"]))
    assert circle.n_steps == 500 and circle.n_envs == 10 and circle.lambda_ == 2.0  # the command line wins
    assert circle.lambda_c == load_hyperparams("safemeta", "SafeMetaPointCircle-v0")["lambda_c"]
    point_nav = load_hyperparams("safemeta", "SafeMetaPointNav-v0", constructor_only=False)
    assert (point_nav["lambda_"], point_nav["lambda_c"], point_nav["n_steps"], point_nav["target_kl"]) == (
        1.0,
        10.0,
        200,
        0.01,
    )
    assert point_nav["n_envs"] == 8 and point_nav["meta_batch_size"] == 10
    for env_id in ("SafeMetaPointCircle-v0", "SafeMetaCarCircleHazard-v0", "SafeMetaPointButton-v0"):
        assert load_hyperparams("safemeta", env_id)["n_steps"] >= 500  # a 500-step episode must end in a rollout


def test_resume_refuses_changed_hyperparameters(tmp_path, monkeypatch):
    """An unfinished run does not resume silently with other constructor arguments (e.g. a recalibrated lambda)."""
    budget = dataclasses.replace(SMOKE, meta_iterations=2)
    spec = RunSpec("SafeMetaDual", "SafeMetaHalfCheetahVel-v0", seed=1)
    interrupt_after_first_iteration(spec, budget, tmp_path, monkeypatch)
    changed = runs_module.algorithm_kwargs

    def other_lambda(spec, budget):
        return {**changed(spec, budget), "lambda_": 123.0}

    monkeypatch.setattr(runs_module, "algorithm_kwargs", other_lambda)
    with pytest.raises(runs_module.RunConfigError, match="lambda_"):
        run(spec, budget, tmp_path, verbose=0)
