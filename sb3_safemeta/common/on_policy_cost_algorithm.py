"""
The cost-aware on-policy base: SB3's ``OnPolicyAlgorithm`` whose rollout loop also reads
``info["cost"]``, stores cost values and cost advantages, and accounts episode costs. Written once;
every algorithm of the package (SafeAdapter, SafeMetaDual, the baselines) inherits it.
"""

from __future__ import annotations

import io
import json
import pathlib
import time
import zipfile
from collections import deque
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor, safe_mean
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_safemeta.common.buffers import CostRolloutBuffer
from sb3_safemeta.common.policies import CostActorCriticPolicy
from sb3_safemeta.common.rollout_data import RolloutData
from sb3_safemeta.common.validation import as_cost_vector, check_in_range, check_int, check_positive

__all__ = ["SUPPORTED_OBSERVATION_SPACES", "OnPolicyCostAlgorithm", "check_saved_class"]

SelfOnPolicyCostAlgorithm = TypeVar("SelfOnPolicyCostAlgorithm", bound="OnPolicyCostAlgorithm")

# what CostActorCriticPolicy's flatten extractor takes
SUPPORTED_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)

# attributes that only one algorithm of the package saves: they name the class of a zip saved before
# ``algorithm_class`` was recorded
_SIGNATURE_ATTRIBUTES = (
    ("n_inner_steps", "MetaCRPO"),
    ("inner_kl", "MetaCPO"),
    ("inner_lr", "MAMLCostPenalty"),
    ("crpo_rule", "SafeMetaDual"),
    ("dual_tol", "SafeAdapter"),
)


def _saved_data(path: str | pathlib.Path | io.BufferedIOBase) -> dict[str, Any] | None:
    """:return: the JSON ``data`` file of an SB3 zip, without unpickling anything (None: not readable as one)"""
    try:
        if isinstance(path, (str, pathlib.Path)):
            file = pathlib.Path(path)
            if not file.exists() and file.suffix == "":
                file = file.with_suffix(".zip")  # as SB3's save/load
            with zipfile.ZipFile(file) as archive:
                return json.loads(archive.read("data"))
        position = path.tell()
        try:
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("data"))
        finally:
            path.seek(position)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # SB3's load reports it


def check_saved_class(path: str | pathlib.Path | io.BufferedIOBase, cls: type) -> None:
    """
    Raise a ``TypeError`` naming both classes when the zip at ``path`` was not saved by ``cls`` (or by a class
    ``cls`` derives from).

    :param path: an SB3 zip
    :param cls: the class that loads it
    """
    data = _saved_data(path)
    if data is None:
        return
    saved = data.get("algorithm_class")
    if not isinstance(saved, str):
        saved = next((name for key, name in _SIGNATURE_ATTRIBUTES if key in data), None)
    if saved is None:
        if "n_costs" in data and "cost_limit" in data:
            return  # a cost algorithm we cannot name: let it load
        policy = data.get("policy_class", {})
        policy_name = policy.get(":type:", "?") if isinstance(policy, dict) else policy
        raise TypeError(
            f"{path!s} was not saved by an sb3_safemeta algorithm (no cost limit in its data; policy {policy_name}), "
            f"so {cls.__name__}.load cannot restore it: load it with the SB3 class that saved it (e.g. PPO.load), or "
            "start a safe adaptation from its policy with SafeAdapter.from_meta(path, env)"
        )
    if saved not in [base.__name__ for base in cls.__mro__]:
        hint = " (SafeAdapter.from_meta starts a SafeAdapter from a meta-policy zip)" if cls.__name__ == "SafeAdapter" else ""
        raise TypeError(f"{path!s} holds a {saved} model, not a {cls.__name__}: load it with {saved}.load(path){hint}")


def _check_step(
    observations: Any,
    rewards: np.ndarray | None = None,
    infos: list[dict[str, Any]] | None = None,
    dones: np.ndarray | None = None,
) -> None:
    """Raise a clear error when an environment returned a NaN or infinite observation (terminal ones included) or reward."""
    if isinstance(observations, np.ndarray) and observations.dtype.kind == "f" and not np.all(np.isfinite(observations)):
        bad = np.flatnonzero(~np.isfinite(observations.reshape(len(observations), -1)).all(axis=1))
        raise ValueError(
            f"environment(s) {bad.tolist()} returned a NaN or infinite observation: {observations[bad[0]].tolist()} "
            "(the policy cannot act on it; check the environment's dynamics)"
        )
    if dones is None or infos is None:
        return
    for index in np.flatnonzero(dones):
        terminal = infos[index].get("terminal_observation")
        if isinstance(terminal, np.ndarray) and terminal.dtype.kind == "f" and not np.all(np.isfinite(terminal)):
            raise ValueError(
                f"environment {index} returned a NaN or infinite observation at the end of an episode: {terminal.tolist()}"
            )
    if rewards is not None and not np.all(np.isfinite(rewards)):
        bad = np.flatnonzero(~np.isfinite(rewards))
        raise ValueError(f"environment(s) {bad.tolist()} returned a NaN or infinite reward: {rewards[bad].tolist()}")


class OnPolicyCostAlgorithm(OnPolicyAlgorithm):
    """
    Base class for on-policy algorithms with p cost channels (costs in ``info["cost"]``, a float or
    an array of length p, as Safety-Gymnasium's Gymnasium wrapper reports them).

    :param policy: the policy model to use (a ``CostActorCriticPolicy``)
    :param env: the environment to learn from (if registered in Gym, can be str)
    :param learning_rate: the learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: the number of steps to run for each environment per update
    :param gamma: discount factor (rewards and costs)
    :param gae_lambda: GAE lambda of the reward advantages
    :param ent_coef: entropy coefficient (SB3 field; unused by the algorithms of this package)
    :param vf_coef: value function coefficient (SB3 field)
    :param max_grad_norm: maximum gradient norm of the critic updates
    :param use_sde: whether to use generalized State Dependent Exploration
    :param sde_sample_freq: sample a new noise matrix every n steps when using gSDE
    :param cost_limit: episode cost limit d, a float or one value per channel (>= 0)
    :param n_costs: number of cost channels p (None: the env's ``n_costs`` attribute, else the length of ``cost_limit``)
    :param cost_gae_lambda: GAE lambda of the cost advantages (None: ``gae_lambda``)
    :param rollout_buffer_class: rollout buffer class (default :class:`CostRolloutBuffer`)
    :param rollout_buffer_kwargs: keyword arguments of the rollout buffer
    :param stats_window_size: window size for the rollout logging (episodes)
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param monitor_wrapper: when creating an environment, whether to wrap it in a Monitor wrapper
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: seed for the pseudo random generators
    :param device: device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    :param supported_action_spaces: the action spaces supported by the algorithm
    """

    rollout_buffer: CostRolloutBuffer
    policy: CostActorCriticPolicy
    # "gae" (value heads bootstrap cut episodes) or "mc" (Monte-Carlo returns, no critic); set by subclasses
    advantage_estimator: str = "gae"

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule,
        n_steps: int,
        gamma: float,
        gae_lambda: float,
        ent_coef: float,
        vf_coef: float,
        max_grad_norm: float,
        use_sde: bool,
        sde_sample_freq: int,
        cost_limit: float | Sequence[float] = 25.0,
        n_costs: int | None = None,
        cost_gae_lambda: float | None = None,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        monitor_wrapper: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        supported_action_spaces: tuple[type[spaces.Space], ...] | None = None,
    ):
        # the plain numbers first: a wrong one fails before any environment is built
        n_steps = check_int(n_steps, "n_steps")
        gamma = check_in_range(gamma, "gamma", 0.0, 1.0)
        gae_lambda = check_in_range(gae_lambda, "gae_lambda", 0.0, 1.0)
        if cost_gae_lambda is not None:
            cost_gae_lambda = check_in_range(cost_gae_lambda, "cost_gae_lambda", 0.0, 1.0)
        if not callable(learning_rate):
            learning_rate = check_positive(learning_rate, "learning_rate")
        stats_window_size = check_int(stats_window_size, "stats_window_size")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            monitor_wrapper=monitor_wrapper,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=supported_action_spaces,
        )
        self.n_costs = self._infer_n_costs(n_costs, cost_limit)
        self.cost_limit = as_cost_vector(cost_limit, self.n_costs, "cost_limit", allow_negative=False)
        self.cost_gae_lambda = gae_lambda if cost_gae_lambda is None else float(cost_gae_lambda)
        if _init_setup_model:
            self._setup_model()

    def _infer_n_costs(self, n_costs: int | None, cost_limit: Any) -> int:
        if n_costs is not None:
            return check_int(n_costs, "n_costs")
        if self.env is not None and self.env.has_attr("n_costs"):
            return int(self.env.get_attr("n_costs", indices=[0])[0])
        return int(np.size(cost_limit))

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """SB3's wrapping, then a clear error for observation spaces the package's MlpPolicy cannot take."""
        vec_env = OnPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)
        space = vec_env.observation_space
        if not isinstance(space, SUPPORTED_OBSERVATION_SPACES):
            raise TypeError(
                f"observation space {space} is not supported: sb3_safemeta's MlpPolicy takes "
                f"{', '.join(kind.__name__ for kind in SUPPORTED_OBSERVATION_SPACES)} observations (there is no "
                "MultiInputPolicy); flatten a Dict or Tuple space with gymnasium.wrappers.FlattenObservation"
            )
        return vec_env

    @classmethod
    def load(
        cls: type[SelfOnPolicyCostAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfOnPolicyCostAlgorithm:
        """
        SB3's ``load``, after checking that the zip was saved by this class (or one it derives from): a zip of
        another algorithm would otherwise load with this class's defaults for what it lacks.

        .. warning::
            As in SB3, loading unpickles the zip's data: never load a zip from an untrusted source, it can run
            arbitrary code (see the Reliability section of the docs).

        :param path: the zip (as for SB3's ``load``)
        :param env: the environment to train on (required by ``learn``)
        :param device: device on which the policy is loaded
        :param custom_objects: replacements of saved objects (SB3)
        :param print_system_info: print the saving and the current system's info
        :param force_reset: reset the env before the next ``learn``
        :param kwargs: attributes to change when loading (SB3)
        :return: the loaded model
        """
        check_saved_class(path, cls)
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    def _setup_model(self) -> None:
        # saved in the zip: load() checks it (check_saved_class)
        self.algorithm_class = type(self).__name__
        if self.rollout_buffer_class is None:
            self.rollout_buffer_class = CostRolloutBuffer
        if not issubclass(self.rollout_buffer_class, CostRolloutBuffer):
            raise TypeError(f"rollout_buffer_class must subclass CostRolloutBuffer, got {self.rollout_buffer_class}")
        self.rollout_buffer_kwargs.update(n_costs=self.n_costs, cost_gae_lambda=self.cost_gae_lambda)
        self.policy_kwargs["n_costs"] = self.n_costs
        super()._setup_model()
        # the window of episode costs behind rollout/ep_cost_*: saved in the zip like SB3's ep_info_buffer, so that
        # the logs of a resumed run continue those of the uninterrupted one (load() restores it before this)
        if not isinstance(getattr(self, "ep_cost_buffer", None), deque):
            self.ep_cost_buffer: deque[np.ndarray] = deque(maxlen=self._stats_window_size)
        self.rollout_episode_returns: list[float] = []
        self.rollout_episode_costs: list[np.ndarray] = []
        self.rollout_episode_lengths: list[int] = []
        self.rollout_seconds = 0.0  # wall time of the last collect_rollouts (RolloutData.collect_seconds)
        self._reset_episode_accounting()

    def _reset_episode_accounting(self) -> None:
        n_envs = self.n_envs
        self._running_returns = np.zeros(n_envs)
        self._running_costs = np.zeros((n_envs, self.n_costs))
        self._running_lengths = np.zeros(n_envs, dtype=np.int64)

    def start_new_episodes(self) -> None:
        """Reset every sub-environment (e.g. after ``set_task``) and the running episode accounting."""
        assert self.env is not None
        self._last_obs = self.env.reset()  # type: ignore[assignment]
        self._last_episode_starts = np.ones((self.env.num_envs,), dtype=bool)
        self._reset_episode_accounting()

    def _costs_from_infos(self, infos: list[dict[str, Any]]) -> np.ndarray:
        """:return: the step's costs, (n_envs, n_costs); a missing or ill-shaped cost is an error"""
        costs = np.zeros((len(infos), self.n_costs), dtype=np.float64)
        for index, info in enumerate(infos):
            if "cost" not in info:
                raise KeyError(
                    f"environment {index} did not report info['cost']: sb3_safemeta algorithms need a cost at every step "
                    "(a float, or an array of length n_costs), the convention of Safety-Gymnasium's Gymnasium wrapper; "
                    "a missing cost is never read as 0"
                )
            raw = info["cost"]
            expected = "a float" + (f" or an array of n_costs={self.n_costs} floats" if self.n_costs > 1 else "")
            if raw is None or isinstance(raw, (str, bytes, dict)):
                raise TypeError(f"info['cost'] of environment {index} is {raw!r} ({type(raw).__name__}); expected {expected}")
            try:
                cost = np.asarray(raw, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"info['cost'] of environment {index} is {raw!r} ({type(raw).__name__}); expected {expected}"
                ) from error
            if cost.shape != (self.n_costs,):
                raise ValueError(
                    f"info['cost'] of environment {index} has {cost.size} value(s), expected n_costs={self.n_costs}"
                )
            if not np.all(np.isfinite(cost)):
                raise ValueError(f"info['cost'] of environment {index} is not finite: {cost.tolist()}")
            if np.any(cost < 0):
                raise ValueError(
                    f"info['cost'] of environment {index} is negative: {cost.tolist()}; costs must be >= 0 (a negative "
                    "cost would cancel hazard costs in an episode's sum and hide violations of the limit d)"
                )
            costs[index] = cost
        return costs

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """
        Collect ``n_rollout_steps`` steps per environment with ``self.policy``, with costs.

        :param env: the training environment
        :param callback: callback called at each step (and at the end of the rollout)
        :param rollout_buffer: a :class:`CostRolloutBuffer` to fill
        :param n_rollout_steps: number of steps per environment
        :return: True if the rollout completed, False if a callback asked to stop
        """
        assert self._last_obs is not None, "No previous observation was provided"
        assert isinstance(rollout_buffer, CostRolloutBuffer)
        start = time.perf_counter()
        _check_step(self._last_obs)
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        self.rollout_episode_returns, self.rollout_episode_costs, self.rollout_episode_lengths = [], [], []
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()

        n_steps = 0
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                action_tensor, values, cost_values, log_probs = self.policy.forward_with_costs(obs_tensor)
            actions = action_tensor.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            costs = self._costs_from_infos(infos)
            _check_step(new_obs, rewards, infos, dones)
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            self._account_episodes(rewards, costs, dones)
            n_steps += 1
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)

            # Time-limit truncation: bootstrap the reward AND the cost with the value of the terminal state
            # (Monte-Carlo advantages use no critic: its untrained heads would only add noise)
            for index, done in enumerate(dones if self._bootstraps_with_critic() else ()):
                terminal_obs = infos[index].get("terminal_observation")
                if done and terminal_obs is not None and infos[index].get("TimeLimit.truncated", False):
                    terminal_tensor = self.policy.obs_to_tensor(terminal_obs)[0]
                    with th.no_grad():
                        rewards[index] += self.gamma * self.policy.predict_values(terminal_tensor)[0].item()
                        costs[index] += self.gamma * self.policy.predict_cost_values(terminal_tensor)[0].cpu().numpy()

            rollout_buffer.add(
                self._last_obs,
                actions,
                rewards,
                self._last_episode_starts,
                values,
                log_probs,
                cost=costs,
                cost_value=cost_values,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        if self._bootstraps_with_critic():
            with th.no_grad():
                last_tensor = obs_as_tensor(new_obs, self.device)  # type: ignore[arg-type]
                values = self.policy.predict_values(last_tensor)
                cost_values = self.policy.predict_cost_values(last_tensor)
        else:  # episodes cut by the rollout's end: plain Monte-Carlo returns
            values, cost_values = th.zeros(env.num_envs, 1), th.zeros(env.num_envs, self.n_costs)
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones, last_cost_values=cost_values)
        callback.update_locals(locals())
        callback.on_rollout_end()
        self.rollout_seconds = time.perf_counter() - start
        return True

    def _bootstraps_with_critic(self) -> bool:
        """:return: whether cut episodes are bootstrapped with the value heads (not with Monte-Carlo advantages)"""
        return self.advantage_estimator == "gae"

    def _account_episodes(self, rewards: np.ndarray, costs: np.ndarray, dones: np.ndarray) -> None:
        """Accumulate undiscounted episode returns, costs and lengths per environment (before any bootstrap)."""
        self._running_returns += rewards
        self._running_costs += costs
        self._running_lengths += 1
        for index in np.flatnonzero(dones):
            self.rollout_episode_returns.append(float(self._running_returns[index]))
            self.rollout_episode_costs.append(self._running_costs[index].copy())
            self.rollout_episode_lengths.append(int(self._running_lengths[index]))
            self.ep_cost_buffer.append(self._running_costs[index].copy())
            self._running_returns[index], self._running_costs[index], self._running_lengths[index] = 0.0, 0.0, 0

    def rollout_data(self, advantage_estimator: str = "gae") -> RolloutData:
        """
        :param advantage_estimator: ``"gae"`` or ``"mc"`` (see :class:`RolloutData`)
        :return: the rollout just collected, flattened, with this rollout's completed episodes
        """
        rollout = RolloutData.from_buffer(
            self.rollout_buffer,
            self.rollout_episode_returns,
            self.rollout_episode_costs,
            self.rollout_episode_lengths,
            advantage_estimator,
        )
        rollout.collect_seconds = self.rollout_seconds
        return rollout

    def train_critics(self, n_epochs: int, batch_size: int, optimizer: th.optim.Optimizer) -> None:
        """
        Fit the value head to the reward returns and the cost-value heads to the cost returns (MSE).
        Flattens the rollout buffer (``get()``): read what you need from it first.

        :param n_epochs: passes over the rollout
        :param batch_size: minibatch size
        :param optimizer: optimizer over the critic parameters
        """
        self.policy.set_training_mode(True)
        value_losses, cost_value_losses = [], []
        for _ in range(n_epochs):
            for batch in self.rollout_buffer.get(batch_size):
                values = self.policy.predict_values(batch.observations).flatten()
                cost_values = self.policy.predict_cost_values(batch.observations)
                value_loss = F.mse_loss(batch.returns, values)
                cost_value_loss = F.mse_loss(batch.cost_returns, cost_values)
                optimizer.zero_grad()
                (value_loss + cost_value_loss).backward()
                th.nn.utils.clip_grad_norm_(self.policy.critic_parameters(), self.max_grad_norm)
                optimizer.step()
                value_losses.append(value_loss.item())
                cost_value_losses.append(cost_value_loss.item())
        if value_losses:
            self.logger.record("train/value_loss", float(np.mean(value_losses)))
            self.logger.record("train/cost_value_loss", float(np.mean(cost_value_losses)))

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        if self.env is None:
            name = type(self).__name__
            raise ValueError(
                f"learn() needs an environment: this {name} has none (loaded without env?); "
                f"use {name}.load(path, env=env) or model.set_env(env)"
            )
        if reset_num_timesteps:  # a new run starts a new window, as SB3 does with ep_info_buffer
            self.ep_cost_buffer = deque(maxlen=self._stats_window_size)
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    def dump_logs(self, iteration: int = 0) -> None:
        """SB3's log dump plus ``rollout/ep_cost_mean`` and ``rollout/ep_cost_max`` (cost channel 0, then per channel)."""
        if len(self.ep_cost_buffer) > 0:
            costs = np.asarray(self.ep_cost_buffer)
            self.logger.record("rollout/ep_cost_mean", safe_mean(costs[:, 0]))
            self.logger.record("rollout/ep_cost_max", float(np.max(costs[:, 0])))
            for channel in range(1, self.n_costs):
                self.logger.record(f"rollout/ep_cost_{channel}_mean", safe_mean(costs[:, channel]))
        super().dump_logs(iteration)

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "rollout_episode_returns",
            "rollout_episode_costs",
            "rollout_episode_lengths",
            "rollout_seconds",
        ]
