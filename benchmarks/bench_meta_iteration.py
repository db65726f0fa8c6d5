"""
Wall time of one SafeMetaDual meta-iteration against one sb3-contrib TRPO update on the same number of
environment steps, the same environment and the same policy network (Gaussian MLP, 2x64 tanh).

Usage::

    python benchmarks/bench_meta_iteration.py                    # main job's settings: 10 tasks x 8 envs x 200 steps
    python benchmarks/bench_meta_iteration.py --cost-limit 10    # the family's d: active constraints, some cost steps
    python benchmarks/bench_meta_iteration.py --trpo-n-critic-updates 1
    python benchmarks/bench_meta_iteration.py --meta-batch-size 4 --n-envs 4 --n-steps 100 --repeats 3

Exactly one meta-iteration is timed per round (a callback stops ``learn`` after it). Without a violating
task it takes the full path (for every task a rollout of the meta-policy, the safe adaptation A^s and a
rollout of the adapted policy; then the TRPO step on phi) and spends ``meta_batch_size * 2 * n_steps *
n_envs`` environment steps; each violating task saves its adaptation and adapted rollout. The TRPO update
is ``TRPO.learn`` on as many steps as a full meta-iteration (one rollout of ``2 * meta_batch_size * n_steps``
steps per env, then one ``train()``), with sb3-contrib's default hyperparameters otherwise. With the
default 10 critic epochs of minibatches of 128 (``--trpo-n-critic-updates``), the critic regression is most
of a TRPO update's compute, while SafeMetaDual's default Monte-Carlo advantages need no critic.

The two are timed alternately (``--repeats`` rounds after one warm-up round, both models continuing to
learn) so that both see the same machine load; the median and the best round are printed with their ratio.
Collection (``collect_rollouts``: policy forward passes plus env steps) and compute (everything else: for
SafeMetaDual the advantage estimation, the dual solve and the fits of pi^u, the meta-policy's TRPO step;
for TRPO the conjugate gradient, the line search and the critic regression) are timed separately by
wrapping each model's ``collect_rollouts``.

The limit is out of reach by default (``--cost-limit 1e9``): every meta-iteration takes the full path and
the dual solve of A^s stops at u = 0 after one fit of pi^u. With an active constraint the bisection fits
pi^u up to ``n_dual_steps`` times per task; the script prints the mean number of fits.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from sb3_contrib import TRPO
from stable_baselines3.common.env_util import make_vec_env

import sb3_safemeta.envs  # noqa: F401  (registers the task families)
from sb3_safemeta import SafeMetaDual
from sb3_safemeta.common.callbacks import MetaIterationCallback
from sb3_safemeta.safe_meta_dual import safe_meta_dual as safe_meta_dual_module


class Stopwatch:
    """Total time spent inside the wrapped callables since the last ``reset``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def reset(self) -> None:
        self.seconds = 0.0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


class OneMetaIteration(MetaIterationCallback):
    """Stops ``learn`` after exactly one meta-iteration, whatever its number of environment steps."""

    def _on_meta_iteration_end(self) -> bool:
        return False


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeMetaPointNav-v0", help="registered task-family id")
    parser.add_argument("--meta-batch-size", type=int, default=10, help="tasks per meta-iteration")
    parser.add_argument("--n-envs", type=int, default=8, help="parallel environments (DummyVecEnv)")
    parser.add_argument("--n-steps", type=int, default=200, help="steps per environment per SafeMetaDual rollout")
    parser.add_argument("--cost-limit", type=float, default=1e9, help="cost limit d of SafeMetaDual")
    parser.add_argument(
        "--trpo-n-critic-updates", type=int, default=10, help="TRPO's critic epochs per update (sb3-contrib default: 10)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (both algorithms)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    th.set_num_threads(args.threads)
    steps = args.meta_batch_size * 2 * args.n_steps * args.n_envs
    trpo_n_steps = steps // args.n_envs

    meta = SafeMetaDual(
        "MlpPolicy",
        make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed),
        cost_limit=args.cost_limit,
        meta_batch_size=args.meta_batch_size,
        n_steps=args.n_steps,
        seed=args.seed,
    )
    trpo = TRPO(
        "MlpPolicy",
        make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed),
        n_steps=trpo_n_steps,
        n_critic_updates=args.trpo_n_critic_updates,
        seed=args.seed,
    )
    for name, model in (("SafeMetaDual", meta), ("TRPO", trpo)):
        policy = model.policy
        print(f"{name:>12}: {type(policy).__name__}, net_arch {policy.net_arch}, {policy.activation_fn.__name__}")
    print(
        f"TRPO: sb3-contrib defaults but n_steps; critic: {trpo.n_critic_updates} epochs of minibatches of {trpo.batch_size}; "
        f"SafeMetaDual: advantage_estimator={meta.advantage_estimator!r}, cost_limit={args.cost_limit:g}"
    )

    clocks = {"SafeMetaDual": Stopwatch(), "TRPO": Stopwatch()}
    meta.collect_rollouts = clocks["SafeMetaDual"].wrap(meta.collect_rollouts)  # type: ignore[method-assign]
    cost_steps, dual_iterations = [], []
    cost_step = meta._cost_step

    def counting_cost_step(*step_args: Any) -> Any:
        cost_steps.append(1)
        return cost_step(*step_args)

    meta._cost_step = counting_cost_step  # type: ignore[method-assign,assignment]
    adapt_on_rollout = safe_meta_dual_module.adapt_on_rollout

    def counting_adapt_on_rollout(*adapt_args: Any, **adapt_kwargs: Any) -> Any:
        result = adapt_on_rollout(*adapt_args, **adapt_kwargs)
        dual_iterations.append(result.n_dual_iterations)
        return result

    safe_meta_dual_module.adapt_on_rollout = counting_adapt_on_rollout  # type: ignore[assignment]
    trpo.collect_rollouts = clocks["TRPO"].wrap(trpo.collect_rollouts)  # type: ignore[method-assign]
    runs = {
        "SafeMetaDual": lambda: meta.learn(100 * steps, reset_num_timesteps=False, callback=OneMetaIteration()),
        "TRPO": lambda: trpo.learn(steps, reset_num_timesteps=False),
    }
    totals: dict[str, list[float]] = {name: [] for name in runs}
    collection: dict[str, list[float]] = {name: [] for name in runs}
    print(
        f"env {args.env}, {steps} environment steps per meta-iteration / TRPO update "
        f"({args.meta_batch_size} tasks x 2 rollouts x {args.n_steps} steps x {args.n_envs} envs; "
        f"TRPO n_steps={trpo_n_steps}), "
        f"torch threads {th.get_num_threads()}, cpu count {os.cpu_count()}, {platform.python_version()}, "
        f"torch {th.__version__}, {datetime.datetime.now().isoformat(timespec='seconds')}"
    )
    meta_steps: list[int] = []
    for round_index in range(args.repeats + 1):
        for name, run in runs.items():
            clocks[name].reset()
            steps_before = meta.num_timesteps
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            if round_index > 0:  # round 0 warms up (allocations, first calls)
                totals[name].append(elapsed)
                collection[name].append(clocks[name].seconds)
                if name == "SafeMetaDual":
                    meta_steps.append(meta.num_timesteps - steps_before)
        if round_index > 0:
            print(
                f"round {round_index}: SafeMetaDual {totals['SafeMetaDual'][-1]:7.2f} s, {meta_steps[-1]} steps "
                f"(collection {collection['SafeMetaDual'][-1]:6.2f} s), TRPO {totals['TRPO'][-1]:7.2f} s "
                f"(collection {collection['TRPO'][-1]:6.2f} s)"
            )

    compute = {name: np.subtract(totals[name], collection[name]).tolist() for name in runs}
    print()
    print(f"{'':>24} {'SafeMetaDual':>13} {'TRPO':>9} {'ratio':>7}")
    for label, values in (("total, median", totals), ("collection, median", collection), ("compute, median", compute)):
        meta_value, trpo_value = statistics.median(values["SafeMetaDual"]), statistics.median(values["TRPO"])
        print(f"{label:>24} {meta_value:>12.2f}s {trpo_value:>8.2f}s {meta_value / trpo_value:>7.2f}")
    for label, values in (("total, best round", totals), ("compute, best round", compute)):
        meta_value, trpo_value = min(values["SafeMetaDual"]), min(values["TRPO"])
        print(f"{label:>24} {meta_value:>12.2f}s {trpo_value:>8.2f}s {meta_value / trpo_value:>7.2f}")
    print(
        f"meta-iterations: {meta.meta_iterations} ({len(cost_steps)} took the cost step), "
        f"TRPO updates: {trpo._n_updates}; environment steps: {meta.num_timesteps} and {trpo.num_timesteps}"
    )
    print(f"A^s steps: {len(dual_iterations)}, dual iterations (fits of pi^u) per step: mean {np.mean(dual_iterations):.1f}")


if __name__ == "__main__":
    main()
