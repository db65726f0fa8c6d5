import os

import torch as th

# Headless: Safety-Gymnasium imports pygame, MuJoCo may look for a display.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

# The networks are 2x64 MLPs on small batches: intra-op threads only contend with each other (and with
# the other pytest-xdist worker). On a loaded 2-core machine one SafeMetaDual meta-iteration took 24x
# longer with 2 threads than with 1 (measured side by side, docs/modules/safe_meta_dual.md).
th.set_num_threads(1)
