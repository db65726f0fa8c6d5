"""
The figures of Section 6 / Appendix D.3 drawn from the long-format rows of :mod:`sb3_safemeta.reproduce.curves`.

- :func:`plot_curves` (Figures 1, 4, 6): per scenario a row of four panels: meta-training reward and maximum cost
  (x: meta-iteration; the policy adapted one step from the meta-policy on the validation tasks), meta-test reward
  and maximum cost (x: adaptation step), the limit d dashed; the mean over seeds and a band (min to max over seeds).
  Lines are the algorithms, or the values of delta (Figure 6).
- :func:`timing_rows` / :func:`plot_times` (Figures 2, 5): time per meta-iteration and per meta-test adaptation
  step of each algorithm, normalized by MetaCPO's (mean over seeds), from the same runs.
"""

from __future__ import annotations

import pathlib
from collections import defaultdict
from typing import Any

import numpy as np

from sb3_safemeta.reproduce.budgets import Budget
from sb3_safemeta.reproduce.runs import RunSpec, read_state, run_directory

__all__ = ["normalize_times", "plot_curves", "plot_times", "timing_rows"]

REFERENCE = "MetaCPO"


def _matplotlib() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    path: str | pathlib.Path, rows: list[dict[str, Any]], envs: list[str], cost_limits: dict[str, float], by: str = "algorithm"
) -> None:
    """
    :param path: the image file
    :param rows: long-format rows
    :param envs: the scenarios, one row of panels each (in this order)
    :param cost_limits: d of each scenario (the dashed line)
    :param by: the column that makes the lines (``"algorithm"`` or ``"delta"``)
    """
    plt = _matplotlib()
    figure, axes = plt.subplots(len(envs), 4, figsize=(17, 3.4 * len(envs)), squeeze=False)
    titles = ("Meta-training: reward", "Meta-training: max cost", "Meta-test: reward", "Meta-test: max cost")
    every_label = sorted({row[by] for row in rows}, key=str)  # one color per algorithm (delta) in every row
    for row_index, env_id in enumerate(envs):
        panels = axes[row_index]
        labels = sorted({row[by] for row in rows if row["env"] == env_id}, key=str)
        for label in labels:
            color = f"C{every_label.index(label)}"
            name = f"delta = {label:g}" if by == "delta" else str(label)
            for phase, (reward_axis, cost_axis) in (("meta-train", panels[:2]), ("meta-test", panels[2:])):
                selected = [row for row in rows if row["env"] == env_id and row[by] == label and row["phase"] == phase]
                if not selected:
                    continue
                per_step: dict[int, dict[str, list[float]]] = defaultdict(lambda: {"return": [], "max_cost": []})
                for row in selected:
                    per_step[int(row["step"])]["return"].append(float(row["return"]))
                    per_step[int(row["step"])]["max_cost"].append(float(row["max_cost"]))
                steps = np.array(sorted(per_step))
                n_seeds = len({row["seed"] for row in selected})
                for axis, key in ((reward_axis, "return"), (cost_axis, "max_cost")):
                    values = [per_step[step][key] for step in steps]
                    mean = np.array([np.mean(v) for v in values])
                    low, high = np.array([np.min(v) for v in values]), np.array([np.max(v) for v in values])
                    axis.plot(
                        steps, mean, color=color, label=f"{name} ({n_seeds} seed{'s' if n_seeds > 1 else ''})", marker="."
                    )
                    axis.fill_between(steps, low, high, color=color, alpha=0.15)
                # the same policies' maximum cost on independent episodes (SafeMetaDual's meta-test): dotted
                measured = [row for row in selected if phase == "meta-test" and row.get("eval_max_cost") not in ("", None)]
                if measured and len(measured) == len(selected):
                    by_step: dict[int, list[float]] = defaultdict(list)
                    for row in measured:
                        by_step[int(row["step"])].append(float(row["eval_max_cost"]))
                    cost_axis.plot(
                        steps, [np.mean(by_step[step]) for step in steps], color=color, linestyle=":",
                        label=f"{name}, independent episodes",
                    )  # fmt: skip
        for column, axis in enumerate(panels):
            axis.set_title(f"{env_id}\n{titles[column]}", fontsize="small")
            axis.set_xlabel("meta-iteration" if column < 2 else "adaptation step k")
            axis.set_ylabel("average episode reward" if column % 2 == 0 else "maximum episode cost")
            if column % 2 == 1 and env_id in cost_limits:
                axis.axhline(cost_limits[env_id], color="black", linestyle="--", label="d")
        panels[0].legend(fontsize="x-small", loc="best")
        panels[3].legend(fontsize="x-small", loc="best")
    figure.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


# the bar groups of Figure 2 and 5: phase -> label
TIME_PHASES = {
    "meta-train": "meta-training\n(per iteration)",
    "meta-test": "meta-test step\n(with its rollout)",
    "adaptation": "adaptation step\n(computation only)",
}


def timing_rows(out: str | pathlib.Path, budget: Budget, specs: list[RunSpec]) -> list[dict[str, Any]]:
    """
    :return: per finished run up to three rows: ``phase="meta-train"`` (``seconds`` per meta-iteration, validation
        excluded), ``phase="meta-test"`` (``seconds`` per adaptation step, rollouts included) and
        ``phase="adaptation"`` (``seconds`` per adaptation step without its rollout: the algorithm's own computation;
        absent for runs made before it was recorded); ``normalized`` divides by the mean of MetaCPO's runs on the
        same scenario (empty when it has none)
    """
    rows: list[dict[str, Any]] = []
    for spec in specs:
        state = read_state(run_directory(out, budget, spec))
        if state is None or state.get("status") != "done":
            continue
        key = {"algorithm": spec.algorithm, "env": spec.env_id, "seed": spec.seed, "delta": spec.delta}
        per_iteration = float(state["train_seconds"]) / max(1, int(state["meta_iterations"]))
        rows.append({**key, "phase": "meta-train", "step": int(state["meta_iterations"]), "seconds": per_iteration})
        rows.append({**key, "phase": "meta-test", "step": "", "seconds": float(state["test_seconds_per_step"])})
        if "adapt_seconds_per_step" in state:
            rows.append({**key, "phase": "adaptation", "step": "", "seconds": float(state["adapt_seconds_per_step"])})
    return normalize_times(rows)


def normalize_times(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    Set ``normalized`` of every timing row, in place: its ``seconds`` divided by the mean of MetaCPO's rows of the
    same scenario and phase (``""`` where there is none). Recomputed after rows of other sources are merged in.

    :return: ``rows``
    """
    for row in rows:
        reference = [
            float(r["seconds"])
            for r in rows
            if r["algorithm"] == REFERENCE and r["env"] == row["env"] and r["phase"] == row["phase"]
        ]
        row["normalized"] = float(row["seconds"]) / float(np.mean(reference)) if reference else ""
    return rows


def plot_times(path: str | pathlib.Path, rows: list[dict[str, Any]], envs: list[str], algorithms: list[str]) -> None:
    """
    Bar chart per scenario (Figure 2): meta-training time per iteration, meta-test time per adaptation step with its
    rollout, and the adaptation step alone, normalized by MetaCPO's.
    """
    plt = _matplotlib()
    figure, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 3.6), squeeze=False)
    width = 0.8 / max(1, len(algorithms))
    for axis, env_id in zip(axes[0], envs, strict=True):
        normalized = any(row["normalized"] != "" for row in rows if row["env"] == env_id)
        column = "normalized" if normalized else "seconds"
        for index, algorithm in enumerate(algorithms):
            for position, phase in enumerate(TIME_PHASES):
                values = [
                    float(r[column])
                    for r in rows
                    if r["env"] == env_id and r["algorithm"] == algorithm and r["phase"] == phase
                ]
                if not values:
                    continue
                x = position + (index - (len(algorithms) - 1) / 2) * width
                axis.bar(x, np.mean(values), width, color=f"C{index}", label=algorithm if position == 0 else None)
                if len(values) > 1:
                    axis.errorbar(x, np.mean(values), yerr=np.std(values), color="black", capsize=2)
        axis.set_xticks(range(len(TIME_PHASES)), list(TIME_PHASES.values()))
        axis.set_ylabel(f"time / {REFERENCE}'s" if normalized else "seconds (no MetaCPO run to normalize by)")
        axis.set_title(env_id, fontsize="small")
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axis.legend(unique.values(), unique.keys(), fontsize="x-small")
    figure.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
