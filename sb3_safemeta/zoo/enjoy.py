"""
Run a meta-policy trained with rl-zoo3, and optionally its meta-test (safe adaptation to unseen tasks).

    python -m sb3_safemeta.zoo.enjoy --algo safemeta --env SafeMetaPointNav-v0 -f logs [--exp-id 0]
        [-n 1000] [--meta-test-tasks 5 --adapt-steps 5]

Finds the model as ``rl_zoo3.enjoy`` does (``<folder>/<algo>/<env>_<exp-id>/<env>.zip``). ``rl_zoo3.enjoy``
itself cannot load these models: it calls ``ALGOS[algo].load(path)`` without an environment, and
SafeMetaDual needs its task-distribution environment when it is built.
"""

from __future__ import annotations

import argparse

import numpy as np
from huggingface_sb3 import EnvironmentName
from rl_zoo3.utils import get_model_path
from stable_baselines3.common.env_util import make_vec_env

from sb3_safemeta.zoo.exp_manager import run_episodes
from sb3_safemeta.zoo.registration import SAFEMETA_ALGOS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sb3_safemeta.zoo.enjoy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", default="safemeta", choices=list(SAFEMETA_ALGOS))
    parser.add_argument("--env", type=EnvironmentName, default="SafeMetaPointNav-v0")
    parser.add_argument("-f", "--folder", default="logs", help="rl-zoo3 log folder")
    parser.add_argument("--exp-id", type=int, default=0, help="experiment id (0: latest)")
    parser.add_argument("--load-best", action="store_true", help="load best_model.zip")
    parser.add_argument("-n", "--n-episodes", type=int, default=5, help="deterministic episodes of the loaded policy")
    parser.add_argument("--meta-test-tasks", type=int, default=0, help="unseen tasks for a meta-test (safemeta only)")
    parser.add_argument("--adapt-steps", type=int, default=5, help="adaptation steps per meta-test task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    _, model_path, _ = get_model_path(args.exp_id, args.folder, args.algo, args.env, args.load_best)
    env = make_vec_env(args.env.gym_id, n_envs=1, seed=args.seed)
    model = SAFEMETA_ALGOS[args.algo].load(model_path, env=env, device=args.device)
    print(f"Loaded {model_path}")
    returns, costs = run_episodes(model, env, args.n_episodes)
    limit = np.asarray(model.cost_limit, dtype=float)
    summary = f"return {returns.mean():.2f} +/- {returns.std():.2f}, episode cost max {costs.max():.2f} (d = {limit})"
    print(f"{args.n_episodes} episodes: {summary}")
    if args.meta_test_tasks > 0 and args.algo == "safemeta":
        report = model.meta_test(n_tasks=args.meta_test_tasks, n_adapt_steps=args.adapt_steps, seed=args.seed + 10_000)
        print(report.table())


if __name__ == "__main__":
    main()
