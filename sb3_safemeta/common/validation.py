"""Argument checks shared by the package: every error names the parameter and the expected value."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_cost_vector(value: Any, n_costs: int, name: str, allow_negative: bool = True) -> np.ndarray:
    """
    Broadcast a scalar or a length-``n_costs`` sequence to a float array of shape (n_costs,).

    :param value: scalar, or sequence / array of length ``n_costs``
    :param n_costs: number of cost channels p
    :param name: parameter name used in the error message
    :param allow_negative: whether negative entries are allowed
    :return: float64 array of shape (n_costs,)
    """
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a float or a sequence of {n_costs} floats, got {value!r}") from error
    if array.ndim == 0:
        array = np.full(n_costs, float(array))
    if array.shape != (n_costs,):
        raise ValueError(
            f"{name} must be a float or have shape ({n_costs},) (one entry per cost channel), got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    if not allow_negative and np.any(array < 0):
        raise ValueError(f"{name} must be >= 0, got {array.tolist()}")
    return array


def check_positive(value: float, name: str, strict: bool = True) -> float:
    """
    :param value: a scalar hyper-parameter
    :param name: parameter name used in the error message
    :param strict: require > 0 (else >= 0)
    :return: the value as float
    """
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number, got {value!r}") from error
    if not np.isfinite(number) or (number <= 0 if strict else number < 0):
        raise ValueError(f"{name} must be {'>' if strict else '>='} 0, got {value!r}")
    return number


def check_finite(array: Any, name: str) -> np.ndarray:
    """
    :param array: array-like
    :param name: parameter name used in the error message
    :return: the array as float64, after checking it contains no NaN or inf
    """
    result = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(result)):
        bad = int(np.size(result) - np.count_nonzero(np.isfinite(result)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); expected finite numbers")
    return result


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """
    :param value: an integer hyper-parameter (an integral float such as ``2.0`` is accepted; ``0.5`` or ``True`` is not)
    :param name: parameter name used in the error message
    :param minimum: the smallest allowed value
    :return: the value as int
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if not np.isfinite(value) or float(value) != int(value):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_in_range(value: Any, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    """
    :param value: a scalar hyper-parameter
    :param name: parameter name used in the error message
    :param low: lower bound
    :param high: upper bound
    :param low_open: exclude ``low``
    :param high_open: exclude ``high``
    :return: the value as float, after checking it lies in the interval
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number in {interval}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a number in {interval}, got {value!r} ({type(value).__name__})") from error
    inside = (number > low if low_open else number >= low) and (number < high if high_open else number <= high)
    if not np.isfinite(number) or not inside:
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """
    :param value: a string option
    :param name: parameter name used in the error message
    :param choices: the allowed values
    :return: the value
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
