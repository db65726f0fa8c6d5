"""
Run a meta-policy trained with rl-zoo3, and optionally its meta-test (safe adaptation to unseen tasks).

    python -m sb3_safemeta.zoo.enjoy --algo safemeta --env SafeMetaPointNav-v0 -f logs [--exp-id 0]
        [-n 1000] [--meta-test-tasks 5 --adapt-steps 5]

Finds the model as ``rl_zoo3.enjoy`` does (``<folder>/<algo>/<env>_<exp-id>/<env>.zip``), except that
``--exp-id 0`` selects the latest experiment *that has a model*: ``--optimize`` runs also create an
experiment folder, without a model. ``rl_zoo3.enjoy`` runs these models too (with the startup hook: it loads
them without an environment, which SB3 allows for ``predict``), but reports returns only; this launcher loads
the model with its task-distribution environment and reports the episode cost and the meta-test.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from huggingface_sb3 import EnvironmentName
from rl_zoo3.utils import get_model_path
from stable_baselines3.common.env_util import make_vec_env

from sb3_safemeta.common.evaluation import evaluate_policy_cost
from sb3_safemeta.common.meta_algorithm import OnPolicyMetaAlgorithm
from sb3_safemeta.zoo.algos import SAFEMETA_ALGOS


def latest_experiment_with_model(folder: str, algo: str, env_name: EnvironmentName, load_best: bool = False) -> int:
    """
    :param folder: rl-zoo3 log folder
    :param algo: algorithm name
    :param env_name: environment name
    :param load_best: look for ``best_model.zip`` instead of ``<env>.zip``
    :return: the largest experiment id whose folder holds the model, 0 if there is none
    """
    model_file = "best_model.zip" if load_best else f"{env_name}.zip"
    prefix = f"{env_name}_"
    candidates = os.listdir(os.path.join(folder, algo)) if os.path.isdir(os.path.join(folder, algo)) else []
    ids = [int(name[len(prefix) :]) for name in candidates if name.startswith(prefix) and name[len(prefix) :].isdigit()]
    for exp_id in sorted(ids, reverse=True):
        if os.path.isfile(os.path.join(folder, algo, f"{prefix}{exp_id}", model_file)):
            return exp_id
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sb3_safemeta.zoo.enjoy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", default="safemeta", choices=list(SAFEMETA_ALGOS))
    parser.add_argument("--env", type=EnvironmentName, default="SafeMetaPointNav-v0")
    parser.add_argument("-f", "--folder", default="logs", help="rl-zoo3 log folder")
    parser.add_argument("--exp-id", type=int, default=0, help="experiment id (0: the latest one with a model)")
    parser.add_argument("--load-best", action="store_true", help="load best_model.zip")
    parser.add_argument("-n", "--n-episodes", type=int, default=5, help="deterministic episodes of the loaded policy")
    parser.add_argument("--meta-test-tasks", type=int, default=0, help="unseen tasks for a meta-test (meta-learners)")
    parser.add_argument("--adapt-steps", type=int, default=5, help="adaptation steps per meta-test task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    exp_id = args.exp_id
    if exp_id == 0:
        exp_id = latest_experiment_with_model(args.folder, args.algo, args.env, args.load_best)
        if exp_id == 0:
            raise FileNotFoundError(f"no trained {args.algo} model for {args.env} in {os.path.join(args.folder, args.algo)}")
        print(f"Loading the latest experiment with a model, id={exp_id}")
    _, model_path, _ = get_model_path(exp_id, args.folder, args.algo, args.env, args.load_best)
    env = make_vec_env(args.env.gym_id, n_envs=1, seed=args.seed)
    model = SAFEMETA_ALGOS[args.algo].load(model_path, env=env, device=args.device)
    print(f"Loaded {model_path}")
    returns, costs = evaluate_policy_cost(model, env, args.n_episodes, n_costs=int(getattr(model, "n_costs", 1)))
    limit = np.asarray(model.cost_limit, dtype=np.float64)
    for episode, (episode_return, episode_cost) in enumerate(zip(returns, costs, strict=True)):
        print(f"Episode {episode}: Reward {episode_return:.2f}, Cost {', '.join(f'{c:.2f}' for c in episode_cost)}")
    summary = f"return {returns.mean():.2f} +/- {returns.std():.2f}, episode cost max {costs.max():.2f} (d = {limit})"
    print(f"{args.n_episodes} episodes: {summary}")
    if args.meta_test_tasks > 0 and isinstance(model, OnPolicyMetaAlgorithm):
        report = model.meta_test(n_tasks=args.meta_test_tasks, n_adapt_steps=args.adapt_steps, seed=args.seed + 10_000)  # type: ignore[attr-defined]
        print(report.table())


if __name__ == "__main__":
    main()
