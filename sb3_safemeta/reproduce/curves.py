"""
The runs' results in long format: one row per (algorithm, env, seed, delta, phase, step).

- ``phase = "meta-train"``: ``step`` is the meta-iteration; ``return`` and ``max_cost`` are the mean episode return
  and the maximum episode cost over the validation tasks of the policy adapted ONE step from the meta-policy (the
  paper's meta-training curve); ``seconds`` is the meta-training wall-clock time so far (validation excluded).
- ``phase = "meta-test"``: ``step`` is the adaptation step k (0 = the meta-policy); ``return`` is the mean over the
  test tasks and ``max_cost`` the maximum over them; ``seconds`` is the meta-test wall-clock time per adaptation
  step (total / (tasks x K), rollouts included), the same on every row of a run.

Extra columns: ``mean_cost``, ``cost_limit``, ``violations`` (tasks whose pi_[k] exceeds d), ``n_tasks`` (meta-test);
``return_meta``, ``max_cost_meta`` (the meta-policy itself on the validation tasks; meta-train); ``complete`` (1 if
the run finished).
"""

from __future__ import annotations

import csv
import pathlib
from collections.abc import Iterable
from typing import Any

from sb3_safemeta.reproduce.budgets import Budget
from sb3_safemeta.reproduce.runs import RunSpec, load_report, read_curve, read_state, run_directory

__all__ = ["COLUMNS", "collect", "merge_rows", "read_csv", "summary_table", "write_csv"]

COLUMNS = [
    "algorithm",
    "env",
    "seed",
    "delta",
    "phase",
    "step",
    "return",
    "max_cost",
    "seconds",
    "mean_cost",
    "cost_limit",
    "violations",
    "n_tasks",
    "return_meta",
    "max_cost_meta",
    "eval_return",
    "eval_max_cost",
    "eval_violations",
    "complete",
]


def collect(out: str | pathlib.Path, budget: Budget, specs: Iterable[RunSpec]) -> list[dict[str, Any]]:
    """:return: the long-format rows of every run of ``specs`` that has at least one validation point"""
    rows: list[dict[str, Any]] = []
    for spec in specs:
        directory = run_directory(out, budget, spec)
        state = read_state(directory)
        if state is None:
            continue
        key = {"algorithm": spec.algorithm, "env": spec.env_id, "seed": spec.seed, "delta": spec.delta}
        complete = int(state.get("status") == "done")
        for point in read_curve(directory):
            rows.append(
                {
                    **key,
                    "phase": "meta-train",
                    "step": int(point["meta_iterations"]),
                    "return": point["mean_return"],
                    "max_cost": point["max_cost"],
                    "seconds": point["train_seconds"],
                    "return_meta": point["mean_return_meta"],
                    "max_cost_meta": point["max_cost_meta"],
                    "complete": complete,
                }
            )
        report = load_report(directory)
        if report is None:
            continue
        for row in report.rows():
            rows.append(
                {
                    **key,
                    "phase": "meta-test",
                    "step": row["step"],
                    "return": row["mean_return"],
                    "max_cost": row["max_cost"],
                    "seconds": state["test_seconds_per_step"],
                    "mean_cost": row["mean_cost"],
                    "cost_limit": row["cost_limit"],
                    "violations": row["violations"],
                    "n_tasks": report.n_tasks,
                    # the same policies measured on independent episodes (SafeMetaDual; empty for the others)
                    "eval_return": row.get("eval_mean_return", ""),
                    "eval_max_cost": row.get("eval_max_cost", ""),
                    "eval_violations": row.get("eval_violations", ""),
                    "complete": complete,
                }
            )
    return rows


def write_csv(path: str | pathlib.Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Write ``rows`` (missing values empty) with ``columns`` (default :data:`COLUMNS`)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file_handler:
        writer = csv.DictWriter(file_handler, fieldnames=columns or COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str | pathlib.Path, required: Iterable[str] = ("return", "max_cost")) -> list[dict[str, Any]]:
    """
    Read the rows of a long-format CSV written by :func:`write_csv` (a figure's CSV), typed as :func:`collect` makes
    them: ``seed`` and ``step`` integers, the other numeric columns floats, missing values ``""``.

    :param path: the CSV file
    :param required: columns besides the key and ``phase`` the file must have (those a figure of its kind draws)
    :raises ValueError: the file is not such a CSV (a missing column is named) or a value does not parse
    """
    path = pathlib.Path(path)
    with open(path, newline="") as file_handler:
        reader = csv.DictReader(file_handler)
        missing = [
            column
            for column in ("algorithm", "env", "seed", "delta", "phase", *required)
            if column not in (reader.fieldnames or [])
        ]
        if missing:
            raise ValueError(
                f"{path} is not a long-format figure CSV of this kind: it has no column {missing} (columns:"
                f" {reader.fieldnames}); pass the CSV that this figure's command wrote"
            )
        rows = []
        for line, raw in enumerate(reader, start=2):
            row: dict[str, Any] = dict(raw)
            try:
                row["seed"], row["delta"] = int(raw["seed"]), float(raw["delta"])
                for column, value in raw.items():
                    if column in ("algorithm", "env", "seed", "delta", "phase") or value in ("", None):
                        continue
                    row[column] = int(value) if column in ("step", "complete") else float(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}, line {line}: {error}") from error
            rows.append(row)
    return rows


def merge_rows(rows: list[dict[str, Any]], extra: Iterable[dict[str, Any]], specs: Iterable[RunSpec]) -> list[dict[str, Any]]:
    """
    Add to ``rows`` (the runs found under ``--out``) the rows of ``extra`` (read from figure CSVs, e.g. written on
    other machines, or before run folders were deleted) that belong to a run of ``specs`` with no row in ``rows``: a
    run found under ``--out`` always wins, so a redone run replaces its old CSV rows.

    :return: the merged rows, ``rows`` first
    """

    def key(row: dict[str, Any]) -> tuple[str, str, int, float]:
        return row["algorithm"], row["env"], int(row["seed"]), float(row["delta"])

    wanted = {(spec.algorithm, spec.env_id, spec.seed, float(spec.delta)) for spec in specs}
    present = {key(row) for row in rows}
    return rows + [row for row in extra if key(row) in wanted and key(row) not in present]


def summary_table(out: str | pathlib.Path, budget: Budget, specs: Iterable[RunSpec]) -> str:
    """
    :return: a Markdown table per scenario of the finished runs (mean over seeds): meta-test return of the meta-policy,
        after one step and after the last step; the maximum episode cost over tasks and steps; the fraction of explored
        policies (tasks x steps, pi_[0] included) within d; seconds per meta-iteration, per meta-test step (with its
        rollout) and per adaptation step alone
    """
    import numpy as np

    groups: dict[tuple[str, str, float], list[tuple[Any, dict[str, Any]]]] = {}
    for spec in specs:
        directory = run_directory(out, budget, spec)
        report = load_report(directory)
        if report is not None:
            groups.setdefault((spec.env_id, spec.algorithm, spec.delta), []).append((report, read_state(directory) or {}))
    lines: list[str] = []
    for env_id in dict.fromkeys(key[0] for key in groups):
        lines += [
            f"\n**{env_id}** ({budget.name} budget; mean over seeds, seeds in brackets)\n",
            "| algorithm | delta | return k=0 | k=1 | k=K | max cost (all k) | within d | within d, independent"
            " episodes (max cost) | s / meta-iteration | s / meta-test step | s / adaptation step (no rollout) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (env, algorithm, delta), items in groups.items():
            if env != env_id:
                continue
            returns = np.mean([report.returns.mean(axis=0) for report, _ in items], axis=0)
            max_cost = np.mean([float(report.costs[..., 0].max()) for report, _ in items])
            within = np.mean([report.safe_fraction for report, _ in items])
            per_iteration = np.mean([s["train_seconds"] / max(1, s["meta_iterations"]) for _, s in items])
            per_step = np.mean([s["test_seconds_per_step"] for _, s in items])
            adapt_times = [s["adapt_seconds_per_step"] for _, s in items if "adapt_seconds_per_step" in s]
            per_adapt = f"{np.mean(adapt_times):.2f}" if len(adapt_times) == len(items) else "not recorded"
            measured = [report for report, _ in items if report.eval_safe_fraction is not None]
            independent = (
                f"{np.mean([report.eval_safe_fraction for report in measured]):.0%}"
                f" ({np.mean([float(report.eval_costs[..., 0].max()) for report in measured]):.1f};"
                f" {measured[0].n_eval_episodes} episodes)"
                if len(measured) == len(items)
                else "not measured"
            )
            lines.append(
                f"| {algorithm} ({len(items)}) | {delta:g} | {returns[0]:.1f} | {returns[1]:.1f} | {returns[-1]:.1f} |"
                f" {max_cost:.1f} | {within:.0%} | {independent} | {per_iteration:.1f} | {per_step:.1f} | {per_adapt} |"
            )
    return "\n".join(lines) + "\n"
