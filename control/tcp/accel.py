"""Optional compiled build of the TCP engine (mypyc), loaded only when it matches the sources.

The pure-Python modules are the reference: they are what the tests run and what every machine
runs, with or without a C compiler. ``python -m p4mtcp.control.tcp.accelbuild`` compiles this
package with mypyc (``pip install mypy`` and a C compiler needed) into a build folder with a
manifest of the SHA-256 of every source it was compiled from. With ``P4MTCP_ACCEL=1`` in the
environment, the package's ``__init__`` puts that folder ahead of the sources on its search path
(:func:`activate`) — but only when every source still hashes as in the manifest and no module was
added or removed; otherwise it warns, naming the first file that differs, and stays pure Python.
So a compiled module can never stand in for a source that was edited after the build.

The folder is ``$P4MTCP_ACCEL_DIR``, default ``~/.cache/p4mtcp/accel/<interpreter tag>``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import sysconfig
import warnings
from pathlib import Path

ENV_ENABLE = "P4MTCP_ACCEL"
ENV_DIR = "P4MTCP_ACCEL_DIR"
PACKAGE = "p4mtcp.control.tcp"
SOURCE_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
# The loader stays Python; so does the tracer, which runs only when an application attaches it.
_NOT_COMPILED = {"__init__.py", "accel.py", "accelbuild.py", "trace.py"}


def build_dir() -> Path:
    """Where the compiled build lives (``$P4MTCP_ACCEL_DIR`` or the per-interpreter cache)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "p4mtcp" / "accel" / sys.implementation.cache_tag


def sources(root: Path = SOURCE_DIR) -> dict[str, str]:
    """Relative path -> SHA-256 of every module that is compiled."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.py"))
            if "__pycache__" not in p.parts
            and not (p.parent == root and p.name in _NOT_COMPILED)}


def check(folder: Path) -> tuple[dict | None, str]:
    """(manifest, "") when ``folder`` holds a build of exactly the current sources for this
    interpreter; else (None, why not)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None, f"no build in {folder} (python -m {PACKAGE}.accelbuild)"
    except (OSError, ValueError) as exc:
        return None, f"{folder / MANIFEST}: unreadable manifest ({exc})"
    if manifest.get("ext_suffix") != sysconfig.get_config_var("EXT_SUFFIX"):
        return None, f"{folder} was built for another interpreter ({manifest.get('ext_suffix')})"
    built = manifest.get("sources", {})
    now = sources()
    for name in sorted(set(built) | set(now)):
        if built.get(name) != now.get(name):
            what = "added" if name not in built else "removed" if name not in now else "edited"
            return None, f"{SOURCE_DIR / name} was {what} after the build in {folder}"
    return manifest, ""


def activate(package_path: list[str]) -> bool:
    """Called by the package ``__init__`` before it imports anything else: with
    ``P4MTCP_ACCEL=1`` and a build that matches the sources, search the build first."""
    if os.environ.get(ENV_ENABLE, "") not in ("1", "yes", "true"):
        return False
    folder = build_dir()
    manifest, why = check(folder)
    if manifest is None:
        warnings.warn(f"{ENV_ENABLE}=1 ignored, running the pure-Python engine: {why}",
                      RuntimeWarning, stacklevel=3)
        return False
    shared = manifest["shared_lib"]            # mypyc's runtime module, imported by name
    if shared not in sys.modules:
        spec = importlib.util.spec_from_file_location(shared, folder / manifest["shared_file"])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[shared] = module
        spec.loader.exec_module(module)
    package_path.insert(0, str(folder / "pkg"))
    return True
