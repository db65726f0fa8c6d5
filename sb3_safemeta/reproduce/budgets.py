"""
Budgets of the reproduction: how many meta-iterations, tasks and environment steps a run uses.

``paper`` is Appendix D.2: 300 meta-iterations of 10 tasks; per adaptation step 40 rollouts of 200 steps
(locomotion) or 10 of 500 (navigation); KL bound 1e-3 of the meta-policy's TRPO step (from the yml); meta-test on
20 tasks with 20 adaptation steps. ``small`` is the largest budget whose figure 1 (2 scenarios x 4 algorithms x
2 seeds) takes about 2 hours on 2 CPU cores (docs/results.md gives the measured time). ``smoke`` is seconds, for
CI: it checks the plumbing, not the method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BUDGETS", "Budget", "family_of"]

NAVIGATION = ("SafeMetaPointCircle-v0", "SafeMetaCarCircleHazard-v0", "SafeMetaPointButton-v0")


def family_of(env_id: str) -> str:
    """:return: ``"navigation"`` (Safety-Gymnasium, horizon 500) or ``"locomotion"`` (MuJoCo, horizon 200; PointNav too)"""
    return "navigation" if env_id in NAVIGATION else "locomotion"


@dataclass(frozen=True)
class Budget:
    """
    :param name: the ``--budget`` name
    :param meta_iterations: meta-iterations of meta-training
    :param meta_batch_size: tasks per meta-iteration
    :param rollouts: per family, (number of parallel environments, steps per environment) of one rollout, i.e.
        one adaptation step's data: n_envs x n_steps environment steps
    :param eval_freq: meta-iterations between two validations (meta-training curve)
    :param n_val_tasks: validation tasks
    :param n_test_tasks: meta-test tasks
    :param n_adapt_steps: adaptation steps per meta-test task
    :param horizon: per family, the episode length (None: the scenario's registered horizon, the paper's)
    :param target_kl: the KL bound of every algorithm's meta-policy step (None: the yml's, the paper's 1e-3). A
        budget with 5 times fewer meta-iterations than the paper's needs a larger one to move the meta-policy as far
    :param n_eval_episodes: independent episodes of every policy explored at meta-test (besides its rollout), for
        the algorithms whose ``meta_test`` runs them (SafeMetaDual): "within d" measured on episodes the step was
        not fitted on; their time is not counted as meta-test time
    """

    name: str
    meta_iterations: int
    meta_batch_size: int
    rollouts: dict[str, tuple[int, int]]
    eval_freq: int
    n_val_tasks: int
    n_test_tasks: int
    n_adapt_steps: int
    horizon: dict[str, int | None]
    target_kl: float | None = None
    n_eval_episodes: int = 20

    def __post_init__(self) -> None:
        if self.meta_iterations % self.eval_freq != 0:
            raise ValueError(f"meta_iterations ({self.meta_iterations}) must be a multiple of eval_freq ({self.eval_freq})")

    def n_envs(self, env_id: str) -> int:
        return self.rollouts[family_of(env_id)][0]

    def n_steps(self, env_id: str) -> int:
        return self.rollouts[family_of(env_id)][1]

    def max_episode_steps(self, env_id: str) -> int | None:
        return self.horizon[family_of(env_id)]

    def env_steps(self, env_id: str) -> int:
        """
        :return: the environment steps of one run at most: 2 rollouts per task per meta-iteration, 2 per validation
            task per validation, K + 1 per test task
        """
        rollout = self.n_envs(env_id) * self.n_steps(env_id)
        validations = self.meta_iterations // self.eval_freq + 1
        return rollout * (
            2 * self.meta_batch_size * self.meta_iterations
            + 2 * self.n_val_tasks * validations
            + (self.n_adapt_steps + 1) * self.n_test_tasks
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


BUDGETS: dict[str, Budget] = {
    # Appendix D.2
    "paper": Budget(
        name="paper",
        meta_iterations=300,
        meta_batch_size=10,
        rollouts={"locomotion": (8, 1000), "navigation": (10, 500)},
        eval_freq=10,
        n_val_tasks=10,
        n_test_tasks=20,
        n_adapt_steps=20,
        horizon={"locomotion": None, "navigation": None},
    ),
    # the paper's horizons; 8 rollouts of 200 steps (locomotion) / 2 of 500 (navigation) per adaptation step
    "small": Budget(
        name="small",
        meta_iterations=60,
        meta_batch_size=5,
        rollouts={"locomotion": (8, 200), "navigation": (2, 500)},
        eval_freq=10,
        n_val_tasks=5,
        n_test_tasks=10,
        n_adapt_steps=10,
        horizon={"locomotion": None, "navigation": None},
        # 5 times fewer meta-iterations than the paper: with its KL bound 1e-3 the meta-policy barely leaves its
        # (infeasible) initialisation on Half-Cheetah (every test task above d at step 0, all four algorithms)
        target_kl=0.01,
    ),
    # plumbing only: short episodes, two tasks, two meta-iterations
    "smoke": Budget(
        name="smoke",
        meta_iterations=2,
        meta_batch_size=2,
        rollouts={"locomotion": (1, 50), "navigation": (1, 50)},
        eval_freq=1,
        n_val_tasks=2,
        n_test_tasks=2,
        n_adapt_steps=2,
        horizon={"locomotion": 50, "navigation": 50},
        n_eval_episodes=2,
    ),
}
