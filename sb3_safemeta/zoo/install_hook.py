"""
Install, remove or inspect the startup hook that lets ``python -m rl_zoo3.train --algo safemeta`` work.

    python -m sb3_safemeta.zoo.install_hook [install|uninstall|status] [--site-dir DIR]

A regular install (``pip install sb3_safemeta`` or a wheel) ships ``sb3_safemeta_zoo.pth`` at the root
of the wheel, so pip puts it into site-packages and removes it on uninstall. Setuptools' editable
installs (``pip install -e .``) cannot install a ``.pth`` file of the project's own (their wheel only
holds setuptools' ``__editable__`` finder), so ``scripts/install.sh`` runs ``install`` after
``pip install -e``. The file is the same in both cases: one line that loads
``sb3_safemeta/zoo/_startup.py`` by path if ``sb3_safemeta`` can be found, and does nothing otherwise.
"""

from __future__ import annotations

import argparse
import pathlib
import sysconfig

PTH_NAME = "sb3_safemeta_zoo.pth"

# One line (site.py executes .pth lines that start with "import"): find sb3_safemeta without importing
# it, load zoo/_startup.py from it as a standalone module (it appends a meta-path finder, nothing else).
PTH_LINE = (
    "import importlib.util as u, os, sys; "
    "s = u.find_spec('sb3_safemeta'); "
    "p = s and s.submodule_search_locations and os.path.join(list(s.submodule_search_locations)[0], 'zoo', '_startup.py'); "
    "h = p and os.path.isfile(p) and '_sb3_safemeta_zoo_startup' not in sys.modules "
    "and u.spec_from_file_location('_sb3_safemeta_zoo_startup', p); "
    "h and h.loader.exec_module(sys.modules.setdefault(h.name, u.module_from_spec(h)))\n"
)


def site_dir() -> pathlib.Path:
    """:return: the site-packages directory of this interpreter (``purelib``)"""
    return pathlib.Path(sysconfig.get_paths()["purelib"])


def install(directory: pathlib.Path | None = None) -> pathlib.Path:
    """Write ``sb3_safemeta_zoo.pth`` into ``directory`` (default: this interpreter's site-packages)."""
    path = (directory or site_dir()) / PTH_NAME
    path.write_text(PTH_LINE)
    return path


def uninstall(directory: pathlib.Path | None = None) -> pathlib.Path:
    """Remove the hook file if present."""
    path = (directory or site_dir()) / PTH_NAME
    path.unlink(missing_ok=True)
    return path


def is_installed(directory: pathlib.Path | None = None) -> bool:
    """:return: whether the hook file is present and current"""
    path = (directory or site_dir()) / PTH_NAME
    return path.is_file() and path.read_text() == PTH_LINE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sb3_safemeta.zoo.install_hook", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="status", choices=["install", "uninstall", "status"])
    parser.add_argument("--site-dir", type=pathlib.Path, default=None, help="target directory (default: site-packages)")
    args = parser.parse_args(argv)
    if args.action == "install":
        print(f"installed {install(args.site_dir)}")
    elif args.action == "uninstall":
        print(f"removed {uninstall(args.site_dir)}")
    else:
        where = (args.site_dir or site_dir()) / PTH_NAME
        print(f"{where}: {'installed' if is_installed(args.site_dir) else 'not installed'}")


if __name__ == "__main__":
    main()
