"""
Anytime safety of A^s configurations at meta-test, judged by independent episodes (issue "Anytime safety where
costs are rare"): for each configuration, ``SafeMetaDual.meta_test`` from a saved meta-policy on the same test
tasks, every explored policy pi_[0], ..., pi_[K] measured on ``--eval-episodes`` independent episodes besides its
training rollout. One ``<out>/<env>/<name>.{csv,json,png}`` per configuration (the run skips those already
written, so it resumes), and a summary line per configuration: policies within d by the rollouts and by the
independent episodes, mean return at step 0 and step K.

    OMP_NUM_THREADS=1 python benchmarks/measure_anytime_safety.py --env SafeMetaPointCircle-v0 \
        --meta-policy runs/diagnose_rare_cost/SafeMetaPointCircle-v0/meta_policy.zip --out runs/anytime_safety \
        [--tasks 5] [--adapt-steps 5] [--eval-episodes 20] [--seed 0] \
        [--configs default=lambda_c:10 large=lambda_c:1000,n_steps:1500]

A configuration is ``name=key:value,key:value`` (SafeAdapter arguments, e.g. ``lambda_``, ``lambda_c``,
``n_steps``, ``cost_confidence``, ``min_episodes``); ``default`` alone uses the meta-policy's own adaptation hyper-parameters
and its ``test_adaptation``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.save_util import load_from_zip_file

import sb3_safemeta.envs  # noqa: F401  (registers the task families)
from sb3_safemeta.common.evaluation import MetaTestReport
from sb3_safemeta.safe_meta_dual import SafeMetaDual


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    name, _, body = text.partition("=")
    kwargs: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, value = item.split(":")
        try:
            kwargs[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            kwargs[key] = value
    return name, kwargs


def load_meta_policy(path: str, env: Any) -> SafeMetaDual:
    """The saved meta-policy with its adaptation hyper-parameters (rebuilt from the zip's data and policy weights, so
    that zips written before a change of the saved optimizer state load too)."""
    data, params, _ = load_from_zip_file(path)
    assert data is not None and params is not None
    keys = ("cost_limit", "lambda_", "lambda_c", "delta_c", "n_steps", "gamma", "advantage_estimator", "fit_steps")
    keys += ("n_dual_steps", "fit_scope", "dual_solver", "backtrack_steps", "dual_tol", "beta", "meta_batch_size")
    keys += ("test_adaptation",)
    kwargs = {key: data[key] for key in keys if key in data}
    policy_kwargs = dict(data.get("policy_kwargs") or {})
    policy_kwargs.pop("n_costs", None)
    model = SafeMetaDual("MlpPolicy", env, policy_kwargs=policy_kwargs, seed=data.get("seed"), **kwargs)
    model.policy.load_state_dict(params["policy"])
    return model


def summary(name: str, report: MetaTestReport) -> str:
    eval_fraction = report.eval_safe_fraction
    return (
        f"{name}: within d by rollouts {report.safe_fraction:.1%}, by {report.n_eval_episodes} independent episodes"
        f" {eval_fraction if eval_fraction is None else f'{eval_fraction:.1%}'} of {report.violations.size};"
        f" max independent cost {np.max(report.eval_costs) if report.eval_costs is not None else float('nan'):.1f};"
        f" mean return step 0 {report.returns[:, 0].mean():.2f} -> step {report.n_steps} {report.returns[:, -1].mean():.2f}"
        + (
            f" (independent: {report.eval_returns[:, 0].mean():.2f} -> {report.eval_returns[:, -1].mean():.2f})"
            if report.eval_returns is not None
            else ""
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--meta-policy", required=True)
    parser.add_argument("--out", default="runs/anytime_safety")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--adapt-steps", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=["default="])
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    folder = pathlib.Path(args.out) / args.env
    folder.mkdir(parents=True, exist_ok=True)
    env = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    model = load_meta_policy(args.meta_policy, env)
    tasks = model.sample_tasks(args.tasks, seed=10_000 + args.seed)
    for config in args.configs:
        name, kwargs = parse_config(config)
        path = folder / f"{name}_seed{args.seed}"
        if path.with_suffix(".json").exists():
            print(summary(name, MetaTestReport.load(path)), "(already measured)", flush=True)
            continue
        start = time.time()
        report = model.meta_test(
            tasks=tasks,
            n_adapt_steps=args.adapt_steps,
            seed=10_000 + args.seed,
            adapter_kwargs=kwargs,
            n_eval_episodes=args.eval_episodes,
            verbose=1,
        )
        report.label = f"{name} {json.dumps(kwargs)}"
        report.save(path)
        report.plot(path.with_suffix(".png"))
        print(summary(name, report), f"({time.time() - start:.0f} s)", flush=True)
        print(report.table(), flush=True)


if __name__ == "__main__":
    main()
