"""
The algorithms sb3_safemeta adds to rl-zoo3 and where their default hyperparameter files are. Imports no
rl-zoo3 module, so both :mod:`~sb3_safemeta.zoo.registration` and :mod:`~sb3_safemeta.zoo.exp_manager` use it.
"""

from __future__ import annotations

import pathlib
import site
import sys
import sysconfig

from sb3_safemeta.common.on_policy_cost_algorithm import OnPolicyCostAlgorithm
from sb3_safemeta.maml_cost_penalty import MAMLCostPenalty
from sb3_safemeta.meta_cpo import MetaCPO
from sb3_safemeta.meta_crpo import MetaCRPO
from sb3_safemeta.safe_adapter import SafeAdapter
from sb3_safemeta.safe_meta_dual import SafeMetaDual

__all__ = ["SAFEMETA_ALGOS", "hyperparams_path"]

# name on the rl-zoo3 command line -> algorithm class (the three baselines of Section 6 too)
SAFEMETA_ALGOS: dict[str, type[OnPolicyCostAlgorithm]] = {
    "safemeta": SafeMetaDual,
    "safe_adapter": SafeAdapter,
    "maml_cost_penalty": MAMLCostPenalty,
    "meta_cpo": MetaCPO,
    "meta_crpo": MetaCRPO,
}


def hyperparams_path(algo: str) -> pathlib.Path:
    """
    The default hyperparameter file of one of our algorithms (``--conf-file`` overrides it).

    Looked up, in order: ``<repo>/hyperparams/<algo>.yml`` (source checkout, editable install), then
    ``<prefix>/share/sb3_safemeta/hyperparams/<algo>.yml`` where a wheel install puts them
    (``data_files`` in setup.cfg; prefix is the environment's, or the user base for ``--user``).

    :param algo: a key of :data:`SAFEMETA_ALGOS`
    :return: the path of the yml file
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
