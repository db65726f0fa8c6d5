"""
Install, remove or inspect the startup hook that lets ``python -m rl_zoo3.train --algo safemeta`` work.

    python -m sb3_safemeta.zoo.install_hook [install|uninstall|status] [--site-dir DIR]

rl-zoo3 has no plugin mechanism, so the literal ``python -m rl_zoo3.train --algo safemeta`` needs code that
runs at interpreter start-up: a ``.pth`` line in site-packages. It is opt-in, written only by ``install``
(``scripts/install.sh`` runs it, since it installs the ``zoo`` extra); without it, use the launcher
``python -m sb3_safemeta.zoo.train`` (or ``sb3-safemeta-zoo-train``), rl-zoo3's documented pattern.

The line is cheap and safe: it reads ``SB3_SAFEMETA_NO_ZOO_HOOK`` first (``os`` and ``sys`` are already loaded
at that point, so nothing is imported), then inserts a finder that reads no file at start-up; only when a
watched rl-zoo3 module is imported does it execute ``_startup.py``, by the absolute path of THIS installed
package, fixed when the line is written, never a file found on ``sys.path`` (a writable directory on
``PYTHONPATH`` must not become code that every Python process runs). If the package is removed, the line finds
no file and does nothing.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sysconfig

PTH_NAME = "sb3_safemeta_zoo.pth"

STARTUP_MODULE = "_sb3_safemeta_zoo_startup"
OPT_OUT = "SB3_SAFEMETA_NO_ZOO_HOOK"


def startup_path() -> pathlib.Path:
    """:return: the absolute path of this installed package's ``zoo/_startup.py``"""
    return pathlib.Path(__file__).resolve().with_name("_startup.py")


def pth_line(startup: pathlib.Path | None = None) -> str:
    """
    The one line of ``sb3_safemeta_zoo.pth`` (site.py executes lines that start with ``import``). Unless opted out,
    it inserts a finder built with ``type()`` that reads no file: for the watched rl-zoo3 modules only, it executes
    ``startup`` once (by its absolute path) and hands the lookup to its ``FINDER``; for every other import it
    answers None after one tuple lookup.

    :param startup: the file to execute (default: :func:`startup_path`)
    :return: the line
    """
    path = str(startup or startup_path())
    watched = ("rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager")
    load = (
        # the lambda runs later, with site.py's globals: it names sys through __import__ (a dict lookup, sys is loaded)
        f"(__import__('sys').modules.get({STARTUP_MODULE!r}) or (lambda m, f: (exec(compile(f.read(), {path!r}, 'exec'), "
        f"m.__dict__), f.close(), m)[2])(__import__('sys').modules.setdefault({STARTUP_MODULE!r}, "
        f"type(__import__('sys'))({STARTUP_MODULE!r})), open({path!r}, 'rb')))"
    )
    find_spec = (
        f"lambda self, name, path=None, target=None: {load}.FINDER.find_spec(name, path, target) "
        f"if name in {watched!r} else None"
    )
    return (
        f"import os, sys; os.environ.get({OPT_OUT!r}) or not os.path.isfile({path!r}) "
        "or any(getattr(f, 'sb3_safemeta_zoo_hook', False) for f in sys.meta_path) "
        "or sys.meta_path.insert(0, type('Sb3SafemetaZooHook', (), "
        f"{{'sb3_safemeta_zoo_hook': True, 'find_spec': {find_spec}}})())\n"
    )


def site_dir() -> pathlib.Path:
    """:return: the site-packages directory of this interpreter (``purelib``)"""
    return pathlib.Path(sysconfig.get_paths()["purelib"])


def install(directory: pathlib.Path | None = None) -> pathlib.Path:
    """Write ``sb3_safemeta_zoo.pth`` into ``directory`` (default: this interpreter's site-packages)."""
    path = (directory or site_dir()) / PTH_NAME
    path.write_text(pth_line())
    return path


def uninstall(directory: pathlib.Path | None = None) -> pathlib.Path:
    """Remove the hook file if present."""
    path = (directory or site_dir()) / PTH_NAME
    path.unlink(missing_ok=True)
    return path


def installed_startup(directory: pathlib.Path | None = None) -> pathlib.Path | None:
    """:return: the ``_startup.py`` that the hook file in ``directory`` executes, if the file is a current hook line"""
    path = (directory or site_dir()) / PTH_NAME
    if not path.is_file():
        return None
    content = path.read_text()
    for candidate in _string_literals(content):
        if candidate.endswith("_startup.py") and content == pth_line(pathlib.Path(candidate)):
            return pathlib.Path(candidate)
    return None


def _string_literals(line: str) -> list[str]:
    """:return: the string constants of a Python line (the hook line is valid Python)"""
    return [node.value for node in ast.walk(ast.parse(line)) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def is_installed(directory: pathlib.Path | None = None) -> bool:
    """:return: whether a current hook line is in ``directory`` and the file it runs exists (any checkout)"""
    startup = installed_startup(directory)
    return startup is not None and startup.is_file()


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
