"""
Cost of the safe adaptation A^s against the cost of collecting its data: wall time of the dual solve
plus the fits of pi^u (``SafeAdapter.adapt``) divided by the wall time of collecting one adaptation
step's data (``collect_rollouts``), for the paper's policy (Gaussian MLP, 2x64 tanh) and 8000
transitions per step (Appendix D.2: 40 rollouts of 200 steps), on several task families side by side.

Usage::

    python benchmarks/bench_safe_adapter.py                                  # PointNav and HalfCheetahVel, 5 rounds
    python benchmarks/bench_safe_adapter.py --envs SafeMetaPointNav-v0 --repeats 3 --profile adapt.prof

Each round, for every env in turn (so that all of them see the same machine load): collect
``n_envs * n_steps`` transitions with the current policy, extract the advantages (``rollout_data``), choose
the cost limit d (``--cost-limit active``, the default: an untimed fit at u = 0 gives the surrogate cost
g(pi^0) of the unconstrained step, and d = Jc + (g(pi^0) - Jc) / 2, halfway between the measured cost and
that, so that the constraint of problem (1) binds and the dual solve runs in full instead of stopping at
u = 0 after one fit; the policy and multipliers are restored after the calibration fit), run one adaptation
step ``adapt`` (dual solve, fits of pi^u, feasibility backtracking) for every ``--fit-scopes`` value from the
same policy and data (``"actor"``: the whole actor fitted by L-BFGS, the default; ``"head"``: the last layer
in closed form; each scope calibrates d with its own unconstrained step), then refit the critics as
``learn()`` does. The policies keep adapting from round to round (a meta-test chain), after one warm-up round.
Reported: median and best of the rounds for collection and adaptation, their ratio, and per round the
number of fits (dual iterations), u*, the KL of the step and the backtracking fraction. Advantage
extraction and critic refit are timed too but are not part of the ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import sb3_safemeta.envs  # noqa: F401  (registers the task families)
from sb3_safemeta import SafeAdapter
from sb3_safemeta.common.adaptation.options import FIT_SCOPES
from sb3_safemeta.common.rollout_data import RolloutData

DEFAULT_ENVS = ("SafeMetaPointNav-v0", "SafeMetaHalfCheetahVel-v0")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS), help="registered task-family ids")
    parser.add_argument("--n-envs", type=int, default=8, help="parallel environments (DummyVecEnv)")
    parser.add_argument("--n-steps", type=int, default=1000, help="steps per environment per adaptation step")
    parser.add_argument(
        "--cost-limit",
        default="active",
        help="'active': d halfway between Jc and the surrogate cost of the unconstrained step (binding), or a number",
    )
    parser.add_argument("--dual-tol", type=float, default=None, help="SafeAdapter dual_tol (default: its default)")
    parser.add_argument("--fit-steps", type=int, default=None, help="SafeAdapter fit_steps (default: its default)")
    parser.add_argument(
        "--fit-scopes",
        nargs="+",
        default=list(FIT_SCOPES),
        choices=FIT_SCOPES,
        help="SafeAdapter fit_scope values timed side by side on the same data (the policy continues from the last)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--profile", default=None, help="write a cProfile of the timed adapt() calls to this file")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def make_adapter(env_id: str, args: argparse.Namespace) -> SafeAdapter:
    """A SafeAdapter with its defaults (2x64 tanh Gaussian policy, dual and fit settings) on one task."""
    env = make_vec_env(env_id, n_envs=args.n_envs, seed=args.seed)
    task = env.env_method("sample_tasks", 1, args.seed, indices=[0])[0][0]
    env.env_method("set_task", task)
    overrides = {
        key: value for key, value in (("dual_tol", args.dual_tol), ("fit_steps", args.fit_steps)) if value is not None
    }
    model = SafeAdapter("MlpPolicy", env, n_steps=args.n_steps, seed=args.seed, **overrides)
    model._setup_learn(total_timesteps=1)
    return model


def active_cost_limit(model: SafeAdapter, rollout: RolloutData) -> np.ndarray:
    """d halfway between Jc(pi_phi) and g(pi^0), from an untimed fit at u = 0; the model is left unchanged."""
    parameters = model.policy.actor_parameters()  # type: ignore[operator]
    phi = parameters_to_vector(parameters).detach().clone()
    multipliers = model.dual_multipliers
    model.cost_limit = np.full(model.n_costs, 1e12)  # u = 0 is optimal: one fit
    unconstrained = model.adapt(rollout).surrogate_cost
    vector_to_parameters(phi, parameters)
    model.dual_multipliers = multipliers
    return rollout.episode_cost + 0.5 * np.maximum(unconstrained - rollout.episode_cost, 0.0)


def one_round(model: SafeAdapter, args: argparse.Namespace, profiler: cProfile.Profile | None) -> dict[str, Any]:
    """Collect, extract, adapt (once per fit scope, from the same start), refit the critics: timed piece by piece."""
    callback = model._init_callback(None)
    start = time.perf_counter()
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)  # type: ignore[arg-type]
    collect = time.perf_counter() - start

    start = time.perf_counter()
    rollout = model.rollout_data(model.advantage_estimator)
    extract = time.perf_counter() - start

    parameters = model.policy.actor_parameters()  # type: ignore[operator]
    phi, multipliers = parameters_to_vector(parameters).detach().clone(), model.dual_multipliers
    per_scope = {}
    for fit_scope in args.fit_scopes:  # the same data and start for every scope
        vector_to_parameters(phi.clone(), parameters)
        model.dual_multipliers, model.fit_scope = multipliers, fit_scope
        model.cost_limit = (  # calibrated with this scope's own unconstrained step, so that it binds
            active_cost_limit(model, rollout)
            if args.cost_limit == "active"
            else np.full(model.n_costs, float(args.cost_limit))
        )
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        result = model.adapt(rollout)
        adapt = time.perf_counter() - start
        if profiler is not None:
            profiler.disable()
        per_scope[fit_scope] = dict(
            adapt=adapt,
            fits=result.n_dual_iterations,
            converged=result.dual_converged,
            u=float(result.u[0]),
            kl=result.kl,
            backtrack=result.backtrack_fraction,
            recovery=result.recovery,
        )

    start = time.perf_counter()
    model.train_critics(model.n_critic_epochs, model.batch_size, model.policy.optimizer)
    critics = time.perf_counter() - start
    return dict(
        collect=collect,
        extract=extract,
        critics=critics,
        samples=len(rollout.advantages),
        episodes=rollout.n_episodes,
        scopes=per_scope,
    )


def main() -> None:
    args = parse_args()
    th.set_num_threads(args.threads)
    models = {env_id: make_adapter(env_id, args) for env_id in args.envs}
    first = next(iter(models.values()))
    print(
        f"{args.n_envs} envs x {args.n_steps} steps = {args.n_envs * args.n_steps} transitions per adaptation step; "
        f"policy {type(first.policy).__name__} net_arch {first.policy.net_arch} {first.policy.activation_fn.__name__}; "
        f"dual_solver={first.dual_solver} n_dual_steps={first.n_dual_steps} fit_steps={first.fit_steps} "
        f"dual_tol={first.dual_tol}; "
        f"cost limit {args.cost_limit}; torch threads {th.get_num_threads()}, cpu count {os.cpu_count()}, "
        f"Python {platform.python_version()}, torch {th.__version__}, {datetime.datetime.now().isoformat(timespec='seconds')}"
    )
    profiler = cProfile.Profile() if args.profile else None
    rounds: dict[str, list[dict[str, Any]]] = {env_id: [] for env_id in models}
    for round_index in range(args.repeats + 1):
        for env_id, model in models.items():
            record = one_round(model, args, profiler if round_index > 0 else None)
            label = "warm-up" if round_index == 0 else f"round {round_index}"
            print(
                f"{env_id:>27} {label:>8}: collect {record['collect']:6.2f} s, extract {record['extract']:.2f} s, "
                f"critics {record['critics']:.2f} s, {record['samples']} samples / {record['episodes']} episodes"
            )
            for fit_scope, step in record["scopes"].items():
                print(
                    f"{'':>37} fit_scope={fit_scope:<5}: adapt {step['adapt']:6.3f} s "
                    f"(ratio {step['adapt'] / record['collect']:.3f}; {step['fits']} fits"
                    f"{'' if step['converged'] else ' (not converged)'}, u {step['u']:.3g}, "
                    f"KL {step['kl']:.4f}, backtrack {step['backtrack']:.2f}{', recovery' if step['recovery'] else ''})"
                )
            if round_index > 0:
                rounds[env_id].append(record)

    print("\nsummary (timed rounds; ratio = adapt / collect, goal <= 0.10)")
    for env_id, records in rounds.items():
        collect = [record["collect"] for record in records]
        print(f"{env_id:>27}: collect median {statistics.median(collect):.2f} s (best {min(collect):.2f})")
        for fit_scope in args.fit_scopes:
            adapt = [record["scopes"][fit_scope]["adapt"] for record in records]
            ratios = [record["scopes"][fit_scope]["adapt"] / record["collect"] for record in records]
            fits = [record["scopes"][fit_scope]["fits"] for record in records]
            print(
                f"{'':>27}  fit_scope={fit_scope:<5}: adapt median {statistics.median(adapt):.3f} s "
                f"(best {min(adapt):.3f}), ratio of medians {statistics.median(adapt) / statistics.median(collect):.3f} "
                f"(per-round median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}), "
                f"fits per step median {statistics.median(fits):g}"
            )
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"profile of the timed adapt() calls written to {args.profile}")


if __name__ == "__main__":
    main()
