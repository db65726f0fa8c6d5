"""
The meta-CPO baseline (Cho and Sun 2024; Section 6 of the paper): MAML whose inner adaptation is one step of
Constrained Policy Optimization (Achiam et al. 2017, :func:`~sb3_safemeta.meta_cpo.cpo_step.cpo_step`), with an
outer TRPO step on the meta-policy that differentiates through that CPO step.

The building blocks are functions of the actor parameters given as tensors, so that the tabular tests run the same
code as the algorithm:

- :func:`fisher_vector_product`: v -> F(theta) v + damping v, F the Hessian of the mean KL at theta (double
  backward), differentiable in v with F held constant;
- :func:`cpo_inner_step`: theta'(phi) = phi + x(g(phi), b(phi), F(phi)), the CPO step on a task's pre-update data;
- :class:`MetaCPOSurrogate`: the outer objective through the inner step.
"""

from __future__ import annotations

import copy
import pathlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.func import functional_call

from sb3_safemeta.common.distributed import parallel_meta_test
from sb3_safemeta.common.evaluation import MetaTestReport
from sb3_safemeta.common.functional_policy import (
    actor_parameter_dict,
    functional_log_prob,
    load_actor_parameters,
    mean_kl,
    weighted_mean,
)
from sb3_safemeta.common.meta_algorithm import OnPolicyMetaAlgorithm
from sb3_safemeta.common.rollout_data import RolloutData
from sb3_safemeta.common.tasks import Task, task_cost_limit
from sb3_safemeta.common.trust_region import MeanKL, TrustRegionResult
from sb3_safemeta.common.validation import check_in_range, check_int
from sb3_safemeta.meta_cpo.cpo_step import CPOStepResult, cpo_step
from sb3_safemeta.meta_cpo.outer_step import ConstrainedStepResult, constrained_trust_region_step
from sb3_safemeta.meta_cpo.policies import MlpPolicy

__all__ = [
    "META_GRADIENTS",
    "META_STEPS",
    "CPOData",
    "MetaCPO",
    "MetaCPOSurrogate",
    "cpo_inner_step",
    "fisher_vector_product",
]

# "second_order": differentiate through the CPO step; "first_order": its Jacobian taken as the identity
META_GRADIENTS = ("second_order", "first_order")
# the outer step on phi: "cpo" constrained by the linearised post-adaptation cost (Cho and Sun 2024), "trpo" not
META_STEPS = ("cpo", "trpo")
# the outer CPO step's case as a number for the logs
_CASE_CODES = {"kl_only": 0, "both_active": 1, "recovery": 2}


# ---------------------------------------------------------------------------------------------- functional pieces
class _Distribution(nn.Module):
    """``forward(obs)`` = the torch distribution of pi(.|obs): the method ``functional_call`` needs."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observations: th.Tensor) -> th.distributions.Distribution:
        return self.policy.get_distribution(observations).distribution  # type: ignore[return-value]


def _functional_distribution(
    policy: ActorCriticPolicy, parameters: dict[str, th.Tensor], observations: th.Tensor
) -> th.distributions.Distribution:
    prefixed = {f"policy.{name}": value for name, value in parameters.items()}
    return functional_call(_Distribution(policy), prefixed, (observations,))


def _flat(tensors: Sequence[th.Tensor | None], like: Sequence[th.Tensor]) -> th.Tensor:
    return th.cat([(t if t is not None else th.zeros_like(ref)).reshape(-1) for t, ref in zip(tensors, like, strict=True)])


class _ConstantSymmetricOperator(th.autograd.Function):
    """v -> M v for a symmetric M held constant: the backward of a product is the product (M^T = M)."""

    @staticmethod
    def forward(ctx: Any, vector: th.Tensor, product: Callable[[th.Tensor], th.Tensor]) -> th.Tensor:
        ctx.product = product
        return product(vector.detach()).detach()

    @staticmethod
    def backward(ctx: Any, gradient: th.Tensor) -> tuple[th.Tensor, None]:
        return ctx.product(gradient.detach()).detach(), None


def fisher_vector_product(
    policy: ActorCriticPolicy, parameters: dict[str, th.Tensor], observations: th.Tensor, damping: float = 0.1
) -> Callable[[th.Tensor], th.Tensor]:
    """
    The Fisher of the trust region at theta = ``parameters``: F = Hessian over theta2 of E_s[KL(pi_theta || pi_theta2)]
    at theta2 = theta, times a vector, by double backward (no matrix is formed).

    The product is differentiable in the vector (its backward is the same product, F being symmetric) with F a
    constant: each product costs one double backward whatever graph the vector carries, so that the conjugate
    gradient can be unrolled (a product whose graph went back into the vector's would make every iteration
    traverse the graph of all previous ones).

    :param policy: the policy that defines the architecture (its own parameters are not used)
    :param parameters: theta, name -> tensor (see
        :func:`~sb3_safemeta.common.functional_policy.actor_parameter_dict`); read, not differentiated
    :param observations: the states of the KL
    :param damping: added to the product (F + damping I) v, as in TRPO
    :return: v -> (F + damping I) v, flat vectors over the parameters in the order of ``parameters``
    """
    with th.enable_grad():
        second = {name: value.detach().clone().requires_grad_(True) for name, value in parameters.items()}
        with th.no_grad():
            reference = _functional_distribution(policy, {n: v.detach() for n, v in parameters.items()}, observations)
        kl = th.distributions.kl_divergence(reference, _functional_distribution(policy, second, observations))
        mean_kl = (kl.sum(dim=-1) if kl.ndim > 1 else kl).mean()
        inputs = list(second.values())
        kl_gradient = _flat(th.autograd.grad(mean_kl, inputs, create_graph=True, allow_unused=True), inputs)

    def raw_product(vector: th.Tensor) -> th.Tensor:
        with th.enable_grad():
            hessian_vector = th.autograd.grad(th.dot(kl_gradient, vector), inputs, retain_graph=True, allow_unused=True)
        return _flat(hessian_vector, inputs) + damping * vector

    def product(vector: th.Tensor) -> th.Tensor:
        if vector.requires_grad and th.is_grad_enabled():
            return _ConstantSymmetricOperator.apply(vector, raw_product)
        return raw_product(vector.detach())

    return product


@dataclass
class CPOData:
    """
    One task's data for a CPO step.

    :param observations: states, ``(n, *obs_shape)``
    :param actions: actions, ``(n, *action_shape)`` (int64 (n,) for Discrete)
    :param advantages: reward advantages A, (n,) (normalised by default in :class:`MetaCPO`)
    :param cost_advantages: cost advantages A_c of the constrained channel, (n,)
    :param cost_excess: c = Jc(pi_old) - d, the episode cost of the collecting policy minus the limit
    :param horizon: H, the factor of E[ratio A_c] in the episode-unit cost surrogate (the mean episode length;
        1 / (1 - gamma) for discounted quantities): b = H grad E[ratio A_c] is the gradient of Jc in episode units
    :param weights: sample weights (n,) summing to one (None: 1/n each; exact expectations in the tabular tests)
    :param old_log_prob: log pi_old(a|s) of the collecting policy (None: the current ones, detached)
    """

    observations: th.Tensor
    actions: th.Tensor
    advantages: th.Tensor
    cost_advantages: th.Tensor
    cost_excess: float
    horizon: float
    weights: th.Tensor | None = None
    old_log_prob: th.Tensor | None = None


def cpo_inner_step(
    policy: ActorCriticPolicy,
    parameters: dict[str, th.Tensor],
    data: CPOData,
    max_kl: float,
    cg_max_steps: int = 10,
    cg_damping: float = 0.1,
    create_graph: bool = True,
    fisher_parameters: dict[str, th.Tensor] | None = None,
) -> tuple[dict[str, th.Tensor], CPOStepResult]:
    """
    The inner step of meta-CPO: theta' = theta + x, x the CPO step (:func:`~sb3_safemeta.meta_cpo.cpo_step.cpo_step`)
    with g = H grad E[ratio A], b = H grad E[ratio A_c], c = ``data.cost_excess`` and F the Fisher of the KL at theta
    (+ damping), ratio = pi_theta / pi_old. No line search: the step is the solution of the quadratic approximation.

    With ``create_graph=True`` theta' is a differentiable function of ``parameters``: through g and b (their graph,
    i.e. Hessian-vector products of the surrogates), the unrolled conjugate gradient and the closed-form dual
    solution. The Fisher is a constant of that function (taken at ``fisher_parameters``): its derivative, a
    third-order term of the KL, is not differentiated.

    :param policy: the policy that defines the architecture (its own parameters are not used)
    :param parameters: theta, name -> tensor
    :param data: the task's data, collected by pi_old
    :param max_kl: delta, the KL radius of the step
    :param cg_max_steps: unrolled conjugate-gradient iterations (per solve: F^-1 g and F^-1 b)
    :param cg_damping: damping of the Fisher-vector product
    :param create_graph: keep the graph (False for plain adaptation, e.g. at meta-test or for the first-order
        meta-gradient)
    :param fisher_parameters: where F is taken (None: at ``parameters``' values)
    :return: theta' (name -> tensor) and the step's diagnostics
    """
    if not create_graph:  # plain adaptation: differentiate detached copies, return theta' without a graph
        parameters = {name: value.detach().requires_grad_(True) for name, value in parameters.items()}
    names = list(parameters)
    inputs = [parameters[name] for name in names]
    with th.enable_grad():
        log_prob = functional_log_prob(policy, parameters, data.observations, data.actions)
        reference = log_prob.detach() if data.old_log_prob is None else data.old_log_prob
        ratio = th.exp(log_prob - reference)
        reward = data.horizon * weighted_mean(ratio * data.advantages, data.weights)
        cost = data.horizon * weighted_mean(ratio * data.cost_advantages, data.weights)
        reward_gradient = _flat(
            th.autograd.grad(reward, inputs, create_graph=create_graph, retain_graph=True, allow_unused=True), inputs
        )
        cost_gradient = _flat(th.autograd.grad(cost, inputs, create_graph=create_graph, allow_unused=True), inputs)
    fisher_at = parameters if fisher_parameters is None else fisher_parameters
    product = fisher_vector_product(policy, fisher_at, data.observations, cg_damping)
    result = cpo_step(reward_gradient, cost_gradient, data.cost_excess, max_kl, product, cg_max_steps)
    step = result.step if create_graph else result.step.detach()
    adapted, offset = {}, 0
    for name, value in zip(names, inputs, strict=True):
        adapted[name] = (value if create_graph else value.detach()) + step[offset : offset + value.numel()].view_as(value)
        offset += value.numel()
    return adapted, result


@dataclass
class PostSamples:
    """
    One task's post-update samples for :class:`MetaCPOSurrogate`.

    :param observations: states of the adapted policy's rollout
    :param actions: its actions
    :param advantages: its reward advantages, (n,)
    :param weights: sample weights (None: 1/n each)
    :param cost_advantages: H * A_c, the cost advantages in episode units (None: no cost surrogate), (n,); only the
        constrained outer step (``meta_step="cpo"``) uses them
    """

    observations: th.Tensor
    actions: th.Tensor
    advantages: th.Tensor
    weights: th.Tensor | None = None
    cost_advantages: th.Tensor | None = None


class MetaCPOSurrogate:
    """
    The outer objective of meta-CPO as a function of the CURRENT actor parameters phi of ``policy``:

        L(phi) = mean_tau E_{s,a ~ pi_theta'_tau(phi_old)}[ pi_theta'_tau(phi)(a|s) / pi_theta'_tau(phi_old)(a|s) A_post ]

    with theta'_tau(phi) = :func:`cpo_inner_step` on task tau's pre-update data (held fixed: the data are not
    differentiated, as in MAML) and the inner step's Fisher held at phi_old (its derivative is not taken). With
    ``first_order=True`` theta'_tau(phi) = phi + x_tau(phi) with x_tau(phi) used as a constant (the step's Jacobian
    is the identity: first-order MAML). Under ``torch.no_grad`` (the line search) it is evaluated without any graph.

    :param policy: the meta-policy pi_phi, whose actor parameters move
    :param inner_data: per task, the pre-update data (with ``old_log_prob`` of pi_phi_old)
    :param post_samples: per task, the post-update samples
    :param max_kl: delta of the inner CPO step
    :param cg_max_steps: unrolled conjugate-gradient iterations of the inner step
    :param cg_damping: damping of the inner step's Fisher
    :param first_order: treat the inner step's Jacobian as the identity
    """

    def __init__(
        self,
        policy: ActorCriticPolicy,
        inner_data: Sequence[CPOData],
        post_samples: Sequence[PostSamples],
        max_kl: float,
        cg_max_steps: int = 10,
        cg_damping: float = 0.1,
        first_order: bool = False,
    ) -> None:
        if not inner_data or len(inner_data) != len(post_samples):
            raise ValueError(
                f"MetaCPOSurrogate needs one post-update sample set per task, got {len(inner_data)} and {len(post_samples)}"
            )
        self.policy, self.inner_data, self.post_samples = policy, list(inner_data), list(post_samples)
        self.max_kl, self.cg_max_steps, self.cg_damping, self.first_order = max_kl, cg_max_steps, cg_damping, first_order
        # the inner step's Fisher: at phi_old for every phi (a constant of L, as the data)
        self.fisher_parameters = {name: value.detach().clone() for name, value in actor_parameter_dict(policy).items()}
        with th.no_grad():
            self.old_log_probs = [
                functional_log_prob(policy, adapted, post.observations, post.actions)
                for adapted, post in zip(self.adapted_parameters(), self.post_samples, strict=True)
            ]

    def adapted_parameters(self) -> list[dict[str, th.Tensor]]:
        """:return: theta'_tau(phi) for every task at the current phi (differentiable when grad mode is on)"""
        create_graph = th.is_grad_enabled() and not self.first_order
        phi = actor_parameter_dict(self.policy)
        adapted = []
        for data in self.inner_data:
            if self.first_order and th.is_grad_enabled():
                # the step's value from detached parameters, added to phi: d theta' / d phi = I
                values, _ = cpo_inner_step(
                    self.policy, phi, data, self.max_kl, self.cg_max_steps, self.cg_damping, False, self.fisher_parameters
                )
                adapted.append({name: phi[name] + (values[name] - phi[name]).detach() for name in phi})
            else:
                theta, _ = cpo_inner_step(
                    self.policy,
                    phi,
                    data,
                    self.max_kl,
                    self.cg_max_steps,
                    self.cg_damping,
                    create_graph,
                    self.fisher_parameters,
                )
                adapted.append(theta)
        return adapted

    def __call__(self) -> th.Tensor:
        return self.objectives(with_cost=False)[0]

    def objectives(self, with_cost: bool = True) -> tuple[th.Tensor, th.Tensor]:
        """
        The reward surrogate L(phi) and the cost surrogate of the adapted policies,
        ``C(phi) = mean_tau E_post[ pi_theta'_tau(phi) / pi_theta'_tau(phi_old) * H A_c,post ]`` (episode units: its
        gradient at phi_old is the gradient of the mean post-adaptation episode cost through the inner step), from
        one computation of the theta'_tau(phi).

        :param with_cost: also compute C (needs ``cost_advantages`` in every post-update sample set)
        :return: (L, C) (C is 0 when ``with_cost`` is False)
        """
        rewards, costs = [], []
        for adapted, post, old_log_prob in zip(self.adapted_parameters(), self.post_samples, self.old_log_probs, strict=True):
            ratio = th.exp(functional_log_prob(self.policy, adapted, post.observations, post.actions) - old_log_prob)
            rewards.append(weighted_mean(ratio * post.advantages, post.weights))
            if with_cost:
                if post.cost_advantages is None:
                    raise ValueError("MetaCPOSurrogate.objectives needs the post-update cost_advantages of every task")
                costs.append(weighted_mean(ratio * post.cost_advantages, post.weights))
        reward = th.stack(rewards).mean()
        return reward, (th.stack(costs).mean() if with_cost else th.zeros_like(reward))


# ---------------------------------------------------------------------------------------------- the algorithm
class MetaCPO(OnPolicyMetaAlgorithm):
    """
    meta-CPO, the baseline of Cho and Sun (2024) in the paper's comparison (Section 6): MAML (Finn et al. 2017,
    https://arxiv.org/abs/1703.03400) whose inner adaptation is one CPO step (Achiam et al. 2017, "Constrained
    Policy Optimization", https://arxiv.org/abs/1705.10528).

    One meta-iteration samples ``meta_batch_size`` tasks. For each task: a rollout of pi_phi, the CPO step
    theta'(phi) = phi + x(g(phi), b(phi)) (quadratic approximation of the task's constrained problem within KL
    ``inner_kl``, solved through its dual; recovery step when infeasible; :func:`cpo_inner_step`), and a rollout of
    pi_theta' on the same task. phi then takes one step on the reward surrogate ``mean_tau E_post[ pi_theta'(phi) /
    pi_theta'(phi_old) * A_post ]`` (:class:`MetaCPOSurrogate`): with ``meta_gradient="second_order"`` the gradient
    goes through the CPO step (g and b by double backward, the unrolled conjugate gradient with the Fisher held at
    phi_old, and the closed-form dual), with ``"first_order"`` the step's Jacobian is taken as the identity. With
    ``meta_step="cpo"`` (default, constraints at both levels as Cho and Sun 2024) the outer step is itself a CPO
    step (:func:`~sb3_safemeta.meta_cpo.outer_step.constrained_trust_region_step`): the post-adaptation cost
    surrogate ``mean_tau E_post[ratio * H A_c,post]`` is linearised through the inner step as well, c is the mean
    over tasks of the adapted policies' episode cost minus d, and a recovery step decreases that cost when the
    linearised constraint cannot be met in the trust region. With ``meta_step="trpo"`` it is an unconstrained TRPO
    step on the reward surrogate. Either way the trust region is the KL of the pre-update policy pi_phi (bound
    ``target_kl``) and a backtracking line search restores phi when no step is acceptable.

    Safety: both CPO steps keep LINEARISED costs within d (or move towards them, by their recovery steps), but the
    meta-policy pi_phi itself is not constrained (the outer constraint is on the adapted policies, nothing checks
    pi_phi against d) and the linearisations may be wrong for steps of KL ``inner_kl`` / ``target_kl``: no explored
    policy is guaranteed within d.

    One cost channel (CPO's single constraint): ``n_costs`` must be 1.

    Timesteps: one meta-iteration uses ``meta_batch_size * 2 * n_steps * n_envs`` environment steps.

    :param policy: the policy model to use (MlpPolicy)
    :param env: a task environment (see :mod:`sb3_safemeta.common.tasks`), or its registered id
    :param cost_limit: episode cost limit d; a task's ``"cost_limit"`` overrides it
    :param inner_kl: delta, the KL radius of the CPO step (meta-training and meta-test)
    :param meta_gradient: ``"second_order"`` (default: through the CPO step, as the paper describes meta-CPO) or
        ``"first_order"`` (the step's Jacobian taken as the identity; cheaper)
    :param meta_step: the outer step on phi: ``"cpo"`` (default: constrained by the linearised post-adaptation cost,
        with a recovery step, as Cho and Sun 2024) or ``"trpo"`` (unconstrained TRPO step on the reward surrogate)
    :param meta_batch_size: tasks per meta-iteration
    :param n_steps: steps per environment per rollout (one rollout per policy per task)
    :param target_kl: KL bound of the outer step on phi (paper: 1e-3)
    :param inner_cg_max_steps: unrolled conjugate-gradient iterations of the CPO step
    :param cg_max_steps: conjugate-gradient iterations of the outer TRPO step
    :param cg_damping: damping of both Fisher-vector products
    :param line_search_shrinking_factor: step shrink factor of the outer line search
    :param line_search_max_iter: outer line-search iterations
    :param learning_rate: learning rate of the critics (used with ``advantage_estimator="gae"``)
    :param batch_size: minibatch size of the critic regression
    :param n_critic_epochs: critic epochs per rollout (``"gae"`` only)
    :param gamma: discount factor
    :param gae_lambda: GAE lambda (``"gae"`` only)
    :param advantage_estimator: ``"mc"`` (default: Monte-Carlo returns with a per-task linear baseline) or ``"gae"``
    :param normalize_advantage: centre the REWARD advantages and divide them by their std per rollout (the cost
        advantages keep their episode units, since the constraint compares b^T x with c = Jc - d)
    :param n_costs: number of cost channels (None: from the env or ``cost_limit``); must be 1
    :param stats_window_size: window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: verbosity level: 0 no output, 1 info messages, 2 debug messages
    :param seed: seed for the pseudo random generators and the task sampler; every meta-iteration re-seeds torch
        and the environments from the task sampler, whose state is saved (as SafeMetaDual)
    :param device: device (cpu, cuda, ...) on which the code should be run
    :param n_workers: 0 (default): every task's work runs in this process; N > 0: on N Ray workers, with the same
        result (``advantage_estimator="mc"``; docs/guide/distributed.md)
    :param ray_address: with ``n_workers > 0``: None starts a local Ray instance, ``"auto"`` or ``"host:port"``
        joins a running cluster
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    adaptation_step_parameters = ("inner_kl",)

    def __init__(
        self,
        policy: str | type[MlpPolicy],
        env: GymEnv | str,
        cost_limit: float | list[float] = 25.0,
        inner_kl: float = 0.01,
        meta_gradient: str = "second_order",
        meta_step: str = "cpo",
        meta_batch_size: int = 10,
        n_steps: int = 200,
        target_kl: float = 1e-3,
        inner_cg_max_steps: int = 10,
        cg_max_steps: int = 10,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        learning_rate: float | Schedule = 1e-3,
        batch_size: int = 256,
        n_critic_epochs: int = 5,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        advantage_estimator: str = "mc",
        normalize_advantage: bool = True,
        n_costs: int | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        n_workers: int = 0,
        ray_address: str | None = None,
        _init_setup_model: bool = True,
    ):
        super().__init__(
            policy,
            env,
            cost_limit=cost_limit,
            meta_batch_size=meta_batch_size,
            n_steps=n_steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            n_critic_epochs=n_critic_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            advantage_estimator=advantage_estimator,
            n_costs=n_costs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            n_workers=n_workers,
            ray_address=ray_address,
        )
        if self.n_costs != 1:
            raise ValueError(f"n_costs must be 1 for MetaCPO (CPO's single constraint), got {self.n_costs}")
        if meta_gradient not in META_GRADIENTS:
            raise ValueError(f"meta_gradient must be one of {META_GRADIENTS}, got {meta_gradient!r}")
        self.meta_gradient = meta_gradient
        if meta_step not in META_STEPS:
            raise ValueError(f"meta_step must be one of {META_STEPS}, got {meta_step!r}")
        self.meta_step = meta_step
        # no line search on the inner step: a radius of many nats moves log std so far that the adapted policy is
        # no distribution (found by tests/test_properties.py with inner_kl ~ 5e6); 1 nat is far beyond any use
        self.inner_kl = check_in_range(inner_kl, "inner_kl", 0.0, 1.0, low_open=True)
        self.inner_cg_max_steps = check_int(inner_cg_max_steps, "inner_cg_max_steps")
        self._set_trust_region(
            target_kl, cg_max_steps, cg_damping, line_search_shrinking_factor, line_search_max_iter, positive_damping=True
        )  # the unrolled CG of the inner step needs F + damping I positive definite
        self.normalize_advantage = bool(normalize_advantage)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        # pi_theta' of the task being adapted: same architecture, actor weights set to theta'(phi) per task
        self.adapted_policy = copy.deepcopy(self.policy)

    # ------------------------------------------------------------------ data
    def _reward_advantages(self, rollout: RolloutData) -> th.Tensor:
        advantages = rollout.advantages.astype(np.float64)
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        return th.as_tensor(advantages, dtype=th.float32, device=self.device)

    def _inner_data(self, rollout: RolloutData, policy: ActorCriticPolicy, cost_limit: np.ndarray) -> CPOData:
        """:return: the rollout's samples, advantages, c = Jc - d and the log-probabilities of ``policy`` (its collector)"""
        batch = rollout.to_batch(self.device)
        with th.no_grad():
            old_log_prob = policy.get_distribution(batch.observations).log_prob(batch.actions)
        return CPOData(
            batch.observations,
            batch.actions,
            self._reward_advantages(rollout),
            th.as_tensor(rollout.cost_advantages[:, 0], dtype=th.float32, device=self.device),
            cost_excess=float(rollout.episode_cost[0] - cost_limit[0]),
            horizon=rollout.horizon,
            old_log_prob=old_log_prob,
        )

    def adapt(self, policy: ActorCriticPolicy, data: CPOData) -> CPOStepResult:
        """
        One plain CPO step of ``policy`` on its own data, in place (no graph).

        :param policy: the policy that collected ``data``
        :param data: see :meth:`_inner_data`
        :return: the step's diagnostics
        """
        adapted, result = cpo_inner_step(
            policy, actor_parameter_dict(policy), data, self.inner_kl, self.inner_cg_max_steps, self.cg_damping,
            create_graph=False,
        )  # fmt: skip
        load_actor_parameters(policy, adapted)
        return result

    # ------------------------------------------------------------------ training
    def _meta_iteration(self, callback: BaseCallback) -> bool:
        """One meta-iteration of meta-CPO over a batch of tasks. :return: False if a callback stopped training"""
        tasks = self.sample_tasks(self.meta_batch_size)
        seed = self._seed_iteration()
        limits = [task_cost_limit(task, self.cost_limit, self.n_costs) for task in tasks]
        # per task: pi_phi's rollout, the CPO step from phi, pi_theta''s rollout (a task unit)
        items = [(i, (task, limit)) for i, (task, limit) in enumerate(zip(tasks, limits, strict=True))]
        results = self._map_task_units("inner_step", seed, items, callback)
        if results is None:
            return False
        meta_rollouts: list[RolloutData] = [result[0] for result in results]
        adapted_rollouts: list[RolloutData] = [result[1] for result in results]
        steps: list[CPOStepResult] = [result[2] for result in results]
        inner_kls = [result[3] for result in results]
        # the outer step differentiates through the CPO step: its data, read again here with pi_phi
        inner_data = [
            self._inner_data(meta_rollout, self.policy, limit)
            for meta_rollout, limit in zip(meta_rollouts, limits, strict=True)
        ]

        meta_start = time.time()
        # c of the outer constraint: the adapted policies' episode cost minus their task's limit, mean over tasks
        pairs = zip(adapted_rollouts, limits, strict=True)
        outer_excess = float(np.mean([rollout.episode_cost[0] - limit[0] for rollout, limit in pairs]))
        step = self._meta_step(inner_data, adapted_rollouts, meta_rollouts, outer_excess)

        violating = sum(bool(np.any(r.episode_cost > limit)) for r, limit in zip(meta_rollouts, limits, strict=True))
        self.logger.record("meta/violating_tasks", violating)
        self._record_rollouts(meta_rollouts, adapted_rollouts)
        self.logger.record("meta/adaptation_kl", float(np.mean(inner_kls)))
        # the inner CPO steps' duals: nu* (the cost multiplier, "u" as A^s's) and lambda* (the KL multiplier)
        self.logger.record("meta/u_mean", float(np.mean([s.lagrange_cost for s in steps])))
        self.logger.record("meta/cpo_lagrange_kl", float(np.mean([s.lagrange_kl for s in steps])))
        self.logger.record("meta/cpo_both_active", sum(s.case == "both_active" for s in steps))
        self.logger.record("meta/cpo_recovery", sum(s.case == "recovery" for s in steps))
        self.logger.record("meta/cpo_predicted_cost_change", float(np.mean([s.predicted_cost_change for s in steps])))
        if isinstance(step, ConstrainedStepResult):
            # the outer CPO step under the TRPO step's keys, then its case, duals and cost-surrogate change
            self.logger.record("train/is_line_search_success", int(step.success))
            self.logger.record("train/kl", step.kl)
            self.logger.record("train/improvement", step.improvement)
            self.logger.record("train/gradient_norm", step.gradient_norm)
            self.logger.record("meta/cost_step", int(step.cpo is not None and step.cpo.case == "recovery"))
            self.logger.record("train/outer_cost_excess", outer_excess)
            self.logger.record("train/cost_change", step.cost_change)
            self.logger.record("train/cost_gradient_norm", step.cost_gradient_norm)
            if step.cpo is not None:
                self.logger.record("train/cpo_case", _CASE_CODES[step.cpo.case])
                self.logger.record("train/cpo_lagrange_kl", step.cpo.lagrange_kl)
                self.logger.record("train/cpo_lagrange_cost", step.cpo.lagrange_cost)
        else:
            self._record_trust_region_step(step)
        self.logger.record("time/meta_step_seconds", time.time() - meta_start)
        return True

    def _unit_inner_step(
        self, task_index: int, task: Task, cost_limit: np.ndarray, *, callback: BaseCallback
    ) -> tuple[RolloutData, RolloutData, CPOStepResult, float] | None:
        """
        One task of a meta-iteration: a rollout of pi_phi, the CPO step theta' from phi on it and a rollout of
        pi_theta' on the same task.

        :return: (pi_phi's rollout, pi_theta''s rollout, the CPO step, E_s[KL(pi_phi || pi_theta')]), or None if a
            callback stopped training
        """
        meta_rollout = self._collect(self.policy, task, callback, self.policy.optimizer)
        if meta_rollout is None:
            return None
        data = self._inner_data(meta_rollout, self.policy, cost_limit)
        self.adapted_policy.load_state_dict(self.policy.state_dict())
        step = self.adapt(self.adapted_policy, data)
        inner_kl = mean_kl(self.policy, self.adapted_policy, data.observations)
        adapted_rollout = self._collect(self.adapted_policy, task, callback, self.policy.optimizer)
        return None if adapted_rollout is None else (meta_rollout, adapted_rollout, step, inner_kl)

    def _meta_step(
        self,
        inner_data: list[CPOData],
        adapted_rollouts: list[RolloutData],
        meta_rollouts: list[RolloutData],
        outer_excess: float = 0.0,
    ) -> TrustRegionResult | ConstrainedStepResult:
        """
        The outer step on phi, through the inner CPO step; trust region on the pre-update policy pi_phi.

        :param outer_excess: c of the outer constraint (``meta_step="cpo"``): mean over tasks of Jc(pi_theta') - d
        """
        post_samples = []
        for rollout in adapted_rollouts:
            batch = rollout.to_batch(self.device)
            cost_advantages = rollout.horizon * rollout.cost_advantages[:, 0]  # episode units, as the inner step's b
            post_samples.append(
                PostSamples(
                    batch.observations,
                    batch.actions,
                    self._reward_advantages(rollout),
                    cost_advantages=th.as_tensor(cost_advantages, dtype=th.float32, device=self.device),
                )
            )
        surrogate = MetaCPOSurrogate(
            self.policy,
            inner_data,
            post_samples,
            self.inner_kl,
            self.inner_cg_max_steps,
            self.cg_damping,
            first_order=self.meta_gradient == "first_order",
        )
        if self.meta_step == "cpo":
            return constrained_trust_region_step(
                self.policy.actor_parameters(),
                surrogate.objectives,
                MeanKL(self.policy, self._trust_region_states(meta_rollouts)),
                cost_excess=outer_excess,
                max_kl=self.target_kl,
                cg_max_steps=self.cg_max_steps,
                cg_damping=self.cg_damping,
                shrinking_factor=self.line_search_shrinking_factor,
                max_backtracks=self.line_search_max_iter,
            )
        return self._trust_region_step(surrogate, meta_rollouts)

    # ------------------------------------------------------------------ meta-test
    @parallel_meta_test
    def meta_test(
        self,
        n_tasks: int = 20,
        n_adapt_steps: int = 20,
        tasks: list[Task] | None = None,
        seed: int = 10_000,
        save_path: str | pathlib.Path | None = None,
        verbose: int = 0,
        n_workers: int | None = None,
        n_eval_episodes: int = 10,
        eval_env: VecEnv | None = None,
        eval_confidence: float = 0.9,
        eval_cost_range: float | None = None,
    ) -> MetaTestReport:
        """
        Adapt the meta-policy to unseen tasks by CPO: pi_[0] = pi_phi, pi_[k+1] = pi_[k] + the CPO step on a rollout
        of pi_[k] (KL radius ``inner_kl``, no graph), recording the episode return and cost of every pi_[k]. The
        meta-policy is left untouched.

        :param n_tasks: number of test tasks (ignored when ``tasks`` is given)
        :param n_adapt_steps: K, CPO steps per task
        :param tasks: explicit test tasks
        :param seed: seed of the test-task draw (distinct from training draws) and of the rollouts
        :param save_path: if given, write ``<save_path>.csv/.json`` and ``<save_path>.png``
        :param verbose: print one line per task
        :param n_workers: run the test tasks on this many Ray workers (None: the model's ``n_workers``); the
            report is the same for any number (each task's chain is seeded from ``seed`` and its index)
        :param n_eval_episodes: independent episodes of every explored policy (stochastic actions), besides its
            training rollout; 0 skips them. The same measurement as SafeMetaDual's, so that the four algorithms'
            anytime safety is compared on equal terms (Section 5.1)
        :param eval_env: the VecEnv of those episodes (default: a new one of the training env's registered id)
        :param eval_confidence: confidence level of the DKW upper bound of each explored policy's expected episode
            cost (reported only with ``eval_cost_range``)
        :param eval_cost_range: R, the largest possible episode cost, for that bound (default: no bound)
        :return: the anytime-safety report
        """
        self._check_meta_test(n_adapt_steps)
        tasks = tasks if tasks is not None else self.sample_tasks(n_tasks, seed=seed)
        policy = copy.deepcopy(self.policy)

        def adaptation_chain(task: Task, cost_limit: np.ndarray) -> Iterator[RolloutData]:
            policy.load_state_dict(self.policy.state_dict())
            for step in range(n_adapt_steps + 1):
                rollout = self._collect(policy, task, callback)  # no critic refit: the critics are phi's
                assert rollout is not None  # the meta-test callback never stops
                yield rollout
                if step < n_adapt_steps:
                    self.adapt(policy, self._inner_data(rollout, policy, cost_limit))

        evaluate = self._independent_evaluation(
            lambda: policy, n_eval_episodes, eval_env, eval_confidence, eval_cost_range, seed
        )
        with self._off_the_record(seed) as callback:
            return self._run_meta_test(
                tasks, n_adapt_steps, adaptation_chain, save_path, verbose, evaluate, n_eval_episodes, eval_confidence
            )

    # ------------------------------------------------------------------ SB3 plumbing
    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "adapted_policy"]
