"""
Task-parallel meta-iterations and meta-tests (``n_workers``, ``ray_address``), on Ray.

The work of a meta-iteration is parallel at the task level: for each task, a rollout of the meta-policy
pi_phi, the adaptation, and a rollout of the adapted policy need only phi and the task; only the step on
phi needs every task. A meta-learner therefore writes its per-task work as *task units*, methods
``_unit_<name>(task_index, *args, callback=...)`` that return picklable values (rollouts, adaptation
results), and runs them through :meth:`OnPolicyMetaAlgorithm._map_task_units
<sb3_safemeta.common.meta_algorithm.OnPolicyMetaAlgorithm._map_task_units>`:

- ``n_workers=0``: the units run in this process, one task after the other, with the training callback;
- ``n_workers=N``: N Ray actors (:class:`TaskWorker`) run them. Each actor holds its own copy of the model
  (loaded from the zip the driver saves once) on its own VecEnv, rebuilt from the env's Gymnasium spec
  (:class:`EnvFactory`); per call the driver sends phi's parameters, the task and its index, and receives
  the unit's value.

Both paths call the same function, :func:`run_unit`, which seeds torch, NumPy and the environments from the
iteration's seed and the task's index (:func:`unit_seed`) before the unit runs. A unit is then a function of
(phi, task, index, iteration seed), whichever process runs it: ``n_workers`` = 0, 1 and 2 give bit-identical
parameters (same torch thread count and CPU type on every process).

Nothing here imports Ray at module level: the package, its main job and ``make demo`` never need it. Ray is
the optional extra ``distributed`` (``pip install sb3_safemeta[distributed]``); see docs/guide/distributed.md.
"""

from __future__ import annotations

import copy
import functools
import inspect
import io
import os
import pickle
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

__all__ = [
    "EnvFactory",
    "Kept",
    "MetaTestCall",
    "TaskParallelMixin",
    "TaskPool",
    "TaskWorker",
    "TaskWorkerError",
    "check_n_workers",
    "init_ray",
    "map_runs",
    "parallel_meta_test",
    "run_unit",
    "unit_seed",
]

# Ray variable that, set to "0" before Ray starts, makes every Ray process of a local instance use 127.0.0.1
# (measured on the project machines: without it Ray binds the head, object store and workers to the
# machine's network address). Set by default for a local instance, never for an existing cluster.
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NICENESS_VARIABLE = "RAY_worker_niceness"
# the "task index" of the seed drawn after a unit ran on every task (see TaskParallelMixin._seed_after_units)
AFTER_UNITS = 2**31 - 1
INSTALL_HINT = "n_workers > 0 needs Ray: pip install 'sb3_safemeta[distributed]' (ray==2.60.0)"

F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------------------------------------- seeding
def unit_seed(base_seed: int, task_index: int, unit: str) -> int:
    """
    :param base_seed: the meta-iteration's seed (drawn from the task generator) or the meta-test's seed
    :param task_index: the task's position in the iteration's batch (or in the list of test tasks)
    :param unit: the unit's name (a meta-policy rollout and an adapted rollout of the same task differ)
    :return: the seed of one unit, independent of which process runs it and of the other tasks
    """
    entropy = [int(base_seed) % 2**32, int(task_index), zlib.crc32(unit.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % (2**31 - 1))


def seed_everything(model: Any, seed: int) -> None:
    """Seed torch, NumPy's and Python's global generators and the model's environments (used at their next reset)."""
    set_random_seed(seed, using_cuda=model.device.type == "cuda")
    model.env.seed(seed)


@dataclass
class Kept:
    """
    An argument of a unit that the worker already holds: the value of unit ``unit`` of the same task in the
    same meta-iteration (e.g. the meta-policy's rollout, which the adaptation of that task reads). In-process
    it is ``value``; to a worker only the reference travels (the same task always goes to the same worker).

    :param unit: name of the unit that produced the value
    :param value: the value (used in-process)
    """

    unit: str
    value: Any


@dataclass(frozen=True)
class _KeptRef:
    unit: str


def run_unit(model: Any, unit: str, base_seed: int, task_index: int, args: Sequence[Any], callback: BaseCallback) -> Any:
    """
    Run ``model._unit_<unit>(task_index, *args, callback=callback)`` after seeding everything from
    (``base_seed``, ``task_index``, ``unit``). The in-process path and the workers both call this.

    :return: the unit's value, or None if ``callback`` asked to stop
    """
    seed_everything(model, unit_seed(base_seed, task_index, unit))
    values = [arg.value if isinstance(arg, Kept) else arg for arg in args]
    return getattr(model, f"_unit_{unit}")(task_index, *values, callback=callback)


class SilentCallback(BaseCallback):
    """The callback of units run on a worker: reports nothing, never stops."""

    def _on_step(self) -> bool:
        return True


def check_n_workers(n_workers: Any, ray_address: Any) -> tuple[int, str | None]:
    """:return: the validated ``(n_workers, ray_address)``"""
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)):
        raise TypeError(f"n_workers must be an int (0: in-process), got {n_workers!r}")
    if int(n_workers) < 0:
        raise ValueError(f"n_workers must be >= 0 (0: in-process, N: N Ray workers), got {n_workers!r}")
    if ray_address is not None and not isinstance(ray_address, str):
        raise TypeError(f"ray_address must be None (a local Ray instance), 'auto' or 'host:port', got {ray_address!r}")
    return int(n_workers), ray_address


# ---------------------------------------------------------------------------------------------- meta-test calls
@dataclass
class MetaTestCall:
    """
    The arguments of one ``meta_test`` call, kept while it runs so that ``_run_meta_test`` can seed each test
    task from (``seed``, its index) and, with workers, repeat the call for one task on a worker.

    :param n_workers: workers of this call (0: in-process)
    :param seed: the call's ``seed`` (base of every test task's seed)
    :param arguments: the call's arguments (without ``n_workers``)
    :param task_indices: the indices of the call's tasks in the driver's list (a worker runs one task)
    """

    n_workers: int
    seed: int
    arguments: dict[str, Any]
    task_indices: list[int] | None = None

    def task_index(self, position: int) -> int:
        return position if self.task_indices is None else self.task_indices[position]


def parallel_meta_test(method: F) -> F:
    """
    Decorator of a meta-learner's ``meta_test(self, ..., seed=..., n_workers=None)``: records the call
    (:class:`MetaTestCall`) for ``_run_meta_test``, which runs the test tasks on ``n_workers`` workers
    (None: the model's ``n_workers``) with the report of the in-process run.
    """
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, _task_indices: list[int] | None = None, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self")
        n_workers = arguments.pop("n_workers", None)
        n_workers, _ = check_n_workers(self.n_workers if n_workers is None else n_workers, None)
        previous = getattr(self, "_meta_test_call", None)
        self._meta_test_call = MetaTestCall(n_workers, int(arguments["seed"]), arguments, _task_indices)
        try:
            return method(self, *args, **kwargs)
        finally:
            self._meta_test_call = previous

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- environments
def _wrapper_chain(env: gym.Env) -> list[type]:
    chain = []
    while isinstance(env, gym.Wrapper):
        chain.append(type(env))
        env = env.env
    return [*chain, type(env)]


def _names(chain: list[type]) -> str:
    return " > ".join(item.__name__ for item in chain)


@dataclass
class EnvFactory:
    """
    How a worker rebuilds the driver's VecEnv: ``gymnasium.make`` of each sub-environment's spec (id, kwargs,
    ``max_episode_steps``), SB3's ``Monitor`` when the driver's has one, in a ``DummyVecEnv``.

    :param specs: the spec of every sub-environment
    :param monitor: whether the sub-environments are wrapped in a ``Monitor``
    """

    specs: list[Any]
    monitor: bool

    @classmethod
    def from_vec_env(cls, env: VecEnv | None) -> EnvFactory:
        """
        :param env: the model's environment
        :return: the factory of an equal VecEnv
        :raises ValueError: when the env cannot be rebuilt from an id (a VecEnv wrapper, sub-processes, an env
            not made by ``gymnasium.make`` or wrapped in wrappers of its own)
        """
        hint = (
            "n_workers > 0 rebuilds the environment on every worker from its Gymnasium id: pass the registered id "
            "(e.g. 'SafeMetaPointNav-v0') or make_vec_env(id, n_envs=...), without VecEnv wrappers or wrapper_class "
            "(register a wrapped env as an id of its own, with gymnasium.register, to use it with workers)"
        )
        if not isinstance(env, DummyVecEnv):
            raise ValueError(f"cannot rebuild the environment {type(env).__name__} on a worker; {hint}")
        specs, monitor = [], False
        for index, sub_env in enumerate(env.envs):
            chain = _wrapper_chain(sub_env)
            monitor = chain[0] is Monitor
            # what gymnasium.make returned (SB3 adds the Monitor)
            made = sub_env.env if monitor and isinstance(sub_env, gym.Wrapper) else sub_env
            spec = made.spec  # of the outermost layer: id, kwargs, max_episode_steps and recreatable wrappers
            if spec is None:
                raise ValueError(
                    f"cannot rebuild sub-environment {index} ({type(sub_env.unwrapped).__name__}) on a worker: it was "
                    f"not made by gymnasium.make (no spec); {hint}"
                )
            try:
                rebuilt = cls._make_one(spec, monitor)
            except ValueError as error:  # a wrapper that does not record its constructor arguments
                raise ValueError(
                    f"cannot rebuild sub-environment {index} ({_names(chain)}) on a worker: {error}; {hint}"
                ) from error
            try:
                rebuilt_chain = _wrapper_chain(rebuilt)
            finally:
                rebuilt.close()
            if rebuilt_chain != chain:
                raise ValueError(
                    f"cannot rebuild sub-environment {index} on a worker: it is {_names(chain)}, but "
                    f"gymnasium.make({spec.id!r}) gives {_names(rebuilt_chain)}; {hint}"
                )
            specs.append(spec)
        return cls(specs=specs, monitor=monitor)

    @staticmethod
    def _make_one(spec: Any, monitor: bool) -> gym.Env:
        env = gym.make(spec)
        return Monitor(env) if monitor else env

    def make(self) -> DummyVecEnv:
        """:return: a new VecEnv equal to the driver's"""
        return DummyVecEnv([functools.partial(self._make_one, spec, self.monitor) for spec in self.specs])


# ---------------------------------------------------------------------------------------------- workers
class TaskWorkerError(RuntimeError):
    """A worker died or raised while it ran a task's unit; the message names the task and the unit."""


@dataclass
class UnitResult:
    """What a worker returns: the unit's value and the bookkeeping the driver does in-process."""

    value: Any
    timesteps: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    episode_infos: list[dict[str, Any]] = field(default_factory=list)
    episode_successes: list[bool] = field(default_factory=list)
    episode_costs: list[np.ndarray] = field(default_factory=list)
    logged: dict[str, Any] = field(default_factory=dict)


class TaskWorker:
    """
    The body of one Ray actor: a copy of the model on its own VecEnv. Built once per run (the model is
    loaded from the zip the driver saved), then called once per unit with phi's parameters.

    :param algorithm_class: the model's class
    :param model_zip: the model saved by ``save`` (without env)
    :param env_factory: how to build the VecEnv
    :param torch_threads: torch intra-op threads (the driver's: the same arithmetic)
    :param niceness: the driver's scheduling priority, taken if the worker's is lower and it may (Ray starts
        workers at niceness 15, see :func:`init_ray`)
    """

    def __init__(
        self,
        algorithm_class: type,
        model_zip: bytes,
        env_factory: EnvFactory,
        torch_threads: int,
        niceness: int | None = None,
    ) -> None:
        th.set_num_threads(torch_threads)
        if niceness is not None and os.getpriority(os.PRIO_PROCESS, 0) > niceness:
            try:  # the driver's priority (Ray starts workers at niceness 15); allowed to root only
                os.setpriority(os.PRIO_PROCESS, 0, niceness)
            except OSError:
                pass
        self.model = algorithm_class.load(  # type: ignore[attr-defined]
            io.BytesIO(model_zip), env=env_factory.make(), device="cpu", n_workers=0, ray_address=None
        )
        self.model.set_logger(Logger(folder=None, output_formats=[]))
        self.callback = SilentCallback()
        self.callback.init_callback(self.model)
        self._kept: dict[tuple[str, int], Any] = {}
        self._kept_seed: int | None = None

    def pid(self) -> int:
        return os.getpid()

    def node_ip(self) -> str:
        import ray

        return str(ray.util.get_node_ip_address())

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def run(self, unit: str, state: dict[str, th.Tensor], base_seed: int, task_index: int, args: Sequence[Any]) -> UnitResult:
        """Run one unit on phi = ``state`` (see :func:`run_unit`)."""
        if base_seed != self._kept_seed:  # a new meta-iteration: what the previous one kept is stale
            self._kept, self._kept_seed = {}, base_seed
        self.model.policy.load_state_dict(state)
        values = []
        for arg in args:
            if isinstance(arg, _KeptRef):
                if (arg.unit, task_index) not in self._kept:
                    raise RuntimeError(f"this worker holds no value of unit {arg.unit!r} for task {task_index}")
                arg = self._kept[(arg.unit, task_index)]
            values.append(arg)
        model = self.model
        model.ep_info_buffer, model.ep_success_buffer, model.ep_cost_buffer = deque(), deque(), deque()
        start, clock, cpu_clock = model.num_timesteps, time.perf_counter(), time.process_time()
        model.logger.name_to_value.clear()
        value = run_unit(model, unit, base_seed, task_index, values, self.callback)
        self._kept[(unit, task_index)] = value
        return UnitResult(
            value,
            model.num_timesteps - start,
            time.perf_counter() - clock,
            time.process_time() - cpu_clock,
            list(model.ep_info_buffer),
            list(model.ep_success_buffer),
            list(model.ep_cost_buffer),
            dict(model.logger.name_to_value),  # e.g. the critics' losses, recorded by the driver in task order
        )

    def meta_test(
        self, state: dict[str, th.Tensor], arguments: dict[str, Any], task_indices: list[int], tasks: list[dict[str, Any]]
    ) -> Any:
        """
        The driver's ``meta_test`` call for some of its test tasks (each seeded by its index in the driver's list,
        ``task_indices``), with one adapter and one evaluation env for all of them. :return: their report
        """
        self.model.policy.load_state_dict(state)
        call = {**arguments, "tasks": list(tasks), "save_path": None, "verbose": 0}
        return self.model.meta_test(**call, n_workers=0, _task_indices=list(task_indices))


# ---------------------------------------------------------------------------------------------- the driver's pool
def _require_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return ray


def init_ray(ray_address: str | None = None, **kwargs: Any) -> Any:
    """
    Connect to Ray unless this process already is: ``ray_address=None`` starts a local instance on 127.0.0.1
    (sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` unless it is set; Ray reads it when it is imported, so a
    process that imported Ray before must set it itself) whose workers run at this process's niceness
    (``RAY_worker_niceness``, Ray's default 15), ``"auto"`` or ``"host:port"`` joins an existing cluster
    (``ray start --head``).

    :param ray_address: see above
    :param kwargs: more ``ray.init`` arguments (e.g. ``num_cpus`` of a local instance)
    :return: the ``ray`` module
    """
    if ray_address is None and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_VARIABLE, "0")  # read when Ray is imported: before the import
    if ray_address is None:
        # Ray starts its workers at niceness 15 (RAY_worker_niceness): on a machine shared with other jobs they
        # then get a fraction of a core (measured: 2 workers slower than one process). A local instance's
        # workers do this process's work: give them its priority
        os.environ.setdefault(NICENESS_VARIABLE, str(os.getpriority(os.PRIO_PROCESS, 0)))
    ray = _require_ray()
    if not ray.is_initialized():
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("log_to_driver", True)
        # "local": a new instance even when another one runs on this machine (Ray's None would join that one)
        ray.init(address="local" if ray_address is None else ray_address, **kwargs)
    return ray


def _nbytes(value: Any) -> int:
    return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


class TaskPool:
    """
    ``n_workers`` Ray actors (:class:`TaskWorker`), each with a copy of ``model``. Task ``i`` always runs on
    worker ``i % n_workers`` (so that a worker holds the values a later unit of the same task reads).

    ``bytes_sent`` / ``bytes_received`` count the pickled size of what crosses a process boundary: phi once per
    worker and call, the units' arguments, and their values; ``worker_seconds`` / ``worker_cpu_seconds`` the wall
    and CPU time the workers spent inside units.

    :param model: the meta-learner (its env must be rebuildable: :class:`EnvFactory`)
    :param n_workers: number of actors (>= 1)
    :param ray_address: see :func:`init_ray`
    """

    def __init__(self, model: Any, n_workers: int, ray_address: str | None = None) -> None:
        env_factory = EnvFactory.from_vec_env(model.env)  # before Ray starts: a bad env is a quick, clear error
        ray = init_ray(ray_address)
        buffer = io.BytesIO()
        model.save(buffer)
        remote_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(TaskWorker)
        self.n_workers = int(n_workers)
        self.ray_address = ray_address
        self.actors = [
            remote_class.remote(
                type(model), buffer.getvalue(), env_factory, th.get_num_threads(), os.getpriority(os.PRIO_PROCESS, 0)
            )
            for _ in range(n_workers)
        ]
        self.bytes_sent = self.bytes_received = 0
        # wall and CPU seconds the workers spent inside units (not counting transfers and waiting)
        self.worker_seconds = self.worker_cpu_seconds = 0.0
        self.cpu_seconds_per_worker = [0.0] * self.n_workers
        self._ray = ray

    def _get(self, refs: list[Any], describe: Callable[[int], str]) -> list[Any]:
        """``ray.get`` every reference in order; a dead worker or an exception names the unit (``describe(i)``)."""
        ray = self._ray
        results = []
        for position, ref in enumerate(refs):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayTaskError as error:
                cause = error.cause if getattr(error, "cause", None) is not None else error
                raise TaskWorkerError(f"{describe(position)} raised {type(cause).__name__}: {cause}") from error
            except ray.exceptions.RayActorError as error:
                raise TaskWorkerError(
                    f"{describe(position)}: its Ray worker died ({type(error).__name__}). Nothing after the last "
                    "checkpoint is lost: load it (MetaCheckpointCallback.latest_path) and call learn again"
                ) from error
        return results

    def map(
        self, unit: str, state: dict[str, th.Tensor], base_seed: int, items: Sequence[tuple[int, Sequence[Any]]]
    ) -> list[UnitResult]:
        """
        :param unit: the unit's name
        :param state: phi (the model's ``policy.state_dict()``)
        :param base_seed: the iteration's seed
        :param items: (task index, the unit's arguments) per task
        :return: the results, in the order of ``items``
        """
        state_ref = self._ray.put(state)
        used = {index % self.n_workers for index, _ in items}
        self.bytes_sent += _nbytes(state) * len(used)
        refs = []
        for index, args in items:
            shipped = [_KeptRef(arg.unit) if isinstance(arg, Kept) else arg for arg in args]
            self.bytes_sent += _nbytes((unit, base_seed, index, shipped))
            refs.append(self.actors[index % self.n_workers].run.remote(unit, state_ref, base_seed, index, shipped))

        def describe(position: int) -> str:
            index = items[position][0]
            return f"worker {index % self.n_workers}, running unit {unit!r} of task {index} {_task_of(items[position][1])}"

        results = self._get(refs, describe)
        self.bytes_received += sum(_nbytes(result) for result in results)
        self.worker_seconds += sum(result.seconds for result in results)
        self.worker_cpu_seconds += sum(result.cpu_seconds for result in results)
        for (index, _), result in zip(items, results, strict=True):
            self.cpu_seconds_per_worker[index % self.n_workers] += result.cpu_seconds
        return results

    def meta_test(self, state: dict[str, th.Tensor], call: MetaTestCall, tasks: Sequence[dict[str, Any]]) -> list[Any]:
        """:return: per test task, in their order, its row of the report (1-task ``returns``, ``costs``, ``eval_*``)"""
        arguments = {key: value for key, value in call.arguments.items() if key not in ("tasks", "save_path", "verbose")}
        objects = sorted(key for key, value in arguments.items() if isinstance(value, (VecEnv, gym.Env)))
        if objects:
            raise ValueError(
                f"meta_test with n_workers > 0 cannot send {objects} (an environment object) to the workers: leave "
                "it None (each worker builds its own from the env id) or pass n_workers=0"
            )
        state_ref = self._ray.put(state)
        # test task at position p runs on worker p % n_workers; each worker gets its tasks in one call
        groups = [list(range(worker, len(tasks), self.n_workers)) for worker in range(min(self.n_workers, len(tasks)))]
        self.bytes_sent += _nbytes(state) * len(groups)
        refs = []
        for worker, positions in enumerate(groups):
            indices, subset = [call.task_index(p) for p in positions], [tasks[p] for p in positions]
            self.bytes_sent += _nbytes((arguments, indices, subset))
            refs.append(self.actors[worker].meta_test.remote(state_ref, arguments, indices, subset))

        def describe(worker: int) -> str:
            return (
                f"worker {worker}, running the meta-test of test tasks {groups[worker]} {[tasks[p] for p in groups[worker]]}"
            )

        reports = self._get(refs, describe)
        self.bytes_received += sum(_nbytes(report) for report in reports)
        rows: list[Any] = [None] * len(tasks)
        for positions, report in zip(groups, reports, strict=True):
            for row, position in enumerate(positions):
                rows[position] = _report_row(report, row)
        return rows

    def pids(self) -> list[int]:
        """:return: the process id of every worker"""
        return self._ray.get([actor.pid.remote() for actor in self.actors])

    def node_ips(self) -> list[str]:
        """:return: the node address of every worker"""
        return self._ray.get([actor.node_ip.remote() for actor in self.actors])

    def close(self) -> None:
        """Stop the workers (Ray itself keeps running)."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []


def _report_row(report: Any, row: int) -> SimpleNamespace:
    """Row ``row`` of a meta-test report, as a 1-task report's arrays (None stays None)."""
    fields = ("returns", "costs", "eval_returns", "eval_costs", "eval_cost_bounds")
    return SimpleNamespace(
        **{name: None if getattr(report, name) is None else getattr(report, name)[row : row + 1] for name in fields},
        # the worker's evaluation time, shared evenly by its tasks (summed over workers by the caller)
        eval_seconds=float(getattr(report, "eval_seconds", 0.0)) / report.returns.shape[0],
        adapt_seconds=float(getattr(report, "adapt_seconds", 0.0)) / report.returns.shape[0],
    )


def _task_of(args: Sequence[Any]) -> str:
    """The task dict among a unit's arguments, for error messages."""
    for arg in args:
        if isinstance(arg, dict):
            return f"({arg})"
    return ""


# ---------------------------------------------------------------------------------------------- the algorithms' side
class TaskParallelMixin:
    """
    What :class:`~sb3_safemeta.common.meta_algorithm.OnPolicyMetaAlgorithm` gets from this module: running task
    units in-process or on the workers (:meth:`_map_task_units`), the meta-test's per-task seeding and workers,
    the workers' lifetime (:meth:`close_workers`).
    """

    n_workers: int = 0
    ray_address: str | None = None
    # advantage estimators whose units are independent across tasks. With "gae", SafeMetaDual, MAMLCostPenalty
    # and MetaCPO refit ONE set of critics on every task in turn (task 2's advantages depend on task 1's data):
    # only the in-process path runs them. MetaCRPO starts every task from phi's critics: both.
    parallel_advantage_estimators: tuple[str, ...] = ("mc",)
    _task_pool: TaskPool | None = None
    _meta_test_call: MetaTestCall | None = None

    def _check_parallel(self, n_workers: int) -> None:
        estimator = getattr(self, "advantage_estimator", "mc")
        if n_workers > 0 and estimator not in self.parallel_advantage_estimators:
            raise ValueError(
                f"n_workers > 0 needs advantage_estimator in {self.parallel_advantage_estimators} for "
                f"{type(self).__name__}, got {estimator!r}: with 'gae' one set of critics is refit on every task "
                "in turn, so the tasks are not independent (use n_workers=0)"
            )

    def _get_task_pool(self, n_workers: int) -> TaskPool:
        """:return: the workers (started at the first call, and again when ``n_workers`` or ``ray_address`` changed)"""
        self._check_parallel(n_workers)
        pool = self._task_pool
        if pool is None or pool.n_workers != n_workers or pool.ray_address != self.ray_address or not pool.actors:
            self.close_workers()
            pool = self._task_pool = TaskPool(self, n_workers, self.ray_address)
        return pool

    def close_workers(self) -> None:
        """Stop this model's Ray workers (they start again when needed). The workers copy the model when they
        start: call this after changing a hyper-parameter of a model that already has workers."""
        if self._task_pool is not None:
            self._task_pool.close()
            self._task_pool = None

    def _map_task_units(
        self, unit: str, base_seed: int, items: Sequence[tuple[int, Sequence[Any]]], callback: BaseCallback
    ) -> list[Any] | None:
        """
        Run the unit ``unit`` for every (task index, arguments) of ``items``: in this process with ``callback``
        (``n_workers=0``), or on the workers, with the same values.

        With workers, the driver adds each unit's timesteps and episodes (``ep_info_buffer``, ``ep_cost_buffer``)
        in task order, and calls ``callback.on_rollout_start`` / ``on_step`` / ``on_rollout_end`` once per unit
        (per-step callbacks see one call per unit).

        :return: the values, in the order of ``items``; None if a callback asked to stop
        """
        model: Any = self
        if self.n_workers == 0:
            values = []
            for index, args in items:
                value = run_unit(model, unit, base_seed, index, args, callback)
                if value is None:
                    return None
                values.append(value)
            self._seed_after_units(base_seed, unit)
            return values
        pool = self._get_task_pool(self.n_workers)
        try:
            results = pool.map(unit, model.policy.state_dict(), base_seed, items)
        except TaskWorkerError:
            self.close_workers()  # a dead worker's pool is not reused: the next call starts new workers
            raise
        keep_going = True
        for result in results:
            model.num_timesteps += result.timesteps
            model.ep_info_buffer.extend(result.episode_infos)
            model.ep_success_buffer.extend(result.episode_successes)
            model.ep_cost_buffer.extend(result.episode_costs)
            for key, value in result.logged.items():
                model.logger.record(key, value)
            callback.on_rollout_start()
            callback.update_locals({"unit": unit, "result": result})
            keep_going = callback.on_step() and keep_going
            callback.on_rollout_end()
        model.logger.record("distributed/bytes_sent", pool.bytes_sent)
        model.logger.record("distributed/bytes_received", pool.bytes_received)
        self._seed_after_units(base_seed, unit)
        # writable copies: Ray hands out read-only views of its object store
        return [copy.deepcopy(result.value) for result in results] if keep_going else None

    def _seed_after_units(self, base_seed: int, unit: str) -> None:
        """
        Seed torch, NumPy and Python from (iteration seed, unit) once a unit has run on every task: what the
        driver computes next (e.g. the TRPO step, whose conjugate gradient starts from random noise) then draws
        the same numbers whether the units ran here (and drew from these generators) or on workers.
        """
        set_random_seed(unit_seed(base_seed, AFTER_UNITS, unit), using_cuda=self.device.type == "cuda")  # type: ignore[attr-defined]

    def _meta_test_reports(self, tasks: Sequence[dict[str, Any]]) -> list[Any] | None:
        """:return: with workers, the 1-task report of every test task (run on the workers); else None"""
        call = self._meta_test_call
        if call is None or call.n_workers == 0:
            return None
        pool = self._get_task_pool(call.n_workers)
        try:
            return pool.meta_test(self.policy.state_dict(), call, tasks)  # type: ignore[attr-defined]
        except TaskWorkerError:
            self.close_workers()
            raise

    def _seed_meta_test_task(self, position: int) -> None:
        """Seed the chain of test task ``position`` from the meta-test's seed and the task's index."""
        call = self._meta_test_call
        if call is not None:
            seed_everything(self, unit_seed(call.seed, call.task_index(position), "meta_test"))


# ---------------------------------------------------------------------------------------------- independent runs
def map_runs(
    function: Callable[..., Any],
    runs: Sequence[dict[str, Any]],
    ray_address: str | None = None,
    cpus_per_run: float = 1.0,
    max_retries: int = 1,
) -> list[Any]:
    """
    Run independent runs (e.g. the cells of a reproduce grid: algorithm x scenario x seed x delta) as Ray tasks,
    locally or on a cluster, and return their results in order. ``function`` must be importable on the workers
    (a module-level function) and its results picklable; a run that resumes from its own checkpoints makes Ray's
    retries (``max_retries``, after a node or a process is lost) cheap.

    :param function: called as ``function(**run)`` for every run
    :param runs: keyword arguments of every run
    :param ray_address: see :func:`init_ray`
    :param cpus_per_run: CPUs Ray reserves per run
    :param max_retries: Ray's retries of a run whose worker died (an exception raised by the run is not retried)
    :return: the results, in the order of ``runs``
    :raises TaskWorkerError: naming the run that failed
    """
    ray = init_ray(ray_address)
    remote = ray.remote(num_cpus=cpus_per_run, max_retries=max_retries)(function)
    refs = [remote.remote(**run) for run in runs]
    results = []
    for position, ref in enumerate(refs):
        try:
            results.append(ray.get(ref))
        except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError) as error:
            raise TaskWorkerError(f"run {position} ({runs[position]}) failed: {error}") from error
    return results


@contextmanager
def local_ray(num_cpus: int = 2, **kwargs: Any) -> Iterator[Any]:
    """A local Ray instance on 127.0.0.1 for the duration of the block (tests, benchmarks); shut down after."""
    ray = init_ray(None, num_cpus=num_cpus, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()
