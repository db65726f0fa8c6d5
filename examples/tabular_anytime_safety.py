"""
Anytime safety of the dual-method adaptation on an exact tabular CMDP (Corollary 1).

A chain pi_[k+1] = A^s(pi_[k]) of 20 adaptation steps from a safe start, once with lambda and
lambda_c at the bounds of Proposition 4 (every policy safe, J never decreases) and once with a
small lambda (faster, but the surrogate of problem (1) is a poor model and safety can fail).

    python examples/tabular_anytime_safety.py [--seed 3] [--steps 20] [--png chain.png]

With ``--png`` it also draws J and Jc of both chains against k (docs/_static/tabular_anytime_safety.png).
"""

from __future__ import annotations

import argparse

import numpy as np

from sb3_safemeta.tabular import TabularCMDP, random_cmdp, safe_adapt_exact


def run_chain(
    cmdp: TabularCMDP, start: np.ndarray, lambda_: float, lambda_c: np.ndarray, cost_limit: np.ndarray, steps: int
) -> tuple[list[float], list[float]]:
    """
    Print J and Jc of every policy of the chain against d; stop if a policy becomes unsafe.

    :return: J and Jc (first channel) of pi_[0], pi_[1], ... (the last one unsafe if the chain stopped)
    """
    policy = start
    returns: list[float] = []
    costs: list[float] = []
    print(f"{'k':>3} {'J':>10} {'Jc':>10} {'d':>10}  safe   u*        KL")
    for k in range(steps + 1):
        evaluation = cmdp.evaluate(policy)
        returns.append(float(evaluation.J))
        costs.append(float(evaluation.Jc[0]))
        safe = bool(np.all(evaluation.Jc <= cost_limit + 1e-10))
        line = f"{k:>3} {evaluation.J:>10.5f} {evaluation.Jc[0]:>10.5f} {cost_limit[0]:>10.5f}  {'yes' if safe else 'NO '}"
        if not safe:
            print(line + "  (unsafe: A^s needs a safe start, chain stops)")
            return returns, costs
        if k == steps:
            print(line)
            return returns, costs
        result = safe_adapt_exact(cmdp, policy, lambda_, lambda_c, cost_limit)
        print(line + f"  {result.u[0]:<8.4f}  {result.kl:.2e}")
        policy = result.policy
    return returns, costs


def plot(path: str, chains: dict[str, tuple[list[float], list[float]]], cost_limit: float) -> None:
    """J and Jc of each chain against the adaptation step k, with the limit d; an unsafe policy is marked x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for (label, (returns, costs)), style in zip(chains.items(), ("o-", "s--"), strict=False):
        steps = np.arange(len(returns))
        left.plot(steps, returns, style, markersize=3, label=label)
        right.plot(steps, costs, style, markersize=3, label=label)
        if costs[-1] > cost_limit + 1e-10:
            right.plot(steps[-1], costs[-1], "x", color="red", markersize=10, markeredgewidth=2)
    right.axhline(cost_limit, color="black", linewidth=1, linestyle=":", label="limit d")
    left.set(xlabel="adaptation step k", ylabel="J(pi_[k])", title="return (exact)")
    right.set(xlabel="adaptation step k", ylabel="Jc(pi_[k])", title="cost (exact); x: unsafe, chain stops")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--png", default=None, help="also draw both chains into this PNG file")
    args = parser.parse_args()

    cmdp = random_cmdp(n_states=4, n_actions=3, n_costs=1, gamma=0.5, seed=args.seed, uniform_mix=0.5)
    logits = np.random.default_rng(args.seed).normal(size=(cmdp.n_states, cmdp.n_actions))
    start = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    cost_limit = cmdp.Jc(start)  # start exactly at the limit: the hardest safe start
    lambda_bound, lambda_c_bound = cmdp.anytime_safety_bounds()

    print(f"Random CMDP: S={cmdp.n_states}, A={cmdp.n_actions}, gamma={cmdp.gamma}, d={cost_limit[0]:.5f}")
    print(f"Assumption 2: eta={cmdp.visitation_floor():.4f} (S^v = S, alpha = 1)")
    print(f"\nProposition 4 bounds: lambda={lambda_bound:.1f}, lambda_c={lambda_c_bound[0]:.1f}")
    bounded = run_chain(cmdp, start, lambda_bound, lambda_c_bound, cost_limit, args.steps)
    print("\nSmall lambda = lambda_c = 0.01 (no guarantee)")
    small = run_chain(cmdp, start, 0.01, np.array([0.01]), cost_limit, args.steps)
    if args.png:
        chains = {"lambda, lambda_c at Proposition 4's bounds": bounded, "lambda = lambda_c = 0.01": small}
        plot(args.png, chains, float(cost_limit[0]))


if __name__ == "__main__":
    main()
