"""
Reproduction of the paper's experiments on its own scenarios (Section 6, Appendix D): one command per figure,
``python -m sb3_safemeta.reproduce {figure1,figure2,figure4,figure5,figure6}`` (docs/results.md).

- :mod:`~sb3_safemeta.reproduce.budgets`: ``smoke``, ``small``, ``paper`` sizes
- :mod:`~sb3_safemeta.reproduce.runs`: one resumable run per (algorithm, scenario, seed, delta)
- :mod:`~sb3_safemeta.reproduce.curves`: the runs' results in long format (CSV)
- :mod:`~sb3_safemeta.reproduce.figures`: the figures
"""

from sb3_safemeta.reproduce.budgets import BUDGETS, Budget
from sb3_safemeta.reproduce.cli import FIGURES, main
from sb3_safemeta.reproduce.runs import ALGORITHMS, RunSpec

__all__ = ["ALGORITHMS", "BUDGETS", "FIGURES", "Budget", "RunSpec", "main"]
