"""
Calibration of lambda (= lambda_c, Appendix D.2) per scenario in our units: the KL divergence of ONE adaptation step
A^s from the untrained policy, on a paper-size batch (Appendix D.2: 40 rollouts x 200 steps locomotion, 10 x 500
navigation), should be close to 0.03 (Appendix D.4: "we set lambda = lambda_c and tune them such that the KL
divergence of the initial policy pi and the adapted policy pi' ... is close to 0.03").

Our A^s divides the reward advantages by their standard deviation (``adapt_on_rollout``), so Table 2's values, tuned
in the paper's own units, do not give that KL here. For each scenario this script collects one paper-size rollout
of the untrained policy (the yml's ``policy_kwargs``) per seed, then runs A^s on it for several lambda (from the
same policy each time), with the constraint inactive (d = 1e9: the KL a given lambda allows, not a
recovery step), and reports the mean KL over seeds:

    python benchmarks/calibrate_lambda.py                                  # every scenario, Table 2 value and a search
    python benchmarks/calibrate_lambda.py --envs SafeMetaHopperVel-v0 --lambdas 1 3 5   # given values only

The search starts from Table 2's lambda and takes secant steps on log KL against log lambda (KL is close to
proportional to lambda^-2) until the KL is within 15% of the target. The table it prints is the one of
docs/guide/scenarios.md ("lambda calibration").
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

import sb3_safemeta.envs  # noqa: F401
from sb3_safemeta.common.hyperparams import load_hyperparams
from sb3_safemeta.safe_adapter import SafeAdapter

# Table 2 of the paper: lambda = lambda_c
TABLE2 = {
    "SafeMetaHalfCheetahVel-v0": 1.0,
    "SafeMetaHumanoidDir-v0": 5.0,
    "SafeMetaHopperVel-v0": 1.0,
    "SafeMetaSwimmerNoise-v0": 0.2,
    "SafeMetaPointCircle-v0": 0.5,
    "SafeMetaCarCircleHazard-v0": 0.5,
    "SafeMetaPointButton-v0": 0.5,
}
NAVIGATION = ("SafeMetaPointCircle-v0", "SafeMetaCarCircleHazard-v0", "SafeMetaPointButton-v0")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(TABLE2))
    parser.add_argument("--seeds", type=int, default=2, help="rollouts (untrained policies) per scenario")
    parser.add_argument("--target", type=float, default=0.03, help="target KL of one step")
    parser.add_argument("--lambdas", nargs="+", type=float, default=None, help="measure these values only (no search)")
    parser.add_argument("--fit-scope", default="actor", choices=["actor", "head"], help="SafeAdapter fit_scope")
    parser.add_argument("--max-evaluations", type=int, default=5, help="lambda values tried per scenario in the search")
    return parser.parse_args()


class Scenario:
    """The paper-size rollouts of the untrained policy on one scenario, and A^s on them for a given lambda."""

    def __init__(self, env_id: str, seeds: int, fit_scope: str = "actor") -> None:
        n_envs, n_steps = (10, 500) if env_id in NAVIGATION else (8, 1000)
        policy_kwargs = load_hyperparams("safemeta", env_id).get("policy_kwargs")
        self.adapters: list[tuple[SafeAdapter, dict, object]] = []
        for seed in range(seeds):
            env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
            adapter = SafeAdapter(
                "MlpPolicy",
                env,
                cost_limit=1e9,
                n_steps=n_steps,
                advantage_estimator="mc",
                fit_scope=fit_scope,
                policy_kwargs=policy_kwargs,
                seed=seed,
                device="cpu",
            )
            rollout = next(iter(adapter.adaptation_chain(0)))
            state = {key: value.clone() for key, value in adapter.policy.state_dict().items()}
            self.adapters.append((adapter, state, rollout))

    def kl(self, lambda_: float) -> float:
        values = []
        for adapter, state, rollout in self.adapters:
            adapter.policy.load_state_dict(state)
            adapter.lambda_, adapter.lambda_c = lambda_, lambda_
            adapter.dual_multipliers = np.zeros(adapter.n_costs)
            values.append(adapter.adapt(rollout).kl)  # type: ignore[arg-type]
        return float(np.mean(values))


def main() -> None:
    args = parse_args()
    th.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    for env_id in args.envs:
        start = time.time()
        scenario = Scenario(env_id, args.seeds, args.fit_scope)
        table2 = TABLE2[env_id]
        measured: dict[float, float] = {}
        for value in args.lambdas or [table2]:
            measured[value] = scenario.kl(value)
        if args.lambdas is None:
            lambda_ = table2 * math.sqrt(measured[table2] / args.target)  # KL ~ lambda^-2
            for _ in range(args.max_evaluations - 1):
                lambda_ = float(f"{lambda_:.2g}")
                if lambda_ in measured:
                    break
                measured[lambda_] = scenario.kl(lambda_)
                if abs(measured[lambda_] / args.target - 1) < 0.15:
                    break
                # secant on (log lambda, log KL) through the two closest points
                points = sorted(measured.items(), key=lambda item: abs(math.log(item[1] / args.target)))[:2]
                (l1, k1), (l2, k2) = points
                slope = (math.log(k2) - math.log(k1)) / (math.log(l2) - math.log(l1)) if l1 != l2 else -2.0
                slope = slope if slope < -0.2 else -2.0
                lambda_ = math.exp(math.log(l1) + (math.log(args.target) - math.log(k1)) / slope)
        best = min(measured, key=lambda value: abs(math.log(measured[value] / args.target)))
        rows.append((env_id, table2, measured.get(table2, float("nan")), best, measured[best]))
        tried = ", ".join(f"{value:g}: {kl:.4f}" for value, kl in sorted(measured.items()))
        print(f"{env_id}: KL of one step per lambda {{{tried}}} ({time.time() - start:.0f} s)", flush=True)
    print(f"\ntarget KL {args.target}, {args.seeds} seeds, fit_scope {args.fit_scope}")
    print("| scenario | Table 2 lambda | KL at Table 2 | our lambda | KL at ours |")
    print("|---|---|---|---|---|")
    for env_id, table2, kl_table2, best, kl_best in rows:
        print(f"| {env_id} | {table2:g} | {kl_table2:.3f} | {best:g} | {kl_best:.3f} |")


if __name__ == "__main__":
    main()
