#!/usr/bin/env bash
# Create a virtual environment with everything sb3_safemeta needs (used by `make`, CI and the README).
# Usage: bash scripts/install.sh [VENV_DIR]
set -euo pipefail
venv="${1:-.venv}"
cd "$(dirname "$0")/.."
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip="$venv/bin/pip"
# 1. torch first, pinned: 2.13.0 CPU is the build on the project machines; an unpinned torch
#    (asked for by SB3) would pull a CUDA build of several GB.
"$pip" install --quiet --disable-pip-version-check torch==2.13.0
# 2. the package, its pinned SB3 stack and the extras for environments, rl-zoo3/Optuna, Ray workers and tests
#    (CI runs the Ray tests: tests/test_distributed*.py).
"$pip" install --quiet --disable-pip-version-check -e ".[envs,zoo,distributed,tests]"
#    An editable install cannot ship a .pth file of its own (a wheel install does): write the startup
#    hook that registers `--algo safemeta` / `safe_adapter` with rl-zoo3 (docs/guide/rl_zoo.md).
"$venv/bin/python" -m sb3_safemeta.zoo.install_hook install
# 3. Safety-Gymnasium 1.0.0 without its own pins (gymnasium==0.28.1, mujoco==2.3.3, pygame==2.1.0
#    cannot share an environment with SB3 2.x on Python 3.11); sb3_safemeta.envs.safety_gym_compat
#    adapts it at import time. See docs/guide/safety_gymnasium.md.
"$pip" install --quiet --disable-pip-version-check --no-deps safety-gymnasium==1.0.0
"$venv/bin/python" -c "import sb3_safemeta, torch, stable_baselines3, sb3_contrib; print('sb3_safemeta', sb3_safemeta.__version__, '| torch', torch.__version__, '| SB3', stable_baselines3.__version__)"
