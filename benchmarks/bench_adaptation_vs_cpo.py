"""
Figure 2's meta-test claim at equal data: the wall time of ONE adaptation step of SafeMetaDual (A^s, ``SafeAdapter.adapt``)
against one step of meta-CPO (``MetaCPO.adapt``: the CPO step, closed form in the dual of the trust-region QP), both on
the same rollout of the same policy, side by side in one process. The issue's target is a ratio <= 0.5 (the paper
reports about 50% less meta-test time than meta-CPO).

Usage::

    python benchmarks/bench_adaptation_vs_cpo.py                                   # HalfCheetahVel, 40 x 200 steps
    python benchmarks/bench_adaptation_vs_cpo.py --envs SafeMetaPointCircle-v0 --n-envs 10 --n-steps 500 --repeats 3

Each round, per env: collect one rollout (``n_envs x n_steps``) with the current policy (the SafeAdapter's; MetaCPO's
policy gets the same weights, so both adapt the same policy on the same data), then time, from that same policy:
A^s with ``fit_scope="actor"`` (whole actor fitted by L-BFGS at every dual iteration), A^s with ``fit_scope="head"``
(closed-form last layer), A^s with ``fit_scope="hybrid"`` (dual on head fits, one whole-actor fit at its u*), and the
CPO step (KL radius ``inner_kl`` 0.01). Two cost limits: ``scenario`` (the family's d; an untrained
policy often violates it, so both take their recovery step) and ``active`` (d halfway between the rollout's cost and
the cost of the unconstrained A^s step, so that A^s runs its full dual solve: its worst case). The policy then keeps
A^s's actor step (a chain, as at meta-test). Reported: median seconds per step and ratios to CPO's; rollout collection
time for scale. lambda, lambda_c from hyperparams/safemeta.yml.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.save_util import load_from_zip_file

import sb3_safemeta.envs  # noqa: F401
from sb3_safemeta import MetaCPO, SafeAdapter
from sb3_safemeta.common.adaptation.options import AdaptationOptions
from sb3_safemeta.common.hyperparams import load_hyperparams

# A^s configurations timed against the CPO step: label -> (fit_scope, fit_steps) (see AdaptationOptions)
FIT_STEPS = AdaptationOptions.fit_steps  # the default
SCOPES = {
    "head": ("head", FIT_STEPS),
    "hybrid": ("hybrid", FIT_STEPS),
    "hybrid/10": ("hybrid", 10),
    "hybrid/5": ("hybrid", 5),
    "actor": ("actor", FIT_STEPS),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["SafeMetaHalfCheetahVel-v0"])
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--meta-policy",
        default=None,
        help="a SafeMetaDual zip (or reproduce checkpoint.zip) whose policy both start from: the meta-test situation "
        "(default: an untrained policy; one env only)",
    )
    return parser.parse_args()


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    args = parse_args()
    th.set_num_threads(1)
    for env_id in args.envs:
        entry = load_hyperparams("safemeta", env_id)
        env = make_vec_env(env_id, n_envs=args.n_envs, seed=args.seed)
        task = env.env_method("sample_tasks", 1, args.seed, indices=[0])[0][0]
        env.env_method("set_task", task)
        common = dict(n_steps=args.n_steps, seed=args.seed, device="cpu", policy_kwargs=entry.get("policy_kwargs"))
        adapter = SafeAdapter(
            "MlpPolicy", env, lambda_=entry["lambda_"], lambda_c=entry["lambda_c"], advantage_estimator="mc", **common
        )
        cpo = MetaCPO("MlpPolicy", env, inner_kl=0.01, meta_batch_size=1, **common)
        if args.meta_policy is not None:
            _, params, _ = load_from_zip_file(args.meta_policy)
            adapter.policy.load_state_dict(params["policy"])
        _, callback = adapter._setup_learn(total_timesteps=10**9, callback=None)
        callback.on_training_start(locals(), globals())
        times: dict[str, list[float]] = {}
        for round_index in range(args.repeats + 1):
            start = time.perf_counter()
            adapter.start_new_episodes()
            adapter.collect_rollouts(adapter.env, callback, adapter.rollout_buffer, n_rollout_steps=adapter.n_steps)
            rollout = adapter.rollout_data("mc")
            collect = time.perf_counter() - start
            state = {key: value.clone() for key, value in adapter.policy.state_dict().items()}
            scenario_d = np.full(adapter.n_costs, float(entry["cost_limit"]))
            # the unconstrained step's surrogate cost sets the "active" limit (untimed)
            adapter.cost_limit, adapter.fit_scope, adapter.fit_steps = np.full(adapter.n_costs, 1e12), *SCOPES["actor"]
            free = adapter.adapt(rollout).surrogate_cost
            active_d = rollout.episode_cost + 0.5 * np.maximum(free - rollout.episode_cost, 0.0)
            line = [f"round {round_index}: cost {rollout.episode_cost[0]:.1f}, collect {collect:.2f} s"]
            for mode, limit in (("scenario", scenario_d), ("active", active_d)):
                for scope, (fit_scope, fit_steps) in SCOPES.items():
                    adapter.policy.load_state_dict(state)
                    adapter.cost_limit, adapter.fit_scope, adapter.fit_steps = limit, fit_scope, fit_steps
                    adapter.dual_multipliers = np.zeros(adapter.n_costs)
                    seconds, result = timed(adapter.adapt, rollout)
                    times.setdefault(f"A^s {scope}, d {mode}", []).append(seconds)
                    line.append(f"A^s {scope}/{mode} {seconds:.2f} s (fits {result.n_dual_iterations}, KL {result.kl:.3f})")
                cpo.policy.load_state_dict(state)
                data = cpo._inner_data(rollout, cpo.policy, limit)
                seconds, _ = timed(cpo.adapt, cpo.policy, data)
                times.setdefault(f"CPO, d {mode}", []).append(seconds)
                line.append(f"CPO/{mode} {seconds:.2f} s")
            times.setdefault("collect", []).append(collect)
            adapter.policy.load_state_dict(state)  # the chain continues from the A^s actor step on the scenario's d
            adapter.cost_limit, adapter.fit_scope, adapter.fit_steps = scenario_d, *SCOPES["actor"]
            adapter.adapt(rollout)
            if round_index:  # round 0 is a warm-up
                print("; ".join(line), flush=True)
            else:
                times = {key: [] for key in times}
        print(f"\n{env_id}: {args.n_envs} x {args.n_steps} steps per adaptation step, {args.repeats} rounds (median seconds)")
        for mode in ("scenario", "active"):
            cpo_median = statistics.median(times[f"CPO, d {mode}"])
            for scope in SCOPES:
                median = statistics.median(times[f"A^s {scope}, d {mode}"])
                print(
                    f"  d {mode:>8}: A^s {scope:>9} {median:6.2f} s, CPO {cpo_median:6.2f} s, ratio {median / cpo_median:5.2f}"
                )
        print(f"  rollout collection {statistics.median(times['collect']):.2f} s")


if __name__ == "__main__":
    main()
