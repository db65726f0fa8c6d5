"""
The command line of the reproduction::

    python -m sb3_safemeta.reproduce figure1 [--budget small] [--seeds 2] [--algorithms ...] [--out results]

figure1: Half-Cheetah and Point-Circle, the four algorithms (Figure 1); figure2: the computation times of the same
runs, normalized by MetaCPO's (Figure 2); figure4: Humanoid, Hopper, Swimmer, Car-Circle-Hazard, Point-Button
(Figure 4); figure5: their times (Figure 5); figure6: SafeMetaDual with delta in {0, 1, 2, 3} on Half-Cheetah and
Car-Circle-Hazard (Figure 6). Every (algorithm, scenario, seed, delta) is a resumable run under ``<out>/runs``: run the
command again to resume an interrupted one; finished runs are reused (figure2 after figure1 only draws). Writes
``<out>/figureN.png``, ``<out>/figureN.csv`` and ``<out>/figureN_summary.md`` (a table per scenario).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import gymnasium as gym

from sb3_safemeta.reproduce.budgets import BUDGETS, Budget
from sb3_safemeta.reproduce.curves import COLUMNS, collect, merge_rows, read_csv, summary_table, write_csv
from sb3_safemeta.reproduce.figures import normalize_times, plot_curves, plot_times, timing_rows
from sb3_safemeta.reproduce.runs import ALGORITHMS, RunBusyError, RunSpec, run

__all__ = ["FIGURES", "Figure", "exit_with_parent", "main", "specs_of"]


@dataclass(frozen=True)
class Figure:
    """
    :param envs: scenarios (rows of panels)
    :param deltas: values of delta
    :param kind: ``"curves"`` (Figures 1, 4, 6) or ``"times"`` (Figures 2, 5)
    :param by: the column that makes the lines
    :param safemeta_only: SafeMetaDual's runs only (Figure 6)
    """

    envs: tuple[str, ...]
    deltas: tuple[float, ...] = (0.0,)
    kind: str = "curves"
    by: str = "algorithm"
    safemeta_only: bool = False


FIGURE1_ENVS = ("SafeMetaHalfCheetahVel-v0", "SafeMetaPointCircle-v0")
FIGURE4_ENVS = (
    "SafeMetaHumanoidDir-v0",
    "SafeMetaHopperVel-v0",
    "SafeMetaSwimmerNoise-v0",
    "SafeMetaCarCircleHazard-v0",
    "SafeMetaPointButton-v0",
)
FIGURES: dict[str, Figure] = {
    "figure1": Figure(FIGURE1_ENVS),
    "figure2": Figure(FIGURE1_ENVS, kind="times"),
    "figure4": Figure(FIGURE4_ENVS),
    "figure5": Figure(FIGURE4_ENVS, kind="times"),
    "figure6": Figure(
        ("SafeMetaHalfCheetahVel-v0", "SafeMetaCarCircleHazard-v0"), (0.0, 1.0, 2.0, 3.0), by="delta", safemeta_only=True
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sb3_safemeta.reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("figure", choices=list(FIGURES))
    parser.add_argument("--budget", default="small", choices=list(BUDGETS), help="run sizes (paper: Appendix D.2)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per (algorithm, scenario, delta); paper: 5")
    parser.add_argument(
        "--algorithms",
        nargs="+",
        default=list(ALGORITHMS),
        choices=list(ALGORITHMS),
        help="default: the four (figure6: SafeMetaDual)",
    )
    parser.add_argument("--envs", nargs="+", default=None, help="a subset of the figure's scenarios (default: all of them)")
    parser.add_argument("--deltas", nargs="+", type=float, default=None, help="figure6: values of delta (default 0 1 2 3)")
    parser.add_argument("--out", default="results", help="output folder (runs under <out>/runs/<budget>)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes; one torch thread each)")
    parser.add_argument(
        "--ray",
        action="store_true",
        help="run the runs as Ray tasks (one CPU each) on a local Ray instance on 127.0.0.1, or on --ray-address",
    )
    parser.add_argument("--ray-address", default=None, help="with --ray: 'auto' or host:port of a running cluster")
    parser.add_argument("--plot-only", action="store_true", help="draw from the finished runs without running anything")
    parser.add_argument(
        "--merge-csv",
        nargs="+",
        default=[],
        metavar="CSV",
        help="this figure's CSVs written elsewhere (other machines, deleted run folders): their rows are drawn for every"
        " selected run that has no folder under --out (a run under --out wins)",
    )
    parser.add_argument(
        "--redo-meta-test",
        action="store_true",
        help="finished runs whose meta-test was made by other code do it again from their final meta-policy, keeping"
        " their meta-training (the previous report is kept as meta_test_previous.*)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    figure = FIGURES[args.figure]
    if args.envs is not None:
        unknown = [env for env in args.envs if env not in figure.envs]
        if unknown:
            parser.error(f"--envs: {unknown} not in {args.figure}'s scenarios {list(figure.envs)}")
    return args


def specs_of(figure: Figure, envs: list[str], algorithms: list[str], seeds: int, deltas: list[float]) -> list[RunSpec]:
    """:return: the runs of a figure, seed-major (every scenario and algorithm gets its first seed first)"""
    if figure.safemeta_only:
        algorithms = ["SafeMetaDual"]
    return [
        RunSpec(algorithm, env_id, seed, delta)
        for seed in range(seeds)
        for env_id in envs
        for delta in deltas
        for algorithm in algorithms
    ]


def _run_one(spec: RunSpec, budget: Budget, out: str, verbose: int, redo_meta_test: bool = False) -> tuple[RunSpec, str]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        run(spec, budget, out, verbose=verbose, redo_meta_test=redo_meta_test)
        return spec, "done"
    except RunBusyError:
        return spec, "busy"
    except Exception:  # one failed run must not stop the others; reported at the end
        return spec, traceback.format_exc()


def run_all(
    specs: list[RunSpec],
    budget: Budget,
    out: str,
    jobs: int,
    verbose: int,
    ray: bool = False,
    ray_address: str | None = None,
    redo_meta_test: bool = False,
) -> list[tuple[RunSpec, str]]:
    """Run (or resume) every spec; :return: (spec, "done" | "busy" | traceback) per spec"""
    if ray:
        from sb3_safemeta.common.distributed import map_runs

        runs = [
            {
                "spec": spec,
                "budget": budget,
                "out": str(pathlib.Path(out).resolve()),
                "verbose": verbose,
                "redo_meta_test": redo_meta_test,
            }
            for spec in specs
        ]
        return map_runs(_run_one, runs, ray_address=ray_address)
    if jobs == 1:
        return [_run_one(spec, budget, out, verbose, redo_meta_test) for spec in specs]
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, context, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_run_one, spec, budget, out, verbose, redo_meta_test) for spec in specs]
        return [future.result() for future in as_completed(futures)]


def exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """
    Initializer of the ``--jobs`` workers: end this worker once the process that started it is gone. A worker of
    Python's process pool otherwise outlives a parent killed with ``kill PID`` and finishes its run as an orphan, still
    writing into a run directory that a new invocation may want to resume. The run loses nothing: it resumes from its
    last checkpoint, and its lock (:class:`~sb3_safemeta.common.run_dir.RunLock`) is released with the process.

    POSIX: a process whose parent has died is re-parented, so ``os.getppid()`` changes (on Windows it does not, and
    the watch never fires).

    :param parent_pid: the pid of the process that made the pool
    :param poll_seconds: how often the parent is checked
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def cost_limit_of(env_id: str) -> float:
    env = gym.make(env_id)
    try:
        return float(env.unwrapped.default_cost_limit)  # type: ignore[attr-defined]
    finally:
        env.close()


def main(argv: list[str] | None = None) -> pathlib.Path:
    args = parse_args(argv)
    figure, budget = FIGURES[args.figure], BUDGETS[args.budget]
    envs = list(args.envs or figure.envs)
    deltas = list(args.deltas) if args.deltas is not None else list(figure.deltas)
    specs = specs_of(figure, envs, list(args.algorithms), args.seeds, deltas)
    out = pathlib.Path(args.out)
    verbose = 0 if args.quiet else 1
    # read first: a bad file fails before hours of runs, and a --merge-csv may be the figure CSV this call rewrites
    required = ("seconds", "normalized") if figure.kind == "times" else ("step", "return", "max_cost")
    merged = [row for path in args.merge_csv for row in read_csv(path, required)]
    failures = []
    if not args.plot_only:
        start = time.time()
        if args.ray_address is not None and not args.ray:
            raise SystemExit("--ray-address needs --ray")
        results = run_all(specs, budget, str(out), args.jobs, verbose, args.ray, args.ray_address, args.redo_meta_test)
        busy = [spec for spec, status in results if status == "busy"]
        failures = [(spec, status) for spec, status in results if status not in ("done", "busy")]
        for spec, message in failures:
            print(f"FAILED {spec}:\n{message}")
        if busy:
            print(f"{len(busy)} run(s) held by another process, drawn if finished: {busy}")
        if verbose:
            print(f"{args.figure}: {len(specs)} runs, {time.time() - start:.0f} s")
    png, csv_path = out / f"{args.figure}.png", out / f"{args.figure}.csv"
    if figure.kind == "times":
        local = timing_rows(out, budget, specs)
        rows = normalize_times(merge_rows(local, merged, specs))
        write_csv(csv_path, rows, [*COLUMNS[:9], "normalized"])
        plot_times(png, rows, envs, ["SafeMetaDual"] if figure.safemeta_only else list(args.algorithms))
    else:
        local = collect(out, budget, specs)
        rows = merge_rows(local, merged, specs)
        write_csv(csv_path, rows)
        plot_curves(png, rows, envs, {env_id: cost_limit_of(env_id) for env_id in envs}, by=figure.by)
    table = summary_table(out, budget, specs)
    from_csv = sorted({(row["env"], row["algorithm"], row["seed"], row["delta"]) for row in rows[len(local) :]})
    if from_csv:  # the table is made from the run folders' reports, which a CSV does not carry
        table += (
            f"\nDrawn from --merge-csv, not in the tables above ({len(from_csv)} runs): "
            + ", ".join(
                f"{algorithm} on {env_id} (seed {seed}, delta {delta:g})" for env_id, algorithm, seed, delta in from_csv
            )
            + "\n"
        )
    (out / f"{args.figure}_summary.md").write_text(table)
    print(table)
    print(f"wrote {png}, {csv_path} ({len(rows)} rows) and {out / f'{args.figure}_summary.md'}")
    if failures:
        raise SystemExit(f"{len(failures)} run(s) failed")
    return png
