"""
Wall time of SafeMetaDual with its tasks on Ray workers (``n_workers=N``) against the same model in one process
(``n_workers=0``), measured side by side in one run, and the bytes that cross process boundaries.

Usage::

    python benchmarks/bench_distributed.py                       # HalfCheetahVel: 2 tasks x 2 rollouts x 8 envs x 1000 steps
    python benchmarks/bench_distributed.py --test-tasks 20 --adapt-steps 2 --repeats 3
    python benchmarks/bench_distributed.py --env SafeMetaPointNav-v0 --meta-batch-size 10 --n-steps 200

Two models with the same seed run the same meta-iterations, one in-process and one on ``--workers`` Ray actors
of a local Ray instance (``num_cpus = --workers``, 127.0.0.1 only); after a warm-up iteration each (which starts
the workers: timed and printed separately), ``--repeats`` rounds time one meta-iteration of each, alternately, so
that both see the same machine load. Then one meta-test of ``--test-tasks`` tasks each. Printed: the wall times,
their ratio (workers / in-process; median over rounds), the bytes sent to and received from the workers per
meta-iteration and meta-test, and whether both models still have bit-identical parameters.

The limit is out of reach by default (``--cost-limit 1e9``): every meta-iteration takes the full path (for each
task a rollout of pi_phi, A^s, a rollout of the adapted policy; then the TRPO step on phi).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

# Ray reads this when it is imported: every Ray process on 127.0.0.1 (the project machines; see
# docs/guide/distributed.md). Set before anything imports Ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

import sb3_safemeta.envs  # noqa: F401  (registers the task families)
from sb3_safemeta import SafeMetaDual
from sb3_safemeta.common.callbacks import MetaIterationCallback
from sb3_safemeta.common.distributed import init_ray


class OneMetaIteration(MetaIterationCallback):
    """Stops ``learn`` after exactly one meta-iteration."""

    def _on_meta_iteration_end(self) -> bool:
        return False


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="SafeMetaHalfCheetahVel-v0", help="registered task-family id")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (and CPUs of the local Ray instance)")
    parser.add_argument("--meta-batch-size", type=int, default=2, help="tasks per meta-iteration")
    parser.add_argument("--n-envs", type=int, default=8, help="environments per rollout (DummyVecEnv)")
    parser.add_argument("--n-steps", type=int, default=1000, help="steps per environment per rollout")
    parser.add_argument("--cost-limit", type=float, default=1e9, help="cost limit d")
    parser.add_argument("--repeats", type=int, default=2, help="timed meta-iterations per model (after one warm-up)")
    parser.add_argument("--test-tasks", type=int, default=20, help="tasks of the timed meta-test (0: no meta-test)")
    parser.add_argument("--adapt-steps", type=int, default=2, help="adaptation steps per test task")
    parser.add_argument("--test-repeats", type=int, default=2, help="timed meta-tests per model (alternately)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="meta_test's n_eval_episodes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def megabytes(value: float) -> str:
    return f"{value / 1e6:.2f} MB"


def main() -> None:
    args = parse_args()
    th.set_num_threads(args.threads)
    init_ray(None, num_cpus=args.workers)

    def build(n_workers: int) -> SafeMetaDual:
        return SafeMetaDual(
            "MlpPolicy",
            make_vec_env(args.env, n_envs=args.n_envs, seed=args.seed),
            cost_limit=args.cost_limit,
            meta_batch_size=args.meta_batch_size,
            n_steps=args.n_steps,
            seed=args.seed,
            n_workers=n_workers,
        )

    models = {"in-process": build(0), f"{args.workers} workers": build(args.workers)}
    names = list(models)
    steps = args.meta_batch_size * 2 * args.n_steps * args.n_envs
    load = os.getloadavg()
    print(
        f"env {args.env}: {args.meta_batch_size} tasks x 2 rollouts x {args.n_steps} steps x {args.n_envs} envs = {steps}"
        f" steps per meta-iteration; torch threads {th.get_num_threads()}, cpu count {os.cpu_count()}, load average"
        f" {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, Python {platform.python_version()}, torch {th.__version__},"
        f" {datetime.datetime.now().isoformat(timespec='seconds')}"
    )

    cpu: dict[str, list[float]] = {name: [] for name in names}
    driver_cpu: list[float] = []  # the driver's own CPU seconds with workers
    critical: list[float] = []  # driver + the busiest worker, CPU seconds: the wall time on idle cores

    def one_iteration(model: SafeMetaDual) -> float:
        """:return: wall seconds (CPU seconds of the driver and, with workers, inside the units go to ``cpu``)"""
        start, cpu_start = time.perf_counter(), time.process_time()
        worker_cpu = pool.worker_cpu_seconds if model.n_workers and pool is not None else 0.0
        per_worker = list(pool.cpu_seconds_per_worker) if model.n_workers and pool is not None else []
        model.learn(100 * steps, reset_num_timesteps=False, callback=OneMetaIteration())
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        if model.n_workers and pool is not None:
            driver_cpu.append(cpu_seconds)
            busiest = max(now - then for now, then in zip(pool.cpu_seconds_per_worker, per_worker, strict=True))
            critical.append(cpu_seconds + busiest)
            cpu_seconds += pool.worker_cpu_seconds - worker_cpu
        cpu[names[1] if model.n_workers else names[0]].append(cpu_seconds)
        return seconds

    pool = None

    warm = {name: one_iteration(model) for name, model in models.items()}
    pool = models[names[1]]._task_pool
    assert pool is not None
    for values in (*cpu.values(), driver_cpu, critical):
        values.clear()
    print(f"warm-up iteration (starts the workers): {names[0]} {warm[names[0]]:.2f} s, {names[1]} {warm[names[1]]:.2f} s")
    times: dict[str, list[float]] = {name: [] for name in names}
    sent, received = [], []
    for round_index in range(1, args.repeats + 1):
        for name, model in models.items():
            before = (pool.bytes_sent, pool.bytes_received)
            times[name].append(one_iteration(model))
            if model is models[names[1]]:
                sent.append(pool.bytes_sent - before[0])
                received.append(pool.bytes_received - before[1])
        print(
            f"round {round_index}: {names[0]} {times[names[0]][-1]:.2f} s, {names[1]} {times[names[1]][-1]:.2f} s,"
            f" ratio {times[names[1]][-1] / times[names[0]][-1]:.3f}"
        )
    ratios = [b / a for a, b in zip(times[names[0]], times[names[1]], strict=True)]
    print(
        f"one meta-iteration, median: {names[0]} {statistics.median(times[names[0]]):.2f} s, {names[1]}"
        f" {statistics.median(times[names[1]]):.2f} s, ratio {statistics.median(ratios):.3f} (goal <= 0.6 with 2 workers)"
    )
    share = {name: statistics.median(c / t for c, t in zip(cpu[name], times[name], strict=True)) for name in names}
    print(
        f"CPU seconds per meta-iteration, median (driver + inside the workers' units): {names[0]}"
        f" {statistics.median(cpu[names[0]]):.2f}, {names[1]} {statistics.median(cpu[names[1]]):.2f}; CPU seconds per"
        f" wall second: {names[0]} {share[names[0]]:.2f}, {names[1]} {share[names[1]]:.2f}"
        " (what the scheduler granted: on a shared machine, Linux shares the CPU between sessions, and the workers are"
        " in the driver's session)"
    )
    in_process_cpu = statistics.median(cpu[names[0]])
    print(
        f"with {names[1]}: driver {statistics.median(driver_cpu):.2f} CPU seconds, driver + busiest worker"
        f" {statistics.median(critical):.2f} (the wall time if every process had a core of its own), against"
        f" {in_process_cpu:.2f} in-process: ratio {statistics.median(critical) / in_process_cpu:.3f}"
    )
    print(
        f"transfer per meta-iteration: sent {megabytes(statistics.median(sent))} (phi to each worker, tasks),"
        f" received {megabytes(statistics.median(received))} (rollouts, adaptation results)"
    )
    state_a, state_b = (model.policy.state_dict() for model in models.values())
    identical = all(th.equal(state_a[key], state_b[key]) for key in state_a)
    print(f"parameters after {models[names[0]].meta_iterations} meta-iterations bit-identical: {identical}")

    if args.test_tasks > 0:
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(1, args.test_repeats + 1):
            order = names if round_index % 2 else names[::-1]  # alternate who goes first
            reports = {}
            for name in order:
                before = (pool.bytes_sent, pool.bytes_received)
                start = time.perf_counter()
                reports[name] = models[name].meta_test(
                    n_tasks=args.test_tasks, n_adapt_steps=args.adapt_steps, n_eval_episodes=args.eval_episodes
                )
                seconds[name].append(time.perf_counter() - start)
                if name == names[1]:
                    transfer = (pool.bytes_sent - before[0], pool.bytes_received - before[1])
            same = all(
                np.array_equal(getattr(reports[names[0]], field), getattr(reports[names[1]], field))
                for field in ("returns", "costs", "eval_returns", "eval_costs")
            )
            print(
                f"meta-test round {round_index} ({args.test_tasks} tasks x {args.adapt_steps + 1} policies,"
                f" {args.eval_episodes} evaluation episodes each): {names[0]} {seconds[names[0]][-1]:.2f} s, {names[1]}"
                f" {seconds[names[1]][-1]:.2f} s, ratio {seconds[names[1]][-1] / seconds[names[0]][-1]:.3f}; sent"
                f" {megabytes(transfer[0])}, received {megabytes(transfer[1])}; identical report: {same}"
            )
        ratios = [b / a for a, b in zip(seconds[names[0]], seconds[names[1]], strict=True)]
        print(f"meta-test, median ratio {statistics.median(ratios):.3f}")
    models[names[1]].close_workers()


if __name__ == "__main__":
    main()
