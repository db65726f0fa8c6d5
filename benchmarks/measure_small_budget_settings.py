"""
SafeMetaDual meta-training settings at the reproduction's ``small`` budget, judged by independent episodes: meta-train
one SafeMetaDual with the scenario's yml entry, the budget's data sizes and the given overrides, then meta-test it on
10 test tasks x 5 adaptation steps, every explored policy measured on 20 independent episodes besides its rollout.
Prints the fraction of explored policies within d (both ways), the meta-policy's own fraction (step 0), the largest
independent cost and the mean independent return at step 0 and step 5. The trained model is kept in
``<out>/<name>/model.zip`` (a second call only re-runs the meta-test) and the report in ``<out>/<name>/meta_test.*``.

    OMP_NUM_THREADS=1 python benchmarks/measure_small_budget_settings.py H3 SafeMetaHalfCheetahVel-v0 \
        --overrides target_kl=0.01 crpo_rule=per_task

The numbers of docs/modules/safe_adapter.md ("Rare costs", small-budget meta-policies) were measured with it.
``--train-cost-limit`` meta-trains against another limit than the one of the meta-test (a margin, e.g. 5 for d = 10).
``--meta-iterations`` replaces the budget's 60 (e.g. 300, the paper's count, with the small budget's data sizes: is
the result a matter of meta-training length?). Meta-training checkpoints every 10 meta-iterations into
``<out>/<name>/checkpoints/`` (every 60th kept) and an interrupted call resumes from the latest one. ``--tasks 0``
meta-trains only (then ``measure_anytime_safety.py --meta-policy <out>/<name>/model.zip`` compares A^s settings).
"""

from __future__ import annotations

import argparse
import pathlib
import time
from typing import Any

import numpy as np
import torch as th

from sb3_safemeta import SafeMetaDual
from sb3_safemeta.common.callbacks import MetaCheckpointCallback, StopTrainingOnMetaIterations
from sb3_safemeta.reproduce.budgets import BUDGETS
from sb3_safemeta.reproduce.runs import TEST_TASK_SEED, RunSpec, algorithm_kwargs, make_env


def parse_value(text: str) -> Any:
    """``10`` -> int (counts such as ``fit_steps`` must be integers), ``0.9`` -> float, anything else as given."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("env")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/small_budget_settings")
    parser.add_argument("--train-cost-limit", type=float, default=None)
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="key=value constructor arguments (key.entry=value: one entry of a dict)"
    )
    parser.add_argument(
        "--tasks", type=int, default=10, help="test tasks; 0 meta-trains only (measure_anytime_safety.py takes model.zip)"
    )
    parser.add_argument("--adapt-steps", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--meta-iterations", type=int, default=BUDGETS["small"].meta_iterations)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    budget = BUDGETS["small"]
    kwargs = algorithm_kwargs(RunSpec("SafeMetaDual", args.env, args.seed), budget)
    # the budget's KL bound is applied by algorithm_kwargs; an override replaces it
    test_limit = kwargs["cost_limit"]
    for key, value in (item.split("=", 1) for item in args.overrides):
        if "." in key:  # policy_kwargs.log_std_init=-1: one entry of a dict-valued argument
            outer, inner = key.split(".", 1)
            kwargs[outer] = {**kwargs.get(outer, {}), inner: parse_value(value)}
        else:
            kwargs[key] = parse_value(value)
    if args.train_cost_limit is not None:
        kwargs["cost_limit"] = args.train_cost_limit
    env = make_env(args.env, budget, args.seed)
    out = pathlib.Path(args.out) / args.name
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if (out / "model.zip").exists():
        model = SafeMetaDual.load(out / "model.zip", env=env)
    else:
        checkpoints = MetaCheckpointCallback(10, out / "checkpoints", name_prefix="meta_policy")
        kept = MetaCheckpointCallback(60, out / "checkpoints", name_prefix="meta_policy", keep_all=True)
        resume = checkpoints.latest_path.exists()
        model = SafeMetaDual.load(checkpoints.latest_path, env=env) if resume else SafeMetaDual("MlpPolicy", env, **kwargs)
        if resume:
            print(f"{args.name}: resuming after {model.meta_iterations} meta-iterations", flush=True)
        stop = StopTrainingOnMetaIterations(args.meta_iterations)
        model.learn(10**12, callback=[checkpoints, kept, stop], reset_num_timesteps=not resume)
        model.save(out / "model.zip")
    print(f"{args.name}: meta-trained in {time.time() - start:.0f} s", flush=True)
    if args.tasks == 0:
        return
    model.cost_limit = test_limit
    report = model.meta_test(
        n_tasks=args.tasks, n_adapt_steps=args.adapt_steps, seed=TEST_TASK_SEED, n_eval_episodes=args.eval_episodes, verbose=1
    )
    report.save(out / "meta_test")
    assert report.eval_costs is not None and report.eval_returns is not None
    costs = report.eval_costs[..., 0]
    print(
        f"{args.name}: within d by {args.eval_episodes} independent episodes {report.eval_safe_fraction:.0%}"
        f" (rollouts {report.safe_fraction:.0%}); meta-policy within d on {np.mean(costs[:, 0] <= test_limit):.0%} of the"
        f" tasks; largest independent cost {costs.max():.1f}; independent return {report.eval_returns[:, 0].mean():.1f}"
        f" -> {report.eval_returns[:, -1].mean():.1f}; {time.time() - start:.0f} s",
        flush=True,
    )
    print(np.round(costs, 1))


if __name__ == "__main__":
    main()
