"""
Callbacks with a hook at the end of every meta-iteration, and checkpointing for resumable
meta-training.
"""

from __future__ import annotations

import pathlib

from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from sb3_safemeta.common.run_dir import atomic_path
from sb3_safemeta.common.validation import check_int

__all__ = ["MetaCheckpointCallback", "MetaIterationCallback", "StopTrainingOnMetaIterations", "call_meta_iteration_end"]


class MetaIterationCallback(BaseCallback):
    """A callback that is also called once at the end of each meta-iteration (phi just updated)."""

    def on_meta_iteration_end(self) -> bool:
        """:return: False to stop training"""
        return self._on_meta_iteration_end()

    def _on_meta_iteration_end(self) -> bool:
        return True

    def _on_step(self) -> bool:
        return True


def call_meta_iteration_end(callback: BaseCallback) -> bool:
    """
    Call ``on_meta_iteration_end`` on every :class:`MetaIterationCallback` inside ``callback``.

    :param callback: the callback passed to ``learn`` (possibly a CallbackList)
    :return: False if one of them asked to stop
    """
    callbacks = callback.callbacks if isinstance(callback, CallbackList) else [callback]
    keep_going = True
    for item in callbacks:
        if isinstance(item, CallbackList):
            keep_going = call_meta_iteration_end(item) and keep_going
        elif isinstance(item, MetaIterationCallback):
            keep_going = item.on_meta_iteration_end() and keep_going
    return keep_going


class MetaCheckpointCallback(MetaIterationCallback):
    """
    Save the model every ``save_freq`` meta-iterations, at the iteration boundary, so that an
    interrupted run can be resumed with exactly the meta-iterations that were left::

        model = SafeMetaDual.load(callback.latest_path, env=env)
        model.learn(total_timesteps - model.num_timesteps, reset_num_timesteps=False, callback=callback)

    (SB3 semantics: with ``reset_num_timesteps=False``, ``learn(n)`` trains ``n`` *more* steps.) The
    task sampler's state is in the zip and SafeMetaDual seeds every meta-iteration from it, so with a
    fixed seed the resumed run ends with the same parameters as an uninterrupted one.

    Writes ``<save_path>/<name_prefix>_<iterations>_iterations.zip`` and overwrites
    ``<save_path>/<name_prefix>_latest.zip``, each atomically (a temporary file unique to the process,
    then a rename: :mod:`sb3_safemeta.common.run_dir`).

    :param save_freq: meta-iterations between two checkpoints
    :param save_path: folder of the checkpoints
    :param name_prefix: file name prefix
    :param keep_all: keep every checkpoint (else only ``latest``)
    :param verbose: 1 prints a line per checkpoint
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str | pathlib.Path,
        name_prefix: str = "safemeta",
        keep_all: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        save_freq = check_int(save_freq, "save_freq")
        self.save_freq, self.save_path, self.name_prefix, self.keep_all = (
            int(save_freq),
            pathlib.Path(save_path),
            name_prefix,
            keep_all,
        )

    @property
    def latest_path(self) -> pathlib.Path:
        return self.save_path / f"{self.name_prefix}_latest.zip"

    def _on_meta_iteration_end(self) -> bool:
        iterations = int(getattr(self.model, "meta_iterations", 0))
        if iterations % self.save_freq == 0:
            # write under a temporary name unique to this process, then rename: a run killed while saving never
            # leaves a truncated checkpoint, and two writers never share a temporary file
            targets = [self.latest_path]
            if self.keep_all:
                targets.insert(0, self.save_path / f"{self.name_prefix}_{iterations}_iterations.zip")
            for target in targets:
                with atomic_path(target) as temporary:
                    self.model.save(temporary)
            if self.verbose:
                print(f"checkpoint: {self.latest_path} after {iterations} meta-iterations")
        return True


class StopTrainingOnMetaIterations(MetaIterationCallback):
    """
    Stop training once the model has done ``max_meta_iterations`` meta-iterations in all (counted by
    ``model.meta_iterations``, so a resumed run stops at the same total), like SB3's
    ``StopTrainingOnMaxEpisodes``. A cost-reducing iteration uses fewer environment steps than a meta
    step, so a budget in meta-iterations is not a fixed number of timesteps.

    :param max_meta_iterations: total meta-iterations
    :param verbose: verbosity level
    """

    def __init__(self, max_meta_iterations: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        max_meta_iterations = check_int(max_meta_iterations, "max_meta_iterations")
        self.max_meta_iterations = int(max_meta_iterations)

    def _on_meta_iteration_end(self) -> bool:
        return int(getattr(self.model, "meta_iterations", 0)) < self.max_meta_iterations
