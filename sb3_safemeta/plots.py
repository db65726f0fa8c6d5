"""
Learning curves with cost: reward and episode cost side by side, with the cost limit d as a dashed line, mean and
spread over the runs (seeds) of each algorithm, as OmniSafe's plotter and the paper's Figures 1, 4 and 5 draw them.

    python -m sb3_safemeta.plots --log-folder logs --algos safemeta meta_cpo --envs SafeMetaPointNav-v0 [-o curves.png]

Runs are found under ``--log-folder``:

- rl-zoo3 runs, ``<log-folder>/<algo>/<env>_<id>/``: the cost-aware evaluations ``evaluations.npz`` (x: timesteps;
  reward: mean over the evaluation's episodes / tasks; cost: their MAXIMUM, the quantity anytime safety bounds; d from
  the file), else the training episodes of ``monitor.csv`` (reward ``r`` and ``episode_cost``, a running mean over
  ``--window`` episodes; d from the run's ``config.yml``);
- reproduce runs of the main job (``python -m sb3_safemeta``), any folder with ``run.json`` and ``progress.csv``
  (x: ``time/total_timesteps``; reward: ``meta/adapted_return``; cost: ``meta/adapted_cost_max``; d from
  ``run.json``), labelled ``safemeta`` with the env of their options.

Runs of one (algorithm, env) are put on a common grid of timesteps (up to the shortest run, linear interpolation)
and drawn as their mean with a band of +- one standard deviation (or the min-max range with ``--band range``).
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import yaml

__all__ = ["Curve", "aggregate", "find_runs", "main", "plot_curves"]


@dataclass
class Curve:
    """
    One run's learning curve.

    :param algo: algorithm name
    :param env: environment id
    :param timesteps: x, increasing, (n,)
    :param reward: (n,)
    :param cost: (n,)
    :param cost_limit: d (None if unknown)
    :param source: the file it was read from
    """

    algo: str
    env: str
    timesteps: np.ndarray
    reward: np.ndarray
    cost: np.ndarray
    cost_limit: float | None
    source: pathlib.Path


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    cumulative = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def _zoo_cost_limit(run: pathlib.Path) -> float | None:
    for config in run.glob("*/config.yml"):
        entries = yaml.unsafe_load(config.read_text())
        values = dict(entries) if isinstance(entries, list) else dict(entries or {})
        if "cost_limit" in values:
            return float(np.min(np.atleast_1d(np.asarray(values["cost_limit"], dtype=float))))
    return None


def _read_zoo_run(algo: str, env: str, run: pathlib.Path, source: str, window: int) -> Curve | None:
    evaluations = run / "evaluations.npz"
    if source in ("auto", "eval") and evaluations.is_file():
        data = np.load(evaluations)
        if "costs" in data and len(data["timesteps"]):
            limit = float(np.min(data["cost_limits"])) if "cost_limits" in data else _zoo_cost_limit(run)
            costs = data["costs"][..., 0]
            return Curve(
                algo, env, data["timesteps"].astype(float), data["results"].mean(axis=1), costs.max(axis=1), limit, evaluations
            )
    monitors = sorted(run.glob("*.monitor.csv"))
    if source in ("auto", "monitor") and monitors:
        episodes: list[tuple[float, float, int, float]] = []  # (end time, return, length, cost)
        for monitor in monitors:  # one file per environment: episodes interleaved by their end time
            with open(monitor) as handle:
                rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
            for row in rows:
                if "episode_cost" in row:
                    episodes.append((float(row["t"]), float(row["r"]), int(row["l"]), float(row["episode_cost"])))
        if episodes:
            episodes.sort()
            _, reward, length, cost = (np.array(column) for column in zip(*episodes, strict=True))
            return Curve(
                algo, env, np.cumsum(length).astype(float), _running_mean(reward, window), _running_mean(cost, window),
                _zoo_cost_limit(run), monitors[0],
            )  # fmt: skip
    return None


def _read_progress_run(run: pathlib.Path) -> Curve | None:
    options = json.loads((run / "run.json").read_text()).get("options", {})
    with open(run / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = [("meta/adapted_return", "meta/adapted_cost_max"), ("meta/meta_policy_return", "meta/meta_policy_cost_max")]
    for reward_key, cost_key in columns:
        points = [
            (float(row["time/total_timesteps"]), float(row[reward_key]), float(row[cost_key]))
            for row in rows
            if row.get("time/total_timesteps") and row.get(reward_key) and row.get(cost_key)
        ]
        if points:
            x, reward, cost = (np.array(column) for column in zip(*sorted(points), strict=True))
            limit = options.get("cost_limit")
            return Curve(
                str(options.get("algo", "safemeta")), str(options.get("env", run.name)), x, reward, cost,
                None if limit is None else float(np.min(np.atleast_1d(limit))), run / "progress.csv",
            )  # fmt: skip
    return None


def find_runs(
    log_folder: str | pathlib.Path,
    algos: list[str] | None = None,
    envs: list[str] | None = None,
    source: str = "auto",
    window: int = 20,
) -> list[Curve]:
    """
    :param log_folder: an rl-zoo3 log folder and/or a folder holding reproduce runs (searched recursively)
    :param algos: keep only these algorithms (None: all)
    :param envs: keep only these environments (None: all)
    :param source: ``"auto"`` (evaluations.npz, else monitor.csv), ``"eval"`` or ``"monitor"`` for rl-zoo3 runs
    :param window: episodes of the running mean of monitor curves
    :return: one curve per run found
    """
    root = pathlib.Path(log_folder)
    if not root.is_dir():
        raise FileNotFoundError(f"--log-folder {root} is not a folder")
    curves: list[Curve] = []
    for algo_folder in sorted(path for path in root.iterdir() if path.is_dir()):
        for run in sorted(path for path in algo_folder.iterdir() if path.is_dir()):
            match = re.fullmatch(r"(.+)_(\d+)", run.name)
            if match is None:
                continue
            curve = _read_zoo_run(algo_folder.name, match.group(1), run, source, window)
            if curve is not None:
                curves.append(curve)
    for run_file in sorted(root.rglob("run.json")):
        if (run_file.parent / "progress.csv").is_file():
            curve = _read_progress_run(run_file.parent)
            if curve is not None:
                curves.append(curve)
    return [c for c in curves if (algos is None or c.algo in algos) and (envs is None or c.env in envs)]


def aggregate(curves: list[Curve], n_points: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    :param curves: runs of one (algorithm, env)
    :param n_points: points of the common grid
    :return: the grid (from the latest first point to the earliest last point of the runs), and the rewards and costs
        of every run on it, (n_runs, n_points) each (linear interpolation)
    """
    start = max(float(curve.timesteps[0]) for curve in curves)
    stop = min(float(curve.timesteps[-1]) for curve in curves)
    grid = np.linspace(start, stop, n_points) if stop > start else np.array([stop])
    rewards = np.array([np.interp(grid, curve.timesteps, curve.reward) for curve in curves])
    costs = np.array([np.interp(grid, curve.timesteps, curve.cost) for curve in curves])
    return grid, rewards, costs


def plot_curves(curves: list[Curve], output: str | pathlib.Path, band: str = "std") -> list[str]:
    """
    Draw every (algorithm, env) group: one row per env, reward and cost side by side, the cost limit dashed.

    :param curves: the runs
    :param output: the image file
    :param band: ``"std"`` (mean +- one standard deviation over runs) or ``"range"`` (min to max)
    :return: one summary line per group (final mean reward and cost over runs)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, dict[str, list[Curve]]] = defaultdict(lambda: defaultdict(list))
    for curve in curves:
        groups[curve.env][curve.algo].append(curve)
    envs = sorted(groups)
    figure, axes = plt.subplots(len(envs), 2, figsize=(11, 3.6 * len(envs)), squeeze=False)
    lines = []
    for row, env in enumerate(envs):
        limits = {curve.cost_limit for algo in groups[env] for curve in groups[env][algo] if curve.cost_limit is not None}
        for algo in sorted(groups[env]):
            runs = groups[env][algo]
            grid, rewards, costs = aggregate(runs)
            label = f"{algo} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
            for axis, values in ((axes[row, 0], rewards), (axes[row, 1], costs)):
                mean = values.mean(axis=0)
                low, high = (
                    (mean - values.std(axis=0), mean + values.std(axis=0)) if band == "std" else (values.min(0), values.max(0))
                )
                (line,) = axis.plot(grid, mean, label=label)
                axis.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
            final = rewards[:, -1]
            lines.append(
                f"{env:>28} {algo:>18}: {len(runs)} runs, final reward {final.mean():9.2f} +- {final.std():.2f},"
                f" final cost {costs[:, -1].mean():7.2f} (d = {', '.join(f'{d:g}' for d in sorted(limits)) or '?'})"
            )
        for limit in sorted(limits):
            axes[row, 1].axhline(limit, color="black", linestyle="--", linewidth=1, label=f"cost limit d = {limit:g}")
        axes[row, 0].set_title(f"{env}: reward")
        axes[row, 1].set_title(f"{env}: episode cost")
        for axis in axes[row]:
            axis.set_xlabel("environment steps")
            axis.grid(alpha=0.3)
        axes[row, 1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sb3_safemeta.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("-f", "--log-folder", required=True, help="rl-zoo3 log folder and/or folder of reproduce runs")
    parser.add_argument("--algos", nargs="+", default=None, help="algorithms to draw (default: all found)")
    parser.add_argument("--envs", nargs="+", default=None, help="environments to draw (default: all found)")
    parser.add_argument("--source", choices=["auto", "eval", "monitor"], default="auto", help="curves of rl-zoo3 runs")
    parser.add_argument("--window", type=int, default=20, help="running-mean window of monitor curves (episodes)")
    parser.add_argument("--band", choices=["std", "range"], default="std", help="spread over runs")
    parser.add_argument("-o", "--output", default=None, help="image file (default: <log-folder>/learning_curves.png)")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"argument --window: must be >= 1, got {args.window}")
    curves = find_runs(args.log_folder, args.algos, args.envs, args.source, args.window)
    if not curves:
        parser.error(
            f"no run with costs under {args.log_folder} for algos={args.algos} envs={args.envs} (rl-zoo3 runs need"
            " evaluations.npz from --eval-freq or monitor.csv with episode_cost; reproduce runs run.json + progress.csv)"
        )
    output = args.output or str(pathlib.Path(args.log_folder) / "learning_curves.png")
    for line in plot_curves(curves, output, args.band):
        print(line)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
