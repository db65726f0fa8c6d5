"""
The main job: meta-train SafeMetaDual on a task family, meta-test it on unseen tasks with anytime
safety, and compare with the same adaptation started from the untrained policy.

    python -m sb3_safemeta [--env SafeMetaPointNav-v0] [--meta-iterations 40] [--test-tasks 20] [--adapt-steps 20]

Writes ``<out>/meta_policy.zip``, ``<out>/meta_test.{csv,json,png}`` and prints the anytime-safety
tables. With ``--resume`` it continues from ``<out>/checkpoints/safemeta_latest.zip``.
"""

from __future__ import annotations

import argparse
import pathlib
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger

import sb3_safemeta.envs  # noqa: F401  (registers the task families)
from sb3_safemeta.common.callbacks import MetaCheckpointCallback, StopTrainingOnMetaIterations
from sb3_safemeta.common.evaluation import MetaTestReport
from sb3_safemeta.safe_meta_dual import SafeMetaDual


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_safemeta", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="SafeMetaPointNav-v0", help="registered task-family id")
    parser.add_argument("--meta-iterations", type=int, default=40, help="meta-iterations of training")
    parser.add_argument("--meta-batch-size", type=int, default=10, help="tasks per meta-iteration (paper: 10)")
    parser.add_argument("--n-envs", type=int, default=8, help="parallel environments per rollout")
    parser.add_argument("--n-steps", type=int, default=200, help="steps per environment per rollout")
    parser.add_argument("--cost-limit", type=float, default=None, help="episode cost limit d (default: the family's)")
    parser.add_argument("--lambda", dest="lambda_", type=float, default=1.0, help="lambda of the adaptation")
    parser.add_argument(
        "--lambda-c",
        dest="lambda_c",
        type=float,
        default=10.0,
        help="lambda_c of the adaptation, in cost units per nat (episode units: see docs/modules/safe_adapter.md)",
    )
    parser.add_argument(
        "--fit-scope", default="actor", choices=["actor", "head"], help="what represents pi^u in A^s (SafeAdapter fit_scope)"
    )
    parser.add_argument("--delta", type=float, default=0.0, help="allowable violation delta")
    parser.add_argument("--target-kl", type=float, default=0.01, help="KL bound of the meta-policy's TRPO step")
    parser.add_argument("--test-tasks", type=int, default=20, help="unseen tasks at meta-test (paper: 20)")
    parser.add_argument("--adapt-steps", type=int, default=20, help="adaptation steps per test task (paper: 20)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the meta-test of the untrained policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/safemeta", help="output folder")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="meta-iterations between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: small MLPs gain nothing from more, and contend)"
    )
    return parser.parse_args(argv)


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


def main(argv: list[str] | None = None) -> MetaTestReport:
    args = parse_args(argv)
    th.set_num_threads(args.threads)
    out = pathlib.Path(args.out)
    env = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    cost_limit = args.cost_limit if args.cost_limit is not None else float(env.get_attr("default_cost_limit", indices=[0])[0])
    kwargs = dict(
        cost_limit=cost_limit,
        lambda_=args.lambda_,
        lambda_c=args.lambda_c,
        fit_scope=args.fit_scope,
        delta_c=args.delta,
        meta_batch_size=args.meta_batch_size,
        n_steps=args.n_steps,
        target_kl=args.target_kl,
        seed=args.seed,
        policy_kwargs=dict(log_std_init=-0.5),
    )
    steps_per_iteration = args.meta_batch_size * 2 * args.n_steps * args.n_envs
    checkpoint = MetaCheckpointCallback(args.checkpoint_every, out / "checkpoints")
    if args.resume and checkpoint.latest_path.exists():
        model = SafeMetaDual.load(checkpoint.latest_path, env=env)
        print(f"resuming from {checkpoint.latest_path} after {model.meta_iterations} meta-iterations")
    else:
        model = SafeMetaDual("MlpPolicy", env, **kwargs)
    # progress: one line per meta-iteration on stdout, every logged value in <out>/progress.csv
    out.mkdir(parents=True, exist_ok=True)
    progress = out / ("progress.csv" if model.meta_iterations == 0 else f"progress_from_{model.meta_iterations}.csv")
    model.set_logger(Logger(str(out), [MetaIterationLine(), CSVOutputFormat(str(progress))]))
    initial_state: dict[str, th.Tensor] | None = {key: value.clone() for key, value in model.policy.state_dict().items()}
    if args.resume and model.meta_iterations > 0:
        initial_state = None  # the untrained policy of a resumed run is not known

    print(
        f"Meta-training SafeMetaDual on {args.env}: {args.meta_iterations} meta-iterations"
        f" x {args.meta_batch_size} tasks, d={cost_limit}"
    )
    start = time.time()
    # the budget is in meta-iterations (a cost step uses half the steps of a meta step); the timestep
    # bound is never the one that stops, and a resumed run stops at the same total of meta-iterations
    model.learn(
        total_timesteps=args.meta_iterations * steps_per_iteration,
        callback=CallbackList([checkpoint, StopTrainingOnMetaIterations(args.meta_iterations)]),
        reset_num_timesteps=not args.resume,
        log_interval=1,
    )
    model.save(out / "meta_policy.zip")
    print(
        f"meta-training: {time.time() - start:.0f} s, {model.meta_iterations} meta-iterations; saved {out / 'meta_policy.zip'}"
    )

    start = time.time()
    report = model.meta_test(n_tasks=args.test_tasks, n_adapt_steps=args.adapt_steps, seed=args.seed + 10_000)
    report.label = "SafeMetaDual (meta-trained)"
    reports = [report]
    if not args.no_baseline and initial_state is not None:
        model.policy.load_state_dict(initial_state)
        baseline = model.meta_test(n_tasks=args.test_tasks, n_adapt_steps=args.adapt_steps, seed=args.seed + 10_000)
        baseline.label = "same adaptation from the untrained policy"
        reports.append(baseline)
    report.save(out / "meta_test")
    report.plot(out / "meta_test.png", others=reports[1:])
    for item in reports:
        print()
        print(item.table())
    if len(reports) > 1:
        gain = reports[0].returns.mean(axis=0) - reports[1].returns.mean(axis=0)
        print(f"\nmeta-training gain in mean return: step 0 {gain[0]:+.1f}, step 1 {gain[1]:+.1f}, last step {gain[-1]:+.1f}")
    print(f"meta-test: {time.time() - start:.0f} s; wrote {out / 'meta_test.csv'}, {out / 'meta_test.png'}")
    return report


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
