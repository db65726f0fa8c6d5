"""
Evaluation with costs:

- :func:`evaluate_policy_cost`: SB3's ``evaluate_policy`` that also sums ``info["cost"]`` per episode;
- :class:`MetaTestReport`: the anytime-safety report of meta-test (Section 5.1; Figure 1, columns 3-4 of
  the paper): for each adaptation step k = 0..K, the average episode reward over tasks and the MAXIMUM
  episode cost over tasks against the limit d. "Anytime safety" means every explored policy, pi_[0]
  included, is within d. Each policy is judged twice: by the mean of its own training rollout (the few
  episodes the adaptation step was computed from, what the algorithm sees) and, when ``n_eval_episodes > 0``,
  by that many independent episodes of the stochastic policy (a measurement of its expected cost, which a
  rollout of a handful of episodes misses when costs are rare). With an episode cost range R, the independent
  episodes also give a DKW upper confidence bound (``cost_confidence``): "certified within d" then holds
  for each policy with that probability.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.type_aliases import PolicyPredictor
from stable_baselines3.common.vec_env import VecEnv

from sb3_safemeta.common.run_dir import atomic_path, atomic_write_text

__all__ = ["MetaTestReport", "evaluate_policy_cost", "make_evaluation_env"]


def evaluate_policy_cost(
    model: PolicyPredictor, env: VecEnv, n_eval_episodes: int = 10, n_costs: int = 1, deterministic: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """
    Run ``n_eval_episodes`` episodes with SB3's ``evaluate_policy`` (the same episodes, split evenly over the
    environments so that short episodes are not over-represented) and sum ``info["cost"]`` over each.

    :param model: anything with SB3's ``predict`` (an algorithm or a policy)
    :param env: a VecEnv reporting ``info["cost"]`` (a float or ``n_costs`` values) at every step
    :param n_eval_episodes: number of episodes
    :param n_costs: number of cost channels p
    :param deterministic: act with the mode of the policy (``False`` evaluates the exploring policy itself,
        the one anytime safety is about)
    :return: episode returns (n_eval_episodes,) and episode costs (n_eval_episodes, p), undiscounted
    """
    running = np.zeros((env.num_envs, n_costs))
    episode_costs: list[np.ndarray] = []

    def add_cost(local: dict[str, Any], _: dict[str, Any]) -> None:
        # evaluate_policy calls this for every env still counting episodes, before it records a finished one
        index, info = local["i"], local["info"]
        if "cost" not in info:
            raise ValueError(f"environment {index} did not report info['cost']; evaluate_policy_cost needs it at every step")
        running[index] += np.broadcast_to(np.asarray(info["cost"], dtype=np.float64), (n_costs,))
        # the test evaluate_policy applies: under a Monitor, a "done" without "episode" (a lost life) does not end it
        if local["done"] and (not local["is_monitor_wrapped"] or "episode" in info):
            episode_costs.append(running[index].copy())
            running[index] = 0.0

    returns, _ = evaluate_policy(
        model, env, n_eval_episodes, deterministic=deterministic, return_episode_rewards=True, callback=add_cost, warn=False
    )
    return np.asarray(returns, dtype=np.float64), np.asarray(episode_costs).reshape(len(episode_costs), n_costs)


def make_evaluation_env(env: VecEnv, seed: int) -> VecEnv:
    """
    A separate VecEnv of the same registered environment (same id, kwargs and time limit), for measuring
    policies by independent episodes without disturbing the episodes under way in ``env``.

    :param env: a VecEnv whose environments were made from a registered id (``gymnasium.make``)
    :param seed: seed of the new environments
    :return: a DummyVecEnv of ``min(env.num_envs, 4)`` environments, each wrapped in a Monitor
    """
    from stable_baselines3.common.env_util import make_vec_env

    spec = env.get_attr("spec", indices=[0])[0]
    if spec is None:
        raise ValueError("the environment was not made from a registered id: pass eval_env (a VecEnv of the same task family)")
    # the registered id with its kwargs and time limit (the spec's record of the Monitor cannot be replayed)
    return make_vec_env(
        lambda: gym.make(spec.id, max_episode_steps=spec.max_episode_steps, **spec.kwargs),
        n_envs=min(env.num_envs, 4),
        seed=seed,
    )


def independent_episodes(model: Any, n_eval_episodes: int) -> dict[str, Any]:
    """
    :return: the ``meta_test`` argument asking ``model`` for ``n_eval_episodes`` independent episodes per explored
        policy, or nothing when its ``meta_test`` has no such parameter (an algorithm of another package)
    """
    return {"n_eval_episodes": n_eval_episodes} if "n_eval_episodes" in inspect.signature(model.meta_test).parameters else {}


@dataclass
class MetaTestReport:
    """
    Episode returns and costs of every policy pi_[k] of every test task.

    :param returns: (n_tasks, n_steps + 1) mean episode return of pi_[k] on each task
    :param costs: (n_tasks, n_steps + 1, p) mean episode cost of pi_[k] on each task
    :param cost_limits: (n_tasks, p) the limit d of each task
    :param tasks: the test tasks
    :param label: a name for tables and plots
    :param eval_returns: (n_tasks, n_steps + 1) mean return of pi_[k] on ``n_eval_episodes`` independent
        episodes (None: not measured)
    :param eval_costs: (n_tasks, n_steps + 1, p) mean episode cost of pi_[k] on those episodes
    :param eval_cost_bounds: (n_tasks, n_steps + 1, p) upper confidence bound of the expected episode cost of
        pi_[k] at ``cost_confidence`` from those episodes (None: no episode cost range was given)
    :param n_eval_episodes: independent episodes per policy (0: none)
    :param cost_confidence: confidence level of ``eval_cost_bounds``
    :param eval_seconds: time spent on those independent episodes (wall time in-process, summed over the workers
        with ``n_workers``): part of the meta-test's time but not of the adaptation's; subtract it to time the
        algorithm
    :param adapt_seconds: wall time of the adaptation steps alone, summed over tasks and steps: the time from one
        rollout of a chain to the next, less that rollout's collection (environment steps and the policy's actions)
        and the independent episodes; what remains is the algorithm's own computation (advantages, the step, the
        critic refits). Figure 2's "adaptation step without rollouts" is ``adapt_seconds / (n_tasks * K)``
    """

    returns: np.ndarray
    costs: np.ndarray
    cost_limits: np.ndarray
    tasks: list[dict[str, Any]] = field(default_factory=list)
    label: str = "SafeMetaDual"
    eval_returns: np.ndarray | None = None
    eval_costs: np.ndarray | None = None
    eval_cost_bounds: np.ndarray | None = None
    n_eval_episodes: int = 0
    cost_confidence: float | None = None
    eval_seconds: float = 0.0
    adapt_seconds: float = 0.0

    @property
    def n_tasks(self) -> int:
        return self.returns.shape[0]

    @property
    def n_steps(self) -> int:
        """:return: K, the number of adaptation steps (K + 1 policies per task)"""
        return self.returns.shape[1] - 1

    @property
    def violations(self) -> np.ndarray:
        """:return: (n_tasks, K + 1) bool, True where some channel's episode cost exceeds d"""
        return np.any(self.costs > self.cost_limits[:, None, :] + 1e-9, axis=-1)

    @property
    def safe_fraction(self) -> float:
        """:return: fraction of all explored policies (tasks x steps) within the limit, by their own rollouts"""
        return float(1.0 - self.violations.mean())

    @property
    def eval_violations(self) -> np.ndarray | None:
        """:return: (n_tasks, K + 1) bool, True where the mean cost over the independent episodes exceeds d"""
        if self.eval_costs is None:
            return None
        return np.any(self.eval_costs > self.cost_limits[:, None, :] + 1e-9, axis=-1)

    @property
    def eval_safe_fraction(self) -> float | None:
        """:return: fraction of explored policies within the limit by the independent episodes (None: not measured)"""
        violations = self.eval_violations
        return None if violations is None else float(1.0 - violations.mean())

    @property
    def certified_fraction(self) -> float | None:
        """:return: fraction of explored policies whose upper confidence bound is within d (None: no bound)"""
        if self.eval_cost_bounds is None:
            return None
        return float(np.mean(np.all(self.eval_cost_bounds <= self.cost_limits[:, None, :] + 1e-9, axis=-1)))

    def rows(self) -> list[dict[str, float]]:
        """:return: one row per adaptation step k"""
        rows = []
        for k in range(self.n_steps + 1):
            rows.append(
                {
                    "step": k,
                    "mean_return": float(self.returns[:, k].mean()),
                    "max_cost": float(self.costs[:, k, 0].max()),
                    "mean_cost": float(self.costs[:, k, 0].mean()),
                    "cost_limit": float(self.cost_limits[:, 0].min()),
                    "violations": int(self.violations[:, k].sum()),
                }
            )
            if self.eval_costs is not None and self.eval_returns is not None:
                eval_violations = self.eval_violations
                assert eval_violations is not None
                rows[-1].update(
                    {
                        "eval_mean_return": float(self.eval_returns[:, k].mean()),
                        "eval_max_cost": float(self.eval_costs[:, k, 0].max()),
                        "eval_mean_cost": float(self.eval_costs[:, k, 0].mean()),
                        "eval_violations": int(eval_violations[:, k].sum()),
                    }
                )
            if self.eval_cost_bounds is not None:
                certified = np.all(self.eval_cost_bounds[:, k] <= self.cost_limits + 1e-9, axis=-1)
                rows[-1]["certified"] = int(certified.sum())
        return rows

    def table(self) -> str:
        """:return: the anytime-safety table as text (cost channel 0; every channel counts in violations)"""
        evaluated = self.eval_costs is not None
        header = f"{'k':>3} {'mean return':>12} {'max cost':>9} {'mean cost':>9} {'d':>7} {'violations':>10}"
        if evaluated:
            header += f" | {'eval return':>11} {'eval max':>9} {'eval mean':>9} {'eval viol.':>10}"
        lines = [f"Anytime safety ({self.label}): {self.n_tasks} test tasks, {self.n_steps} adaptation steps", header]
        for row in self.rows():
            line = (
                f"{row['step']:>3} {row['mean_return']:>12.2f} {row['max_cost']:>9.2f} {row['mean_cost']:>9.2f} "
                f"{row['cost_limit']:>7.2f} {row['violations']:>7}/{self.n_tasks}"
            )
            if evaluated:
                line += (
                    f" | {row['eval_mean_return']:>11.2f} {row['eval_max_cost']:>9.2f} {row['eval_mean_cost']:>9.2f}"
                    f" {row['eval_violations']:>7}/{self.n_tasks}"
                )
            lines.append(line)
        lines.append(f"policies within the limit by their own rollouts: {self.safe_fraction:.1%} of {self.violations.size}")
        if self.eval_safe_fraction is not None:
            lines.append(
                f"policies within the limit by {self.n_eval_episodes} independent episodes each: "
                f"{self.eval_safe_fraction:.1%} of {self.violations.size}"
            )
        if self.certified_fraction is not None:
            lines.append(
                f"policies certified within the limit at confidence {self.cost_confidence} (DKW bound): "
                f"{self.certified_fraction:.1%} of {self.violations.size}"
            )
        return "\n".join(lines)

    def save(self, path: str | pathlib.Path) -> None:
        """
        Write ``<path>.csv`` (the table) and ``<path>.json`` (everything, per task).

        :param path: path without extension
        """
        path = pathlib.Path(path)
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=list(self.rows()[0]))
        writer.writeheader()
        writer.writerows(self.rows())
        # each file is written under a temporary name and renamed (sb3_safemeta.common.run_dir): never half-written
        atomic_write_text(path.with_suffix(".csv"), table.getvalue())
        payload = {
            "label": self.label,
            "returns": self.returns.tolist(),
            "costs": self.costs.tolist(),
            "cost_limits": self.cost_limits.tolist(),
            "tasks": self.tasks,
            "safe_fraction": self.safe_fraction,
            "n_eval_episodes": self.n_eval_episodes,
            "eval_seconds": self.eval_seconds,
            "adapt_seconds": self.adapt_seconds,
            "cost_confidence": self.cost_confidence,
        }
        for name in ("eval_returns", "eval_costs", "eval_cost_bounds"):
            value = getattr(self, name)
            payload[name] = None if value is None else value.tolist()
        if self.eval_safe_fraction is not None:
            payload["eval_safe_fraction"] = self.eval_safe_fraction
        if self.certified_fraction is not None:
            payload["certified_fraction"] = self.certified_fraction
        atomic_write_text(path.with_suffix(".json"), json.dumps(payload, indent=1))

    @classmethod
    def load(cls, path: str | pathlib.Path) -> MetaTestReport:
        """:param path: a ``.json`` written by :meth:`save` (extension optional)"""
        payload = json.loads(pathlib.Path(path).with_suffix(".json").read_text())

        def optional(name: str) -> np.ndarray | None:
            return None if payload.get(name) is None else np.asarray(payload[name])

        return cls(
            returns=np.asarray(payload["returns"]),
            costs=np.asarray(payload["costs"]),
            cost_limits=np.asarray(payload["cost_limits"]),
            tasks=payload["tasks"],
            label=payload["label"],
            eval_returns=optional("eval_returns"),
            eval_costs=optional("eval_costs"),
            eval_cost_bounds=optional("eval_cost_bounds"),
            n_eval_episodes=int(payload.get("n_eval_episodes", 0)),
            eval_seconds=float(payload.get("eval_seconds", 0.0)),
            adapt_seconds=float(payload.get("adapt_seconds", 0.0)),
            cost_confidence=payload.get("cost_confidence"),
        )

    def plot(self, path: str | pathlib.Path, others: list[MetaTestReport] | None = None) -> None:
        """
        The two panels of Figure 1 (meta-test): average return and maximum cost over tasks per
        adaptation step, with the limit d dashed; other reports (baselines) on the same axes.

        :param path: image file (e.g. ``.png``)
        :param others: more reports to draw
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6))
        for report in [self, *(others or [])]:
            steps = np.arange(report.n_steps + 1)
            mean, spread = report.returns.mean(axis=0), report.returns.std(axis=0)
            (line,) = left.plot(steps, mean, label=report.label)
            left.fill_between(steps, mean - spread, mean + spread, alpha=0.2, color=line.get_color())
            right.plot(steps, report.costs[:, :, 0].max(axis=0), label=report.label, color=line.get_color())
            if report.eval_costs is not None:
                right.plot(
                    steps,
                    report.eval_costs[:, :, 0].max(axis=0),
                    label=f"{report.label}, {report.n_eval_episodes} independent episodes",
                    color=line.get_color(),
                    linestyle=":",
                )
        right.axhline(float(self.cost_limits[:, 0].min()), color="black", linestyle="--", label="cost limit d")
        left.set(xlabel="adaptation step k", ylabel="average episode return", title="Meta-test: reward")
        right.set(xlabel="adaptation step k", ylabel="maximum episode cost", title="Meta-test: max cost over tasks")
        for axis in (left, right):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_ylim(bottom=0.0)
        # one legend for both panels, below them: inside the cost panel it hid the curves
        handles, labels = right.get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=2, fontsize="small", frameon=False)
        rows = (len(labels) + 1) // 2
        figure.tight_layout(rect=(0.0, 0.045 * rows + 0.02, 1.0, 1.0))
        try:
            with atomic_path(path) as temporary:
                figure.savefig(temporary, dpi=120, format=pathlib.Path(path).suffix.lstrip(".") or "png")
        finally:
            plt.close(figure)
