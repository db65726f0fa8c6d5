import os

# Headless: Safety-Gymnasium imports pygame, MuJoCo may look for a display.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
