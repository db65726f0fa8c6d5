"""
Interpreter start-up cost of the rl-zoo3 startup hook (``sb3_safemeta_zoo.pth``), measured side by side.

Runs ``python -X importtime -c pass`` many times, alternating with the hook active and disabled through its
opt-out (``SB3_SAFEMETA_NO_ZOO_HOOK=1``, checked in the ``.pth`` line before anything is read, so it costs what
a venv without the package costs), and prints the median wall time and the median ``site`` import time of
both, and their difference. Needs the hook installed (``python -m sb3_safemeta.zoo.install_hook install``).

    python benchmarks/bench_startup.py [--repeats 40]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

from sb3_safemeta.zoo import install_hook


def run_once(disabled: bool) -> tuple[float, float]:
    """:return: wall time (ms) of ``python -X importtime -c pass`` and the cumulative import time of ``site`` (ms)"""
    env = {key: value for key, value in os.environ.items() if key != "SB3_SAFEMETA_NO_ZOO_HOOK"}
    if disabled:
        env["SB3_SAFEMETA_NO_ZOO_HOOK"] = "1"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, env=env)
    wall = (time.perf_counter() - start) * 1000.0
    site_us = [int(match.group(1)) for match in re.finditer(r"\|\s*(\d+) \| site$", result.stderr, re.M)]
    return wall, (site_us[-1] / 1000.0 if site_us else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    if not install_hook.is_installed():
        sys.exit("the hook is not installed: python -m sb3_safemeta.zoo.install_hook install")
    samples: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(args.repeats):  # alternate, so that machine load affects both alike
        for disabled in (False, True):
            samples[disabled].append(run_once(disabled))
    for label, disabled in (("hook active", False), ("hook disabled (= no package)", True)):
        walls, sites = zip(*samples[disabled], strict=True)
        print(f"{label:30s} wall {statistics.median(walls):6.1f} ms   site {statistics.median(sites):6.2f} ms")
    active = [statistics.median(column) for column in zip(*samples[False], strict=True)]
    disabled_ = [statistics.median(column) for column in zip(*samples[True], strict=True)]
    print(f"{'difference':30s} wall {active[0] - disabled_[0]:+6.1f} ms   site {active[1] - disabled_[1]:+6.2f} ms")


if __name__ == "__main__":
    main()
