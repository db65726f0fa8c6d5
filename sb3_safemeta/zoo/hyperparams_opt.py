"""
Optuna samplers for rl-zoo3's ``--optimize`` (``HYPERPARAMS_SAMPLER``) and their converters (``HYPERPARAMS_CONVERTER``).

Study parameters use the paper's names: ``lambda`` and ``lambda_c`` (KL weights of A^s, Table 2; log scale),
``delta`` (allowable violation, episode-cost units; 0 is strict anytime safety), ``beta`` (dual step
size, log scale), ``n_dual_steps`` (dual iterations) and, for SafeMetaDual, ``target_kl`` (KL bound of
the meta-policy's TRPO step, log scale; the paper uses 1e-3). The converter turns them into the
constructor arguments (``lambda_``, ``lambda_c``, ``delta_c``, ...): rl-zoo3 applies it when a study's trial
is loaded back with ``--storage/--study-name/--trial-id``.
"""

from __future__ import annotations

from typing import Any

import optuna

# search ranges (low, high); lambda and lambda_c span the values of Table 2 (0.2 .. 5) with margin
LAMBDA_RANGE = (0.05, 10.0)
DELTA_RANGE = (0.0, 2.0)
BETA_RANGE = (0.1, 10.0)
N_DUAL_STEPS_RANGE = (5, 40)
TARGET_KL_RANGE = (1e-4, 3e-2)


def convert_safe_adaptation_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    :param sampled_params: ``trial.params`` of a study (names as sampled)
    :return: constructor arguments of SafeMetaDual / SafeAdapter
    """
    renames = {"lambda": "lambda_", "lambda_c": "lambda_c", "delta": "delta_c"}
    return {renames.get(name, name): value for name, value in sampled_params.items()}


def _sample_adaptation(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "lambda": trial.suggest_float("lambda", *LAMBDA_RANGE, log=True),
        "lambda_c": trial.suggest_float("lambda_c", *LAMBDA_RANGE, log=True),
        "delta": trial.suggest_float("delta", *DELTA_RANGE),
        "beta": trial.suggest_float("beta", *BETA_RANGE, log=True),
        "n_dual_steps": trial.suggest_int("n_dual_steps", *N_DUAL_STEPS_RANGE),
    }


def sample_safemeta_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for SafeMetaDual (``--algo safemeta``): the adaptation A^s and the meta-policy's trust region.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of environments (unused)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: constructor arguments
    """
    sampled = _sample_adaptation(trial)
    sampled["target_kl"] = trial.suggest_float("target_kl", *TARGET_KL_RANGE, log=True)
    return convert_safe_adaptation_params(sampled)


def sample_safe_adapter_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for SafeAdapter (``--algo safe_adapter``): the adaptation A^s.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of environments (unused)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: constructor arguments
    """
    return convert_safe_adaptation_params(_sample_adaptation(trial))


# the baselines' own hyper-parameters (their study names are the constructor's)
COST_PENALTY_RANGE = (0.1, 10.0)
INNER_LR_RANGE = (0.01, 1.0)
INNER_KL_RANGE = (1e-3, 5e-2)
ETA_TOL_RANGE = (0.0, 2.0)
META_LR_RANGE = (0.1, 1.0)


def convert_identity(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    :param sampled_params: ``trial.params`` of a study whose parameter names are the constructor's
    :return: the same dictionary (copied)
    """
    return dict(sampled_params)


def sample_maml_cost_penalty_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for MAMLCostPenalty (``--algo maml_cost_penalty``): the penalty weight w (log scale), the inner step
    size alpha (log scale) and the outer KL bound (log scale). The form of the penalty stays the yml's.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of environments (unused)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: constructor arguments
    """
    return {
        "cost_penalty": trial.suggest_float("cost_penalty", *COST_PENALTY_RANGE, log=True),
        "inner_lr": trial.suggest_float("inner_lr", *INNER_LR_RANGE, log=True),
        "target_kl": trial.suggest_float("target_kl", *TARGET_KL_RANGE, log=True),
    }


def sample_meta_cpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for MetaCPO (``--algo meta_cpo``): the KL radius of the inner CPO step and of the outer step (log scale).

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of environments (unused)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: constructor arguments
    """
    return {
        "inner_kl": trial.suggest_float("inner_kl", *INNER_KL_RANGE, log=True),
        "target_kl": trial.suggest_float("target_kl", *TARGET_KL_RANGE, log=True),
    }


def sample_meta_crpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for MetaCRPO (``--algo meta_crpo``): the KL bound of a CRPO step (log scale), CRPO's tolerance eta
    (episode-cost units) and the step of the meta-update towards the running mean.

    :param trial: the Optuna trial
    :param n_actions: action dimension (unused)
    :param n_envs: number of environments (unused)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: constructor arguments
    """
    return {
        "adapt_kl": trial.suggest_float("adapt_kl", *INNER_KL_RANGE, log=True),
        "eta_tol": trial.suggest_float("eta_tol", *ETA_TOL_RANGE),
        "meta_lr": trial.suggest_float("meta_lr", *META_LR_RANGE),
    }


SAFEMETA_SAMPLERS = {
    "safemeta": sample_safemeta_params,
    "safe_adapter": sample_safe_adapter_params,
    "maml_cost_penalty": sample_maml_cost_penalty_params,
    "meta_cpo": sample_meta_cpo_params,
    "meta_crpo": sample_meta_crpo_params,
}
SAFEMETA_CONVERTERS = {
    "safemeta": convert_safe_adaptation_params,
    "safe_adapter": convert_safe_adaptation_params,
    "maml_cost_penalty": convert_identity,
    "meta_cpo": convert_identity,
    "meta_crpo": convert_identity,
}
