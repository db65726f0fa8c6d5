"""
The comparison of Section 6 / Figure 1 on the built-in family: SafeMetaDual against the baselines MAML with cost
penalty, meta-CPO and meta-CRPO, each meta-trained with the same environment-step budget, then meta-tested on the same
unseen tasks with its own adaptation (SafeAdapter steps, plain inner policy-gradient steps, CPO steps, CRPO steps).

Usage::

    python examples/compare_baselines.py                       # 40 meta-iterations of 10 tasks, 20 tasks x 20 steps
    python examples/compare_baselines.py --meta-iterations 5 --test-tasks 3 --adapt-steps 3   # a quick look

The baselines run with their defaults, the paper's definitions (docs/modules/*.md, "What the paper describes"):
MAML penalising the violation w max(0, Jc - d), meta-CPO with the constrained outer CPO step, meta-CRPO with the
running mean of the task policies of all tasks seen.

Budget: one meta-iteration of every algorithm uses two rollouts per task (SafeMetaDual: the meta-policy's and
the adapted policy's; MAML and meta-CPO: pre- and post-update; meta-CRPO: two CRPO steps per task), i.e.
``meta_batch_size * 2 * n_steps * n_envs`` environment steps (SafeMetaDual uses half of that in an iteration
that takes the cost step). Writes ``<out>/<algorithm>.{csv,json}``, ``<out>/comparison.png`` (the two panels of
Figure 1 for all of them) and prints the anytime-safety tables and a summary.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_safemeta import MAMLCostPenalty, MetaCPO, MetaCRPO, SafeMetaDual
from sb3_safemeta.common.evaluation import MetaTestReport

ALGORITHMS = ("SafeMetaDual", "MAMLCostPenalty", "MetaCPO", "MetaCRPO")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeMetaPointNav-v0")
    parser.add_argument("--meta-iterations", type=int, default=40)
    parser.add_argument("--meta-batch-size", type=int, default=10)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=200)
    parser.add_argument("--test-tasks", type=int, default=20)
    parser.add_argument("--adapt-steps", type=int, default=20)
    parser.add_argument("--cost-limit", type=float, default=None, help="episode cost limit d (default: the family's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--out", default="runs/compare_baselines")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    th.set_num_threads(1)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed)
    cost_limit = args.cost_limit if args.cost_limit is not None else float(env.get_attr("default_cost_limit", indices=[0])[0])
    common = dict(
        cost_limit=cost_limit,
        meta_batch_size=args.meta_batch_size,
        n_steps=args.n_steps,
        seed=args.seed,
        policy_kwargs=dict(log_std_init=-0.5),
    )
    models = {
        # the main job's settings (python -m sb3_safemeta)
        "SafeMetaDual": SafeMetaDual("MlpPolicy", env, lambda_=1.0, lambda_c=10.0, target_kl=0.01, **common),
        # w = 1: a unit of cost weighs as much as a unit of reward; TRPO outer step as SafeMetaDual's
        "MAMLCostPenalty": MAMLCostPenalty("MlpPolicy", env, cost_penalty=1.0, inner_lr=0.1, target_kl=0.01, **common),
        # the inner CPO step's KL bound as the adaptation steps of the others (~0.01)
        "MetaCPO": MetaCPO("MlpPolicy", env, inner_kl=0.01, target_kl=0.01, **common),
        # two CRPO steps per task: two rollouts per task, as the others
        "MetaCRPO": MetaCRPO("MlpPolicy", env, n_inner_steps=2, adapt_kl=0.01, **common),
    }
    models = {name: model for name, model in models.items() if name in args.algorithms}
    steps_per_iteration = args.meta_batch_size * 2 * args.n_steps * args.n_envs
    reports: list[MetaTestReport] = []
    for name, model in models.items():
        start = time.time()
        model.learn(total_timesteps=args.meta_iterations * steps_per_iteration)
        trained = time.time() - start
        start = time.time()
        report = model.meta_test(n_tasks=args.test_tasks, n_adapt_steps=args.adapt_steps, seed=args.seed + 10_000)
        report.label = name
        report.save(out / name)
        reports.append(report)
        print(
            f"{name}: {model.meta_iterations} meta-iterations, {model.num_timesteps} steps, training {trained:.0f} s,"
            f" meta-test {time.time() - start:.0f} s",
            flush=True,
        )
        print(report.table(), flush=True)
    reports[0].plot(out / "comparison.png", others=reports[1:])
    print("\nsummary (mean return over tasks at k = 0, 1, K; explored policies within d)")
    for report in reports:
        returns = report.returns.mean(axis=0)
        within = int(report.returns.size - report.violations.sum())
        print(
            f"  {report.label:>16}: {returns[0]:8.1f} {returns[1]:8.1f} {returns[-1]:8.1f}   "
            f"{within} / {report.returns.size} ({100 * report.safe_fraction:.1f}%), max cost {report.costs[..., 0].max():.2f}"
        )
    print(f"wrote {out / 'comparison.png'}")


if __name__ == "__main__":
    main()
