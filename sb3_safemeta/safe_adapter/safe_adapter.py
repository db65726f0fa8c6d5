"""
SafeAdapter: the safe policy adaptation A^s of "Safe Meta-Reinforcement Learning via Dual-Method-Based Policy
Adaptation: Near-Optimality and Anytime Safety Guarantee" (Section 3.1 and 4.1, Propositions 1-2, Algorithms 1
and 3, Appendix E.2), as an SB3 on-policy algorithm: every iteration of ``learn`` collects a rollout with the
current policy, solves problem (1) by the dual method and moves the policy to the adapted pi^{u*}. Its chain of
steps is the meta-test of Section 5.1 (anytime safety, Corollary 1). Docs: docs/modules/safe_adapter.md.
"""

from __future__ import annotations

import io
import pathlib
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_safemeta.common.adaptation.confidence import min_episodes
from sb3_safemeta.common.adaptation.episodes import steps_for_episodes
from sb3_safemeta.common.adaptation.options import OPTION_NAMES, AdaptationOptions, SafeAdaptationMixin
from sb3_safemeta.common.adaptation.parametric import ParametricAdaptResult, adapt_on_rollout, default_episode_cost_range
from sb3_safemeta.common.on_policy_cost_algorithm import OnPolicyCostAlgorithm
from sb3_safemeta.common.rollout_data import ADVANTAGE_ESTIMATORS, RolloutData
from sb3_safemeta.common.validation import check_int
from sb3_safemeta.safe_adapter.policies import MlpPolicy

SelfSafeAdapter = TypeVar("SelfSafeAdapter", bound="SafeAdapter")


class SafeAdapter(SafeAdaptationMixin, OnPolicyCostAlgorithm):
    """
    Safe policy adaptation by the dual method (A^s), from "Safe Meta-Reinforcement Learning via
    Dual-Method-Based Policy Adaptation: Near-Optimality and Anytime Safety Guarantee"
    (Section 3.1, 4.1; Algorithms 1 and 3; Appendix E.2).

    Each iteration of ``learn()`` is one adaptation step: collect ``n_steps * n_envs`` steps with the
    current policy pi_phi, estimate reward and cost advantages, solve problem (1) by the dual method
    (multipliers u*, closed form pi^u fitted by the actor's parameters), then refit the critics. With
    ``delta_c=0`` and large enough ``lambda_``/``lambda_c`` every policy of the sequence satisfies the
    cost limit (Corollary 1): this is the algorithm that runs at meta-test on a new task, and a
    single-task safe RL algorithm on any environment that reports ``info["cost"]``.

    Units: ``cost_limit`` is the undiscounted cost summed over an episode (Safety-Gymnasium
    convention). The surrogate of each constraint is
    ``Jc_ep(pi_phi) + H * E[ratio * A_c] + lambda_c * E[KL(pi || pi_phi)]`` with ``H`` the mean episode
    length of the rollout, which stands for the paper's 1/(1 - gamma) (see
    :mod:`sb3_safemeta.common.adaptation.parametric`).

    :param policy: the policy model to use (MlpPolicy, or a CostActorCriticPolicy subclass)
    :param env: the environment to learn from (if registered in Gym, can be str); it must report
        ``info["cost"]``
    :param cost_limit: the episode cost limit d, a float or one entry per cost channel
    :param lambda_: KL weight lambda of the objective of problem (1) (> 0); in the units of the
        reward advantages (the paper tunes it so that the KL of a step is about 0.03)
    :param lambda_c: KL weight lambda_c of each constraint (>= 0), float or per channel
    :param delta_c: allowable violation delta of each constraint (>= 0); 0 is strict anytime safety
    :param learning_rate: learning rate of the critics (value and cost-value heads), or a schedule
    :param n_steps: steps per environment per adaptation step
    :param batch_size: minibatch size of the critic regression
    :param n_critic_epochs: epochs of critic regression per adaptation step
    :param gamma: discount factor of the reward advantages
    :param gae_lambda: GAE lambda of the reward advantages
    :param cost_gae_lambda: GAE lambda of the cost advantages (None: same as ``gae_lambda``)
    :param advantage_estimator: ``"gae"`` (learned value and cost-value heads; the default, since a
        single-task learner has the data to fit its critics) or ``"mc"`` (Monte-Carlo returns minus a
        per-rollout linear feature baseline, Algorithms 3-4: no critic needed, used at meta-test where
        the critic has never seen the task)
    :param dual_solver: ``"auto"`` (``"bisection"`` for one cost channel, else ``"newton"``),
        ``"bisection"`` (bracketing regula falsi, one cost channel), ``"newton"`` (projected Newton with a
        finite-difference Hessian of the dual) or ``"pgd"`` (Algorithm 1, fixed step ``beta``)
    :param beta: PGD step size (u <- max(0, u - beta (d + delta - g))); used by ``"pgd"`` only
    :param n_dual_steps: maximum number of dual iterations per adaptation step; each is one fit of pi^u
    :param fit_steps: L-BFGS iterations per fit of pi^u (each fit starts from the current policy)
    :param fit_scope: the parameters that represent pi^u: ``"actor"`` (all of the actor, Appendix E.2),
        ``"head"`` (its last layer on the current features; exact and ~100x faster for Gaussian policies, for
        adapting a meta-trained policy whose features already fit the task family) or ``"hybrid"`` (the dual solved
        on head fits, the step one fit of all of the actor at that u*, with the actor's own dual as the fallback
        where the head's u* violates the actor's surrogate)
    :param backtrack_steps: feasibility backtracking steps after the dual solve (0 disables)
    :param dual_tol: the dual solve stops when the active constraints are within
        ``dual_tol * max(1, cost_limit + delta_c)`` of their bound (relative; far below the sampling error)
    :param normalize_advantage: divide the reward advantages by their standard deviation in A^s, so that lambda
        is relative to the reward scale (the cost advantages are never rescaled)
    :param cost_confidence: the statistical margin of A^s (for rare costs): None constrains the rollout's mean
        episode cost (problem (1) with an estimated Jc); a level 1 - alpha in [0.5, 1) constrains an upper
        confidence bound of Jc(pi_phi) that holds with that probability; a step whose bound violates d while the
        estimate does not keeps the policy (see :mod:`sb3_safemeta.common.adaptation.confidence`)
    :param cost_bound: the bound of the margin: ``"dkw"`` (valid for any episode-cost distribution on [0, R]),
        ``"hoeffding"`` or ``"bootstrap"`` (not valid for rare costs)
    :param episode_cost_range: R, the largest possible episode cost, float or per channel (None: the rollout's
        longest episode x max(1, its largest step cost), the horizon for indicator costs)
    :param lambda_c_rule: None (``lambda_c`` as given) or ``"prop4"``: lambda_c of each step at least Proposition 4's
        4 gamma A_c^max / (eta alpha (1 - gamma)^2), gamma = 1 - 1/H, A_c^max from the rollout (see
        :class:`~sb3_safemeta.common.adaptation.options.AdaptationOptions`)
    :param visitation_constant: eta * alpha of Assumption 2 for ``"prop4"``, in (0, 1]
    :param holdout_fraction: the share of each rollout's episodes held out of the fit of pi^u, on which the step is
        checked, backtracked and (recovery) sized (0 disables; see
        :class:`~sb3_safemeta.common.adaptation.options.AdaptationOptions`)
    :param n_costs: number of cost channels p (None: from the env's ``n_costs`` attribute or ``cost_limit``)
    :param stats_window_size: window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: verbosity level: 0 no output, 1 info messages, 2 debug messages
    :param seed: seed for the pseudo random generators
    :param device: device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}

    def __init__(
        self,
        policy: str | type[MlpPolicy],
        env: GymEnv | str,
        cost_limit: float | list[float] = 25.0,
        lambda_: float = 1.0,
        lambda_c: float | list[float] = 1.0,
        delta_c: float | list[float] = 0.0,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 256,
        n_critic_epochs: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        cost_gae_lambda: float | None = None,
        advantage_estimator: str = "gae",
        dual_solver: str = "auto",
        beta: float = 1.0,
        n_dual_steps: int = 20,
        fit_steps: int = 25,
        fit_scope: str = "actor",
        backtrack_steps: int = 15,
        dual_tol: float = 1e-3,
        normalize_advantage: bool = True,
        cost_confidence: float | None = None,
        cost_bound: str = "dkw",
        episode_cost_range: float | list[float] | None = None,
        lambda_c_rule: str | None = None,
        visitation_constant: float = 1.0,
        holdout_fraction: float = 0.0,
        n_costs: int | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,
            vf_coef=1.0,
            max_grad_norm=0.5,
            use_sde=False,
            sde_sample_freq=-1,
            cost_limit=cost_limit,
            n_costs=n_costs,
            cost_gae_lambda=cost_gae_lambda,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        if advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage_estimator must be one of {ADVANTAGE_ESTIMATORS}, got {advantage_estimator!r}")
        self.batch_size = check_int(batch_size, "batch_size")
        self.n_critic_epochs = check_int(n_critic_epochs, "n_critic_epochs", minimum=0)
        self.advantage_estimator = advantage_estimator
        self._set_adaptation_options(
            AdaptationOptions(
                lambda_=lambda_,
                lambda_c=lambda_c,
                delta_c=delta_c,
                dual_solver=dual_solver,
                beta=beta,
                n_dual_steps=n_dual_steps,
                fit_steps=fit_steps,
                fit_scope=fit_scope,
                backtrack_steps=backtrack_steps,
                dual_tol=dual_tol,
                normalize_advantage=normalize_advantage,
                cost_confidence=cost_confidence,
                cost_bound=cost_bound,
                episode_cost_range=episode_cost_range,
                lambda_c_rule=lambda_c_rule,
                visitation_constant=visitation_constant,
                holdout_fraction=holdout_fraction,
            )
        )
        self._warned_episodes = False  # the episode rule of the margin warns once
        # u* of the last adaptation step (warm start of the next dual solve); saved in the zip
        self.dual_multipliers: np.ndarray | None = None
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        if self.advantage_estimator == "mc":
            # Monte-Carlo returns: GAE with lambda = 1 is the discounted return-to-go, bootstrapped only
            # where the rollout cuts an episode; the baseline is fitted per rollout (rollout_data.py)
            self.gae_lambda = self.cost_gae_lambda = 1.0
        super()._setup_model()
        self.adaptation.check_channels(self.n_costs)  # p is known only now
        if self.dual_multipliers is None or np.shape(self.dual_multipliers) != (self.n_costs,):
            self.dual_multipliers = np.zeros(self.n_costs)  # not when load() restored them

    def adapt(self, rollout: RolloutData) -> ParametricAdaptResult:
        """
        One safe adaptation step A^s of ``self.policy`` from a rollout of it (in place).

        :param rollout: data collected with the current policy
        :return: multipliers u*, eta, surrogate costs and diagnostics
        """
        options = self.adaptation
        if options.cost_confidence is not None and not self._warned_episodes:
            self._warn_too_few_episodes(rollout, options)
        result = adapt_on_rollout(self.policy, rollout, options, self.cost_limit, u0=self.dual_multipliers)
        if not result.recovery and not result.held:
            self.dual_multipliers = result.u  # warm start of the next step's dual
        return result

    def _warn_too_few_episodes(self, rollout: RolloutData, options: AdaptationOptions) -> None:
        """The episode rule of the margin: warn (once) when a rollout without cost could certify no step."""
        assert options.cost_confidence is not None
        cost_range = options.episode_cost_range
        ranges = np.broadcast_to(
            np.asarray(default_episode_cost_range(rollout) if cost_range is None else cost_range, dtype=np.float64),
            (self.n_costs,),
        )
        limits = np.broadcast_to(np.asarray(self.cost_limit, dtype=np.float64), (self.n_costs,))
        needed = max(
            min_episodes(options.cost_confidence, float(r), float(d)) for r, d in zip(ranges, limits, strict=True) if d > 0
        )
        if rollout.n_episodes < needed:
            self._warned_episodes = True
            warnings.warn(
                f"SafeAdapter: {rollout.n_episodes} episodes per adaptation step; with cost_confidence="
                f"{options.cost_confidence} and episode costs up to {float(np.max(ranges)):g}, a rollout that never met"
                f" the hazard certifies no step below {needed} episodes (the bound R sqrt(ln(1/alpha) / 2n) exceeds d),"
                f" so such steps keep the policy: raise n_steps * n_envs to at least {needed} episode lengths.",
                stacklevel=3,
            )

    def train(self) -> None:
        """One adaptation step from the rollout just collected, then a critic refit."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        rollout = self.rollout_data(self.advantage_estimator)
        result = self.adapt(rollout)
        self.train_critics(self.n_critic_epochs, self.batch_size, self.policy.optimizer)
        self._n_updates += 1

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/kl", result.kl)
        self.logger.record("train/eta", result.eta)
        self.logger.record("train/surrogate_objective", result.objective)
        self.logger.record("train/dual_iterations", result.n_dual_iterations)
        self.logger.record("train/dual_converged", int(result.dual_converged))
        self.logger.record("train/backtrack_fraction", result.backtrack_fraction)
        self.logger.record("train/recovery", int(result.recovery))
        self.logger.record("train/held", int(result.held))
        self.logger.record("train/horizon", rollout.horizon)
        for i in range(self.n_costs):
            self.logger.record(f"train/u_{i}", float(result.u[i]))
            self.logger.record(f"train/surrogate_cost_{i}", float(result.surrogate_cost[i]))
            self.logger.record(f"train/episode_cost_{i}", float(rollout.episode_cost[i]))

    def learn(
        self: SelfSafeAdapter,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "SafeAdapter",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSafeAdapter:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def adaptation_chain(self, n_adapt_steps: int) -> Iterator[RolloutData]:
        """
        Meta-test on the env's current task: pi_[0] is the current policy, pi_[k+1] = A^s(pi_[k])
        (Corollary 1). Yields the rollout of every policy pi_[0], ..., pi_[K] (K + 1 rollouts, K steps).

        :param n_adapt_steps: K
        :return: an iterator over the rollouts (episode returns and costs of each pi_[k])
        """
        total = (n_adapt_steps + 1) * self.n_steps * self.n_envs
        _, callback = self._setup_learn(total, None, reset_num_timesteps=True, tb_log_name="adaptation_chain")
        callback.on_training_start(locals(), globals())
        self.start_new_episodes()
        for step in range(n_adapt_steps + 1):
            self.collect_rollouts(self.env, callback, self.rollout_buffer, n_rollout_steps=self.n_steps)  # type: ignore[arg-type]
            rollout = self.rollout_data(self.advantage_estimator)
            yield rollout
            if step < n_adapt_steps:
                self.adapt(rollout)
                if self.advantage_estimator == "gae":
                    self.train_critics(self.n_critic_epochs, self.batch_size, self.policy.optimizer)
        callback.on_training_end()

    @classmethod
    def from_meta(
        cls: type[SelfSafeAdapter],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | str,
        device: th.device | str = "auto",
        **kwargs: Any,
    ) -> SelfSafeAdapter:
        """
        Start a safe adaptation from a saved policy: a SafeMetaDual meta-policy (all its A^s options, its
        ``n_steps``, discount and advantage estimator, then its meta-test settings ``test_adaptation``, are reused
        unless overridden: the adapter is the one its ``meta_test`` builds), a SafeAdapter (the same), or a plain
        SB3 PPO/TRPO ``MlpPolicy`` zip (its ``gamma`` and ``gae_lambda``; the same default network, 2x64 tanh: its
        actor and value weights are loaded, the cost-value heads start fresh).

        :param path: the zip file
        :param env: the task environment (must report ``info["cost"]``)
        :param device: device of the new model
        :param kwargs: SafeAdapter arguments (override the saved ones)
        :return: a SafeAdapter whose policy is the saved one
        """
        data, params, _ = load_from_zip_file(path, device=device)
        if data is None or "policy" not in (params or {}):
            raise ValueError(f"{path!s} is not an SB3 model zip with policy weights")
        # a model of this package (it has lambda_) brings all its A^s options and its rollout size, as its own
        # meta_test uses them; a PPO/TRPO zip brings its discount and GAE lambda only (its normalize_advantage and
        # n_steps are PPO's settings, not A^s ones)
        ours = (*OPTION_NAMES, "n_steps") if "lambda_" in data else ()
        keys = (*ours, "cost_limit", "gamma", "gae_lambda", "advantage_estimator")
        saved: dict[str, Any] = {key: data[key] for key in keys if key in data}
        policy_kwargs = dict(data.get("policy_kwargs") or {})
        policy_kwargs.pop("n_costs", None)
        # a SafeMetaDual's meta-test settings (its ``test_adaptation``) are the adaptation to a new task
        test_adaptation = dict(data.get("test_adaptation") or {})
        episodes_wanted = test_adaptation.pop("min_episodes", None)
        saved.update(test_adaptation)
        saved.update(kwargs)
        saved.setdefault("policy_kwargs", policy_kwargs)
        adapter = cls("MlpPolicy", env, device=device, **saved)
        if episodes_wanted is not None and "n_steps" not in kwargs:
            n_steps = steps_for_episodes(adapter.env, episodes_wanted, adapter.n_steps)  # type: ignore[arg-type]
            if n_steps != adapter.n_steps:  # the rollout buffer's size is set at construction
                adapter = cls("MlpPolicy", adapter.env, device=device, **{**saved, "n_steps": n_steps})  # type: ignore[arg-type]
        hint = "pass the same policy_kwargs (net_arch, activation_fn) as the saved model"
        try:
            missing, unexpected = adapter.policy.load_state_dict(params["policy"], strict=False)  # type: ignore[arg-type]
        except RuntimeError as error:  # shape mismatches raise even with strict=False
            raise ValueError(f"{path!s}: the saved policy does not fit this SafeAdapter's network; {hint}\n{error}") from error
        if unexpected or any(not key.startswith("cost_value_net") for key in missing):
            raise ValueError(
                f"{path!s}: the saved policy does not fit this SafeAdapter's network "
                f"(missing {missing}, unexpected {unexpected}); {hint}"
            )
        return adapter
