"""
Diagnosis of A^s where costs are rare (issue "Anytime safety where costs are rare").

For the navigation task families it measures many ONE-STEP adaptations pi_0 -> A^s(pi_0) from a
meta-policy and records, per step: the episode cost of pi_0 and of the adapted policy measured by
independent stochastic episodes (not the rollout the step was computed from), the KL of the step, the
rollout size (episodes), the rollout's own estimate of Jc(pi_0), the multiplier u* and whether the
step was a recovery step. Rows go to ``<out>/<env>/steps.csv`` as they are measured (the run resumes
where it stopped: rows already in the CSV are skipped), and ``<out>/rare_cost.png`` plots the cost
change against the KL and the rollout estimate against the independent one.

    OMP_NUM_THREADS=1 python benchmarks/diagnose_rare_cost.py --out runs/diagnose_rare_cost \
        [--envs SafeMetaPointCircle-v0 SafeMetaCarCircleHazard-v0 SafeMetaPointButton-v0] \
        [--meta-iterations 10] [--tasks 8] [--eval-episodes 20] [--configs 1,10,4 1,10,12 5,50,4 20,200,4]

A config is ``lambda,lambda_c,rollout_episodes[,key=value...]`` (extra SafeAdapter keyword arguments,
e.g. ``cost_confidence=0.9``). The meta-policy of each family is trained once with the main job's
settings (SafeMetaDual, 4 envs x 500 steps, 5 tasks per meta-iteration; checkpointed and resumed) and
saved as ``<out>/<env>/meta_policy.zip``; ``--meta-policy`` uses a given zip instead.

Only the public API is used: ``SafeMetaDual``, ``SafeAdapter``, ``evaluate_policy_cost`` and the
registered environments of ``sb3_safemeta.envs``.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import time
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

import sb3_safemeta.envs  # noqa: F401  (registers the task families)
from sb3_safemeta.common.callbacks import MetaCheckpointCallback, StopTrainingOnMetaIterations
from sb3_safemeta.common.evaluation import evaluate_policy_cost
from sb3_safemeta.safe_adapter import SafeAdapter
from sb3_safemeta.safe_meta_dual import SafeMetaDual

NAVIGATION = ["SafeMetaPointCircle-v0", "SafeMetaCarCircleHazard-v0", "SafeMetaPointButton-v0"]
N_ENVS = 4
HORIZON = 500
FIELDS = [
    "env",
    "config",
    "task",
    "repeat",
    "lambda",
    "lambda_c",
    "rollout_episodes",
    "rollout_cost",
    "rollout_cost_max",
    "cost_before",
    "cost_before_max",
    "cost_before_hit",
    "cost_after",
    "cost_after_max",
    "cost_after_hit",
    "return_before",
    "return_after",
    "kl",
    "u",
    "recovery",
    "surrogate_cost",
    "cost_limit",
    "seconds",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=NAVIGATION)
    parser.add_argument("--out", default="runs/diagnose_rare_cost")
    parser.add_argument("--meta-iterations", type=int, default=10, help="meta-training of each family's meta-policy")
    parser.add_argument("--meta-policy", default=None, help="use this zip (one env only) instead of training")
    parser.add_argument("--tasks", type=int, default=8, help="test tasks per family (sample_tasks(n, 10000))")
    parser.add_argument("--repeats", type=int, default=1, help="independent one-step adaptations per task and config")
    parser.add_argument("--eval-episodes", type=int, default=20, help="independent episodes per measured policy")
    parser.add_argument("--configs", nargs="+", default=["1,10,4", "1,10,12", "5,50,4", "20,200,4"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot-only", action="store_true", help="only redraw the plot from the CSVs")
    return parser.parse_args(argv)


def parse_config(text: str) -> tuple[float, float, int, dict[str, Any]]:
    parts = text.split(",")
    extra: dict[str, Any] = {}
    for item in parts[3:]:
        key, value = item.split("=")
        try:
            extra[key] = int(value) if value.isdigit() else float(value)
        except ValueError:
            extra[key] = value
    return float(parts[0]), float(parts[1]), int(parts[2]), extra


def meta_policy(env_id: str, folder: pathlib.Path, iterations: int, seed: int) -> pathlib.Path:
    """Train (or resume, or reuse) the family's meta-policy with the main job's settings."""
    path = folder / "meta_policy.zip"
    if path.exists():
        return path
    env = make_vec_env(env_id, n_envs=N_ENVS, seed=seed)
    checkpoint = MetaCheckpointCallback(1, folder / "checkpoints")
    if checkpoint.latest_path.exists():
        model = SafeMetaDual.load(checkpoint.latest_path, env=env)
        print(f"{env_id}: resuming meta-training after {model.meta_iterations} meta-iterations", flush=True)
    else:
        cost_limit = float(env.get_attr("default_cost_limit", indices=[0])[0])
        model = SafeMetaDual(
            "MlpPolicy",
            env,
            cost_limit=cost_limit,
            lambda_=1.0,
            lambda_c=10.0,
            meta_batch_size=5,
            n_steps=HORIZON,
            seed=seed,
            policy_kwargs=dict(log_std_init=-0.5),
        )
    steps = iterations * 5 * 2 * HORIZON * N_ENVS
    start = time.time()
    model.learn(
        total_timesteps=steps,
        callback=[checkpoint, StopTrainingOnMetaIterations(iterations)],
        reset_num_timesteps=model.meta_iterations == 0,
    )
    model.save(path)
    print(f"{env_id}: meta-policy after {model.meta_iterations} meta-iterations, {time.time() - start:.0f} s", flush=True)
    return path


def done_keys(path: pathlib.Path) -> set[tuple[str, str, str]]:
    if not path.exists():
        return set()
    with open(path, newline="") as handle:
        return {(row["config"], row["task"], row["repeat"]) for row in csv.DictReader(handle)}


def measure(policy: Any, env: Any, n_episodes: int) -> tuple[float, float, float, float]:
    """:return: mean cost, max cost, fraction of episodes with cost > 0, mean return (stochastic policy)"""
    returns, costs = evaluate_policy_cost(policy, env, n_eval_episodes=n_episodes, deterministic=False)
    return float(costs[:, 0].mean()), float(costs[:, 0].max()), float((costs[:, 0] > 0).mean()), float(returns.mean())


def diagnose(env_id: str, args: argparse.Namespace) -> None:
    folder = pathlib.Path(args.out) / env_id
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = (
        pathlib.Path(args.meta_policy) if args.meta_policy else meta_policy(env_id, folder, args.meta_iterations, args.seed)
    )
    csv_path = folder / "steps.csv"
    done = done_keys(csv_path)
    new_file = not csv_path.exists()
    handle = open(csv_path, "a", newline="")
    writer = csv.DictWriter(handle, fieldnames=FIELDS)
    if new_file:
        writer.writeheader()
    eval_env = make_vec_env(env_id, n_envs=N_ENVS, seed=args.seed + 777)
    tasks = SafeMetaDual.load(zip_path, env=eval_env).sample_tasks(args.tasks, seed=10_000)
    before_cache: dict[int, tuple[float, float, float, float]] = {}
    for config in args.configs:
        lambda_, lambda_c, episodes, extra = parse_config(config)
        train_env = make_vec_env(env_id, n_envs=N_ENVS, seed=args.seed + 1)
        n_steps = int(np.ceil(episodes / N_ENVS)) * HORIZON
        for index, task in enumerate(tasks):
            for repeat in range(args.repeats):
                if (config, str(index), str(repeat)) in done:
                    continue
                start = time.time()
                adapter = SafeAdapter.from_meta(
                    zip_path,
                    train_env,
                    lambda_=lambda_,
                    lambda_c=lambda_c,
                    n_steps=n_steps,
                    seed=args.seed + 100 * repeat + index,
                    **extra,
                )
                train_env.env_method("set_task", task)
                eval_env.env_method("set_task", task)
                if index not in before_cache:
                    eval_env.seed(args.seed + 1000 + index)
                    before_cache[index] = measure(adapter.policy, eval_env, args.eval_episodes)
                cost_before, max_before, hit_before, return_before = before_cache[index]
                chain = adapter.adaptation_chain(0)
                rollout = next(chain)
                for _ in chain:
                    pass
                result = adapter.adapt(rollout)
                eval_env.seed(args.seed + 2000 + 31 * index + repeat)
                cost_after, max_after, hit_after, return_after = measure(adapter.policy, eval_env, args.eval_episodes)
                row = {
                    "env": env_id,
                    "config": config,
                    "task": index,
                    "repeat": repeat,
                    "lambda": lambda_,
                    "lambda_c": lambda_c,
                    "rollout_episodes": len(rollout.episode_lengths),
                    "rollout_cost": float(rollout.episode_cost[0]),
                    "rollout_cost_max": float(rollout.episode_costs[:, 0].max())
                    if len(rollout.episode_costs)
                    else float("nan"),
                    "cost_before": cost_before,
                    "cost_before_max": max_before,
                    "cost_before_hit": hit_before,
                    "cost_after": cost_after,
                    "cost_after_max": max_after,
                    "cost_after_hit": hit_after,
                    "return_before": return_before,
                    "return_after": return_after,
                    "kl": result.kl,
                    "u": float(result.u[0]),
                    "recovery": int(result.recovery),
                    "surrogate_cost": float(result.surrogate_cost[0]),
                    "cost_limit": float(np.ravel(adapter.cost_limit)[0]),
                    "seconds": round(time.time() - start, 1),
                }
                writer.writerow(row)
                handle.flush()
                print(
                    f"{env_id} [{config}] task {index}.{repeat}: cost {cost_before:.1f} -> {cost_after:.1f}"
                    f" (rollout {row['rollout_cost']:.1f} on {row['rollout_episodes']} episodes), KL {result.kl:.4f},"
                    f" u {row['u']:.3g}{' recovery' if result.recovery else ''}, {row['seconds']} s",
                    flush=True,
                )
    handle.close()


def plot(out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for path in sorted(out.glob("*/steps.csv")):
        with open(path, newline="") as handle:
            rows += list(csv.DictReader(handle))
    if not rows:
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    envs = sorted({row["env"] for row in rows})
    markers = dict(zip(envs, "os^vD", strict=False))
    configs = sorted({row["config"] for row in rows})
    colors = dict(zip(configs, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3, strict=False))
    for env in envs:
        for config in configs:
            chosen = [row for row in rows if row["env"] == env and row["config"] == config]
            if not chosen:
                continue
            kl = [float(row["kl"]) for row in chosen]
            change = [float(row["cost_after"]) - float(row["cost_before"]) for row in chosen]
            left.scatter(
                kl, change, marker=markers[env], color=colors[config], alpha=0.7, label=f"{env.split('-')[0][8:]} {config}"
            )
            right.scatter(
                [float(row["cost_before"]) for row in chosen],
                [float(row["rollout_cost"]) for row in chosen],
                marker=markers[env],
                color=colors[config],
                alpha=0.7,
            )
    limit = float(rows[0]["cost_limit"])
    left.axhline(0.0, color="grey", linewidth=0.8)
    left.set_xscale("log")
    left.set(xlabel="KL of the step", ylabel="cost after - cost before (independent episodes)", title="One A^s step")
    high = max(max(float(row["cost_before"]) for row in rows), max(float(row["rollout_cost"]) for row in rows), limit) * 1.05
    right.plot([0, high], [0, high], color="grey", linewidth=0.8)
    right.axvline(limit, color="black", linestyle="--", linewidth=0.8)
    right.axhline(limit, color="black", linestyle="--", linewidth=0.8)
    right.set(xlabel="Jc(pi_0), independent episodes", ylabel="Jc(pi_0), the step's own rollout", title="Rollout estimate")
    left.legend(fontsize="x-small", loc="upper left")
    figure.tight_layout()
    figure.savefig(out / "rare_cost.png", dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    th.set_num_threads(1)
    out = pathlib.Path(args.out)
    if not args.plot_only:
        for env_id in args.envs:
            diagnose(env_id, args)
            plot(out)
    plot(out)


if __name__ == "__main__":
    main()
