"""
The safe policy adaptation A^s (Section 4.1, Algorithms 1 and 3): the data of one step
(:mod:`~sb3_safemeta.common.adaptation.batch`), the dual solvers (:mod:`~sb3_safemeta.common.adaptation.dual`),
the parametric representation of pi^u (:mod:`~sb3_safemeta.common.adaptation.parametric`) and its
closed-form last-layer fit (:mod:`~sb3_safemeta.common.adaptation.head_fit`).
"""
