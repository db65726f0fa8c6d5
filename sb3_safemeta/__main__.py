"""
The main job: meta-train SafeMetaDual on a task family, meta-test it on unseen tasks with anytime
safety, and compare with the same adaptation started from the untrained policy.

    python -m sb3_safemeta [--env SafeMetaPointNav-v0] [--meta-iterations 40] [--test-tasks 20] [--adapt-steps 20]

Writes ``<out>/meta_policy.zip``, ``<out>/meta_test.{csv,json,png}``, ``<out>/progress.csv`` and
``<out>/run.json`` (options, status, overrides), each atomically, and prints the anytime-safety tables.
The folder is locked while the run lives: a second run on it stops with an error naming the holder.
``--resume`` continues from ``<out>/checkpoints/safemeta_latest.zip`` with the run's options (a changed
option is refused unless named in ``--override``); a finished run is reported and left as it is.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import VecEnv

import sb3_safemeta
import sb3_safemeta.envs  # (registers the task families)
from sb3_safemeta.common.callbacks import MetaCheckpointCallback, StopTrainingOnMetaIterations
from sb3_safemeta.common.distributed import check_n_workers
from sb3_safemeta.common.evaluation import MetaTestReport
from sb3_safemeta.common.hyperparams import load_hyperparams
from sb3_safemeta.common.run_dir import (
    RunLock,
    RunLockedError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
)
from sb3_safemeta.common.tasks import check_task_distribution
from sb3_safemeta.common.validation import as_cost_vector
from sb3_safemeta.safe_meta_dual import SafeMetaDual

RUN_FILE = "run.json"
# the options that define a run, compared on --resume (--out, --resume, --override, --threads, --workers,
# --ray-address and --checkpoint-every change no result)
RUN_OPTIONS = (
    "env", "meta_iterations", "meta_batch_size", "n_envs", "n_steps", "cost_limit", "lambda_", "lambda_c",
    "fit_scope", "delta", "target_kl", "test_tasks", "adapt_steps", "no_baseline", "seed",
)  # fmt: skip
# those a resumed run may change with --override (the others define the model's buffers and the task stream)
OVERRIDABLE = (
    "meta_iterations", "meta_batch_size", "cost_limit", "lambda_", "lambda_c", "delta", "target_kl", "test_tasks",
    "adapt_steps", "no_baseline",
)  # fmt: skip


def _number(kind: type, minimum: float, strict: bool) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind`` (int or float) >= ``minimum`` (> if ``strict``), finite."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum:g}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT, NON_NEGATIVE_INT = _number(int, 1, strict=False), _number(int, 0, strict=False)
POSITIVE_FLOAT, NON_NEGATIVE_FLOAT = _number(float, 0.0, strict=True), _number(float, 0.0, strict=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_safemeta", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="SafeMetaPointNav-v0", help="registered task-family id")
    parser.add_argument("--meta-iterations", type=POSITIVE_INT, default=40, help="meta-iterations of training")
    # "(yml)": the default is the --env's entry of hyperparams/safemeta.yml, the values rl-zoo3 and the reproduction use
    parser.add_argument("--meta-batch-size", type=POSITIVE_INT, default=None, help="tasks per meta-iteration (yml; paper: 10)")
    parser.add_argument("--n-envs", type=POSITIVE_INT, default=None, help="parallel environments per rollout (yml)")
    parser.add_argument(
        "--n-steps", type=POSITIVE_INT, default=None, help="steps per environment per rollout (yml; >= 500 on navigation)"
    )
    parser.add_argument(
        "--cost-limit", type=NON_NEGATIVE_FLOAT, default=None, help="episode cost limit d (yml, else the family's)"
    )
    parser.add_argument("--lambda", dest="lambda_", type=POSITIVE_FLOAT, default=None, help="lambda of the adaptation (yml)")
    parser.add_argument(
        "--lambda-c",
        dest="lambda_c",
        type=POSITIVE_FLOAT,
        default=None,
        help="lambda_c of the adaptation, in cost units per nat (yml; episode units: see docs/modules/safe_adapter.md)",
    )
    parser.add_argument(
        "--fit-scope", default="actor", choices=["actor", "head"], help="what represents pi^u in A^s (SafeAdapter fit_scope)"
    )
    parser.add_argument("--delta", type=NON_NEGATIVE_FLOAT, default=0.0, help="allowable violation delta")
    parser.add_argument("--target-kl", type=POSITIVE_FLOAT, default=None, help="KL bound of the meta-policy's TRPO step (yml)")
    parser.add_argument("--test-tasks", type=POSITIVE_INT, default=20, help="unseen tasks at meta-test (paper: 20)")
    parser.add_argument("--adapt-steps", type=NON_NEGATIVE_INT, default=20, help="adaptation steps per test task (paper: 20)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the meta-test of the untrained policy")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    parser.add_argument("--out", default="runs/safemeta", help="output folder (one run per folder, locked while it runs)")
    parser.add_argument("--checkpoint-every", type=POSITIVE_INT, default=10, help="meta-iterations between checkpoints")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest checkpoint (a finished run is reported, not changed; "
        "options given on the command line must match the run's, unless named in --override)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="OPTION[,OPTION]",
        help=f"with --resume: apply these changed options (recorded in run.json); allowed: {', '.join(_flags(OVERRIDABLE))}",
    )
    parser.add_argument(
        "--threads", type=POSITIVE_INT, default=1, help="torch threads (1: small MLPs gain nothing from more, and contend)"
    )
    parser.add_argument(
        "--workers",
        type=NON_NEGATIVE_INT,
        default=0,
        help="Ray workers that run the tasks of every meta-iteration and meta-test (0: in this process; the results "
        "are the same; needs the 'distributed' extra; docs/guide/distributed.md)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="with --workers: 'auto' or host:port of a running Ray cluster (default: a local Ray instance on 127.0.0.1)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """:return: the validated options (an invalid value exits with argparse's message, naming the option)"""
    return build_parser().parse_args(argv)


# options whose default is the env's entry of hyperparams/safemeta.yml, and the fallback without an entry
YML_OPTIONS = {"meta_batch_size": 10, "n_envs": 8, "n_steps": 200, "lambda_": 1.0, "lambda_c": 1.0, "target_kl": 1e-3}


def fill_from_yml(args: argparse.Namespace) -> argparse.Namespace:
    """Options not given: from the ``--env`` entry of hyperparams/safemeta.yml (one source of truth with rl-zoo3)."""
    try:
        entry = load_hyperparams("safemeta", args.env, constructor_only=False)
    except (KeyError, FileNotFoundError):
        entry = {}
    for dest, fallback in YML_OPTIONS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, entry.get(dest, fallback))
    if args.cost_limit is None and "cost_limit" in entry:
        args.cost_limit = float(entry["cost_limit"])
    return args


class MetaIterationLine(KVWriter):
    """One line per meta-iteration on stdout (the full SB3 table per iteration is too long for a terminal)."""

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        def value(key: str) -> str:
            item = key_values.get(key)
            return "-" if item is None else f"{item:.2f}"

        kind = "cost step" if key_values.get("meta/cost_step") else "meta step"
        print(
            f"iteration {key_values.get('meta/iterations', step):>3}: {kind}, meta-policy return"
            f" {value('meta/meta_policy_return')} max cost {value('meta/meta_policy_cost_max')},"
            f" adapted return {value('meta/adapted_return')} max cost {value('meta/adapted_cost_max')},"
            f" {value('time/meta_iteration_seconds')} s",
            flush=True,
        )


class RunStateError(RuntimeError):
    """The output folder's run cannot be continued as asked (changed options, existing run without --resume, ...)."""


def _flag(dest: str) -> str:
    return "--" + dest.rstrip("_").replace("_", "-")


def _flags(dests: Iterable[str]) -> list[str]:
    return [_flag(dest) for dest in dests]


def _explicit_options(argv: list[str] | None) -> dict[str, Any]:
    """:return: the options given on the command line (not defaulted), parsed"""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def _make_env(parser: argparse.ArgumentParser, args: argparse.Namespace) -> VecEnv:
    """The task family's vectorised env, checked before any work: a registered task family with a cost limit."""
    try:
        env = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    except gym.error.Error as error:
        parser.error(f"argument --env: {error}")
    try:
        check_task_distribution(env)
    except TypeError as error:
        env.close()
        parser.error(f"argument --env: {args.env} is not a task family of sb3_safemeta ({error})")
    if args.cost_limit is None and not env.has_attr("default_cost_limit"):
        env.close()
        parser.error(f"argument --env: {args.env} has no default_cost_limit; pass --cost-limit")
    return env


def _read_progress(path: pathlib.Path, keep_until: int) -> dict[int, dict[str, str]]:
    """:return: the rows of an existing progress log up to meta-iteration ``keep_until``, by iteration"""
    if not path.exists():
        return {}
    rows: dict[int, dict[str, str]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                iteration = int(float(row.get("meta/iterations") or "nan"))
            except ValueError:
                continue
            if iteration <= keep_until:
                rows[iteration] = {key: value for key, value in row.items() if value not in ("", None)}
    return rows


class ProgressLog(KVWriter):
    """
    ``<out>/progress.csv``: one row per meta-iteration, each exactly once (a resumed run drops the rows
    after its checkpoint and logs them again), rewritten atomically after every dump (a kill never leaves a
    torn line; new columns, e.g. of the first cost step, are added to the header).

    :param path: the csv file
    :param keep_until: keep the existing rows up to this meta-iteration (0: start empty)
    """

    def __init__(self, path: pathlib.Path, keep_until: int = 0) -> None:
        self.path = path
        self.rows = _read_progress(path, keep_until) if keep_until > 0 else {}
        self._flush()

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        row = {
            key: str(value)
            for key, value in key_values.items()
            if "csv" not in (key_excluded.get(key) or ()) and not isinstance(value, (th.Tensor, np.ndarray))
        }
        self.rows[int(key_values.get("meta/iterations", step))] = row
        self._flush()

    def _flush(self) -> None:
        columns: dict[str, None] = {}
        for row in self.rows.values():
            columns.update(dict.fromkeys(row))
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(self.rows[iteration] for iteration in sorted(self.rows))
        atomic_write_text(self.path, table.getvalue())

    def close(self) -> None:
        pass


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> MetaTestReport:
    """
    Run (or resume, or report) the main job in ``--out``. The folder is locked for the whole run
    (:class:`~sb3_safemeta.common.run_dir.RunLock`); every file is written atomically.

    :param argv: command-line arguments (default ``sys.argv[1:]``)
    :return: the meta-test report of the meta-trained policy
    """
    parser = build_parser()
    args = fill_from_yml(parser.parse_args(argv))
    explicit = _explicit_options(argv)
    names = [name.strip().lstrip("-").replace("-", "_") for item in args.override for name in item.split(",")]
    overrides = [name + "_" if name == "lambda" else name for name in names if name]
    for name in overrides:
        if name not in OVERRIDABLE:
            fixed = name in RUN_OPTIONS
            parser.error(
                f"argument --override: {_flag(name) if fixed else name!r} "
                + ("defines the model and the task stream; it cannot change on resume" if fixed else "is not an option")
                + f"; allowed: {', '.join(_flags(OVERRIDABLE))}"
            )
    if overrides and not args.resume:
        parser.error("argument --override: only with --resume")
    th.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    # a new run's env is checked before the folder is touched; a resumed run's is built from its saved options
    env = None if args.resume and (out / RUN_FILE).exists() else _make_env(parser, args)
    command = ["python -m sb3_safemeta", *(sys.argv[1:] if argv is None else argv)]
    with RunLock(out, argv=command) as lock:
        if lock.stale_holder:
            print(
                f"{out}: took over the lock of a run that ended without releasing it (pid {lock.stale_holder.get('pid')},"
                f" started {lock.stale_holder.get('started')})"
            )
        remove_stale_temporaries(out)
        return _run(args, explicit, overrides, env, out, command)


def _run(
    args: argparse.Namespace,
    explicit: dict[str, Any],
    overrides: list[str],
    env: VecEnv | None,
    out: pathlib.Path,
    command: list[str],
) -> MetaTestReport:
    run_file = out / RUN_FILE
    run = json.loads(run_file.read_text()) if run_file.exists() else None
    checkpoint = MetaCheckpointCallback(args.checkpoint_every, out / "checkpoints")
    if run is not None and not args.resume:
        raise RunStateError(
            f"{out} already holds a run ({run.get('status')}, {run.get('meta_iterations')} meta-iterations): "
            "pass --resume to continue (or report) it, or choose another --out"
        )
    if run is None and (checkpoint.latest_path.exists() or (out / "meta_policy.zip").exists()):
        raise RunStateError(f"{out} holds files of a run without {RUN_FILE} (an older version?): choose another --out")
    options = {dest: getattr(args, dest) for dest in RUN_OPTIONS}
    if run is not None:
        saved = run["options"]
        differences = {
            dest: (saved.get(dest), explicit[dest])
            for dest in RUN_OPTIONS
            if dest in explicit and explicit[dest] != saved.get(dest)
        }
        listing = "; ".join(f"{_flag(dest)}: run {old!r}, given {new!r}" for dest, (old, new) in differences.items())
        if run["status"] == "finished":
            print(
                f"{out} holds a finished run ({run['meta_iterations']} meta-iterations,"
                f" finished {run['finished']}): nothing to do"
            )
            if differences:
                print(f"(options that differ from the run's were ignored: {listing})")
            report = MetaTestReport.load(out / "meta_test")
            print(report.table())
            return report
        refused = [dest for dest in differences if dest not in overrides]
        if refused:
            raise RunStateError(
                f"--resume with options that differ from the run in {out}: {listing}. Give the run's values (or omit them),"
                f" or apply the changes with --override {','.join(_flag(dest)[2:] for dest in refused)}"
            )
        applied = {_flag(dest): [old, new] for dest, (old, new) in differences.items()}
        options = {**saved, **{dest: explicit[dest] for dest in differences}}
        if applied:
            # the meta-iteration they apply from is the checkpoint's, known once it is loaded
            run["overrides"].append({"time": _now(), "after_meta_iterations": None, "changes": applied})
            run["options"] = options
            print(f"resume with overrides: {applied}")
        env = make_vec_env(options["env"], n_envs=options["n_envs"], seed=options["seed"])
    else:
        if env is None:  # --resume of a folder whose run.json appeared after the check: a new run after all
            env = _make_env(build_parser(), args)
        if options["cost_limit"] is None:
            options["cost_limit"] = float(env.get_attr("default_cost_limit", indices=[0])[0])
        run = {
            "version": sb3_safemeta.__version__,
            "created": _now(),
            "command": command,
            "options": options,
            "overrides": [],
            "status": "training",
            "meta_iterations": 0,
        }
    atomic_write_json(run_file, run)
    return _train_and_test(options, env, out, run, checkpoint, workers=(args.workers, args.ray_address))


def _network_of(env_id: str) -> dict[str, Any]:
    """:return: ``policy_kwargs`` and ``gamma`` of the env's yml entry (the main job's network when it has none)"""
    try:
        entry = load_hyperparams("safemeta", env_id)
    except (KeyError, FileNotFoundError):
        entry = {}
    return {"policy_kwargs": entry.get("policy_kwargs", dict(log_std_init=-0.5)), "gamma": entry.get("gamma", 0.99)}


def _train_and_test(
    options: dict[str, Any],
    env: VecEnv,
    out: pathlib.Path,
    run: dict[str, Any],
    checkpoint: MetaCheckpointCallback,
    workers: tuple[int, str | None] = (0, None),
) -> MetaTestReport:
    """:param workers: ``(--workers, --ray-address)``: where the tasks run (no result depends on it)"""
    run_file = out / RUN_FILE
    kwargs = dict(
        cost_limit=options["cost_limit"],
        lambda_=options["lambda_"],
        lambda_c=options["lambda_c"],
        fit_scope=options["fit_scope"],
        delta_c=options["delta"],
        meta_batch_size=options["meta_batch_size"],
        n_steps=options["n_steps"],
        target_kl=options["target_kl"],
        seed=options["seed"],
        **_network_of(options["env"]),
    )
    # the untrained policy (the baseline's start) is a function of the seed: rebuilt on resume too
    model = SafeMetaDual("MlpPolicy", env, **kwargs)
    initial_state = {key: value.clone() for key, value in model.policy.state_dict().items()}
    final_path = out / "meta_policy.zip"
    # "trained": training ended and meta_policy.zip is complete (written atomically); else the latest checkpoint
    source = final_path if run["status"] == "trained" else checkpoint.latest_path
    if run["meta_iterations"] > 0 or source.exists():
        if source.exists():
            model = SafeMetaDual.load(source, env=env)
            # the options a resume may override (validated by the parser) replace the saved ones
            model.cost_limit = as_cost_vector(options["cost_limit"], model.n_costs, "cost_limit", allow_negative=False)
            model.lambda_, model.lambda_c, model.delta_c = options["lambda_"], options["lambda_c"], options["delta"]
            model.meta_batch_size, model.target_kl = options["meta_batch_size"], options["target_kl"]
            print(f"resuming from {source} after {model.meta_iterations} meta-iterations")
    if run["overrides"] and run["overrides"][-1]["after_meta_iterations"] is None:
        run["overrides"][-1]["after_meta_iterations"] = model.meta_iterations
        atomic_write_json(run_file, run)
    if model.meta_iterations > options["meta_iterations"]:
        raise RunStateError(
            f"the run in {out} has done {model.meta_iterations} meta-iterations, more than --meta-iterations"
            f" {options['meta_iterations']}"
        )
    # where the tasks run is no option of the run: set on the built or loaded model, never saved as a choice
    model.n_workers, model.ray_address = check_n_workers(*workers)
    resumed = model.meta_iterations > 0
    # progress: one line per meta-iteration on stdout, every logged value in <out>/progress.csv (each iteration once)
    model.set_logger(
        Logger(str(out), [MetaIterationLine(), ProgressLog(out / "progress.csv", keep_until=model.meta_iterations)])
    )
    print(
        f"Meta-training SafeMetaDual on {options['env']}: {options['meta_iterations']} meta-iterations"
        f" x {options['meta_batch_size']} tasks, d={options['cost_limit']}, target KL {options['target_kl']}"
    )
    start = time.time()
    if model.meta_iterations < options["meta_iterations"]:
        if run["status"] != "training":
            run["status"] = "training"
            atomic_write_json(run_file, run)
        steps_per_iteration = options["meta_batch_size"] * 2 * options["n_steps"] * options["n_envs"]
        # the budget is in meta-iterations (a cost step uses half the steps of a meta step); the timestep
        # bound is never the one that stops, and a resumed run stops at the same total of meta-iterations
        model.learn(
            total_timesteps=options["meta_iterations"] * steps_per_iteration,
            callback=CallbackList([checkpoint, StopTrainingOnMetaIterations(options["meta_iterations"])]),
            reset_num_timesteps=not resumed,
            log_interval=1,
        )
        with atomic_path(final_path) as temporary:
            model.save(temporary)
        run.update(status="trained", meta_iterations=model.meta_iterations)
        atomic_write_json(run_file, run)
        print(f"meta-training: {time.time() - start:.0f} s, {model.meta_iterations} meta-iterations; saved {final_path}")
    elif not final_path.exists() or run["status"] != "trained":  # the run ended while saving its final zip
        with atomic_path(final_path) as temporary:
            model.save(temporary)
        run.update(status="trained", meta_iterations=model.meta_iterations)
        atomic_write_json(run_file, run)

    start = time.time()
    seed = options["seed"] + 10_000
    report = model.meta_test(n_tasks=options["test_tasks"], n_adapt_steps=options["adapt_steps"], seed=seed)
    report.label = "SafeMetaDual (meta-trained)"
    reports = [report]
    if not options["no_baseline"]:
        model.policy.load_state_dict(initial_state)
        baseline = model.meta_test(n_tasks=options["test_tasks"], n_adapt_steps=options["adapt_steps"], seed=seed)
        baseline.label = "same adaptation from the untrained policy"
        reports.append(baseline)
    report.save(out / "meta_test")
    report.plot(out / "meta_test.png", others=reports[1:])
    run.update(status="finished", finished=_now())
    atomic_write_json(run_file, run)
    for item in reports:
        print()
        print(item.table())
    if len(reports) > 1:
        gain = reports[0].returns.mean(axis=0) - reports[1].returns.mean(axis=0)
        print(f"\nmeta-training gain in mean return: step 0 {gain[0]:+.1f}, step 1 {gain[1]:+.1f}, last step {gain[-1]:+.1f}")
    print(f"meta-test: {time.time() - start:.0f} s; wrote {out / 'meta_test.csv'}, {out / 'meta_test.png'}")
    model.close_workers()
    return report


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    try:
        main()
    except (RunLockedError, RunStateError) as error:
        sys.exit(f"python -m sb3_safemeta: error: {error}")
