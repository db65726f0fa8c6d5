"""
The per-scenario hyper-parameters, one source of truth: the rl-zoo3 yml files of ``hyperparams/``
(``safemeta.yml``, ``safe_adapter.yml``, and one file per baseline: ``maml_cost_penalty.yml``,
``meta_cpo.yml``, ``meta_crpo.yml``), keyed by environment id, with constructor arguments as keys.
rl-zoo3 reads them itself (``python -m rl_zoo3.train --algo safemeta --env <id>``); the main job
(``python -m sb3_safemeta``) and the reproduction command (``python -m sb3_safemeta.reproduce``) read
them through :func:`load_hyperparams`, so that the three routes train with the same values.
"""

from __future__ import annotations

import pathlib
import site
import sys
import sysconfig
from typing import Any

__all__ = ["ZOO_ONLY_KEYS", "hyperparams_path", "load_hyperparams"]

# keys of the yml files that are not constructor arguments: rl-zoo3's (budget, policy class, number of
# environments, normalisation, ...) and ours (the meta-test of ``--optimize``)
ZOO_ONLY_KEYS = (
    "n_timesteps",
    "policy",
    "n_envs",
    "normalize",
    "env_wrapper",
    "frame_stack",
    "callback",
    "vec_env_wrapper",
    "meta_test_kwargs",
)


def hyperparams_path(algo: str) -> pathlib.Path:
    """
    The default hyperparameter file of one of our algorithms (rl-zoo3's ``--conf-file`` overrides it).

    Looked up, in order: ``<repo>/hyperparams/<algo>.yml`` (source checkout, editable install), then
    ``<prefix>/share/sb3_safemeta/hyperparams/<algo>.yml`` where a wheel install puts them
    (``data_files`` in setup.cfg; prefix is the environment's, or the user base for ``--user``).

    :param algo: the file's name without ``.yml``: ``"safemeta"``, ``"safe_adapter"``, ``"maml_cost_penalty"``,
        ``"meta_cpo"`` or ``"meta_crpo"``
    :return: the path of the yml file
    :raises FileNotFoundError: if there is none
    """
    share = pathlib.Path("share", "sb3_safemeta", "hyperparams")
    candidates = [
        pathlib.Path(__file__).resolve().parents[2] / "hyperparams",
        pathlib.Path(sysconfig.get_paths()["data"]) / share,
        pathlib.Path(sys.prefix) / share,
        pathlib.Path(site.getuserbase()) / share,
    ]
    for candidate in candidates:
        if (candidate / f"{algo}.yml").is_file():
            return candidate / f"{algo}.yml"
    raise FileNotFoundError(f"no hyperparameter file {algo}.yml; looked in {[str(c) for c in candidates]}")


def _evaluate(value: str) -> Any:
    """rl-zoo3's convention: dict-valued entries (``policy_kwargs``) are Python expressions in a string, with ``nn``."""
    import torch.nn as nn

    return eval(value, {"nn": nn, "dict": dict})  # the yml files are ours, as rl-zoo3 trusts its own


def load_hyperparams(algo: str, env_id: str, constructor_only: bool = True) -> dict[str, Any]:
    """
    The hyper-parameters of ``algo`` on ``env_id``, as rl-zoo3 reads them (anchors and merges resolved,
    ``policy_kwargs`` evaluated).

    :param algo: the yml file's name (see :func:`hyperparams_path`)
    :param env_id: a key of the file (a registered environment id)
    :param constructor_only: drop the keys that are not constructor arguments (:data:`ZOO_ONLY_KEYS`)
    :return: keyword arguments of the algorithm's constructor (plus, if ``constructor_only=False``, rl-zoo3's keys)
    :raises KeyError: if the file has no entry for ``env_id``
    """
    import yaml  # pyyaml: the "envs" extra (rl-zoo3 needs it too)

    path = hyperparams_path(algo)
    with open(path) as file_handler:
        table = yaml.safe_load(file_handler)
    if env_id not in table:
        known = sorted(key for key in table if key != "default")
        raise KeyError(f"{path} has no entry for env {env_id!r}; it has {known}")
    entry = dict(table[env_id])
    if isinstance(entry.get("policy_kwargs"), str):
        entry["policy_kwargs"] = _evaluate(entry["policy_kwargs"])
    if not constructor_only:
        return entry
    return {key: value for key, value in entry.items() if key not in ZOO_ONLY_KEYS}
