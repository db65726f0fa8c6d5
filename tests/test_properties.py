"""
Property-based tests (Hypothesis) of all five algorithms against random constructor arguments and faulty task
environments (issue 16). The property: either a ``ValueError`` / ``TypeError`` that names a parameter (or the
fault: ``info['cost']``, the observation, the reward, ``sample_tasks``), or a run whose parameters stay finite.

The examples are derandomized and bounded (``SB3_SAFEMETA_HYPOTHESIS_EXAMPLES``, default 6 per test) so that the
CI part takes seconds; raise it for a thorough search, e.g. ``SB3_SAFEMETA_HYPOTHESIS_EXAMPLES=200``.
"""

import inspect
import math
import os
from typing import Any

import pytest
from faulty_envs import STEP_FAULTS, TASK_FAULTS, EnvironmentBroke, make_faulty_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_degenerate_inputs import ALGORITHMS, SETTINGS, finite, ids

EXAMPLES = int(os.environ.get("SB3_SAFEMETA_HYPOTHESIS_EXAMPLES", "6"))
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NUMBERS = st.floats(allow_nan=True, allow_infinity=True, width=32)
NOT_A_NUMBER = st.sampled_from(["10", None, [1], {"a": 1}, True])
# valid-looking ranges plus the invalid values around them; bounded so that a valid run stays small
ARGUMENTS: dict[str, st.SearchStrategy[Any]] = {
    "n_steps": st.one_of(st.integers(-2, 14), st.floats(0.0, 14.0), NOT_A_NUMBER),
    "meta_batch_size": st.one_of(st.integers(-1, 3), st.floats(0.0, 3.0), NOT_A_NUMBER),
    "n_inner_steps": st.one_of(st.integers(-1, 2), st.floats(0.0, 2.0)),
    "gamma": st.one_of(st.floats(-0.5, 1.5), NUMBERS, NOT_A_NUMBER),
    "gae_lambda": st.one_of(st.floats(-0.5, 1.5), NUMBERS),
    "learning_rate": st.one_of(st.floats(-1e-2, 1e-2), NUMBERS),
    "cost_limit": st.one_of(st.floats(-2.0, 5.0), NUMBERS, st.lists(st.floats(0.0, 5.0), max_size=3)),
    "target_kl": st.one_of(st.floats(-0.1, 0.1), NUMBERS),
    "line_search_shrinking_factor": st.one_of(st.floats(-0.5, 2.0), NUMBERS),
    "line_search_max_iter": st.one_of(st.integers(-1, 5), st.floats(0.0, 5.0)),
    "cg_max_steps": st.one_of(st.integers(-1, 5), st.floats(0.0, 5.0)),
    "cg_damping": st.one_of(st.floats(-0.5, 1.0), NUMBERS),
    "batch_size": st.one_of(st.integers(-1, 32), st.floats(0.0, 32.0)),
    "n_critic_epochs": st.integers(-1, 2),
    "lambda_": st.one_of(st.floats(-1.0, 5.0), NUMBERS),
    "lambda_c": st.one_of(st.floats(-1.0, 5.0), NUMBERS),
    "delta_c": st.one_of(st.floats(-1.0, 2.0), NUMBERS),
    "fit_steps": st.one_of(st.integers(-1, 4), st.floats(0.0, 4.0)),
    "n_dual_steps": st.one_of(st.integers(-1, 4), st.floats(0.0, 4.0)),
    "dual_solver": st.sampled_from(["auto", "pgd", "newton", "bisection", "bogus", ""]),
    "advantage_estimator": st.sampled_from(["gae", "mc", "td", ""]),
    "inner_lr": st.one_of(st.floats(-0.5, 0.5), NUMBERS),
    "inner_kl": st.one_of(st.floats(-0.1, 0.1), NUMBERS),
    "adapt_kl": st.one_of(st.floats(-0.1, 0.1), NUMBERS),
    "meta_lr": st.one_of(st.floats(-0.5, 1.5), NUMBERS),
    "cost_penalty": st.one_of(st.floats(-1.0, 5.0), NUMBERS),
    "stats_window_size": st.one_of(st.integers(-1, 10), st.floats(0.0, 10.0)),
}


def accepted(cls: type) -> list[str]:
    parameters = inspect.signature(cls.__init__).parameters
    return sorted(name for name in ARGUMENTS if name in parameters)


def named(error: BaseException, names: list[str]) -> bool:
    """The message names one of the parameters that were set (as ``name`` or as ``name=``)."""
    message = str(error)
    return any(name in message or name.rstrip("_") in message for name in names)


@st.composite
def constructor_arguments(draw: st.DrawFn, cls: type) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(accepted(cls)), min_size=1, max_size=3, unique=True))
    return {name: draw(ARGUMENTS[name]) for name in names}


def run_one_iteration(cls: type, env: Any, arguments: dict[str, Any]) -> Any:
    model = cls("MlpPolicy", env, seed=0, **{**SETTINGS[cls], **arguments})
    return model.learn(1)


@pytest.mark.parametrize("cls", ALGORITHMS, ids=ids(ALGORITHMS))
def test_random_constructor_arguments(cls: type) -> None:
    @BOUNDED
    @given(arguments=constructor_arguments(cls))
    def check(arguments: dict[str, Any]) -> None:
        try:
            model = run_one_iteration(cls, make_faulty_env(), arguments)
        except (ValueError, TypeError) as error:
            assert named(error, list(arguments)), f"{type(error).__name__} names none of {sorted(arguments)}: {error}"
        else:
            assert finite(model), f"non-finite parameters after one iteration with {arguments}"

    check()


FAULTS = st.sampled_from([None, *sorted(STEP_FAULTS), *sorted(TASK_FAULTS)])


@pytest.mark.parametrize("cls", ALGORITHMS, ids=ids(ALGORITHMS))
def test_faulty_task_environments(cls: type) -> None:
    @BOUNDED
    @given(fault=FAULTS, fault_step=st.integers(1, 60), n_envs=st.integers(1, 3))
    def check(fault: str | None, fault_step: int, n_envs: int) -> None:
        env = make_faulty_env(fault, fault_step=fault_step, n_envs=n_envs)
        model = cls("MlpPolicy", env, seed=0, **SETTINGS[cls])
        expected = STEP_FAULTS.get(fault) if fault in STEP_FAULTS else TASK_FAULTS.get(fault)  # type: ignore[arg-type]
        try:
            model.learn(1)
        except EnvironmentBroke:
            assert fault == "exception"  # the user's own exception, unchanged
        except (ValueError, TypeError, KeyError) as error:
            assert expected is not None, f"healthy env ({fault}) raised {error!r}"
            import re

            assert re.search(expected, str(error)), f"{fault}: {error}"
        else:
            # no error: the fault never happened in this run (too late a step, or a task fault SafeAdapter never asks)
            steps = max(env.get_attr("steps"))
            assert (
                fault is None
                or (fault in STEP_FAULTS and steps < fault_step)
                or (fault in TASK_FAULTS and cls.__name__ == "SafeAdapter")
            ), f"{fault} at step {fault_step} passed silently ({steps} steps)"
        assert finite(model)

    check()


def test_the_suite_is_bounded() -> None:
    """The CI profile: derandomized (the same examples every run), no deadline, a few examples per property."""
    assert BOUNDED.derandomize and BOUNDED.deadline is None and BOUNDED.max_examples == EXAMPLES
    assert math.isfinite(EXAMPLES) and EXAMPLES >= 1
