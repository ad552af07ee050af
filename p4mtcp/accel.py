"""Optional compiled build (mypyc) of the hot modules, loaded only when it matches the sources.

The pure-Python modules are the reference: they are what the tests run and what every machine
runs, with or without a C compiler. `p4mtcp accel build` (p4mtcp/accelbuild.py) compiles the
modules named in COMPILED, all in one build, into a folder with a manifest of the SHA-256 of
every source it was compiled from. With ``P4MTCP_ACCEL=1`` in the environment, ``p4mtcp``'s
``__init__`` calls :func:`install` before any other p4mtcp module is imported: if every listed
source still hashes as in the manifest and none was added or removed, a finder placed first on
``sys.meta_path`` hands out the compiled modules; otherwise it warns, naming the first file that
differs, and everything stays pure Python. The check is all or nothing because compiled modules
call each other directly: one compiled module beside an edited source of another would run the
other's old code. So a compiled module never stands in for an edited source.

The folder is ``$P4MTCP_ACCEL_DIR``, default ``~/.cache/p4mtcp/accel/<interpreter tag>``.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

ENV_ENABLE = "P4MTCP_ACCEL"
ENV_DIR = "P4MTCP_ACCEL_DIR"
MANIFEST = "manifest.json"
FORMAT = 2

# What the build compiles, one module per line; a package stands for every module below it
# (sub-packages' __init__ included) but its own __init__.py. To compile another module, add its
# line here and run `p4mtcp accel build`.
COMPILED = (
    "p4mtcp.control.tcp",             # the sans-IO TCP engine
    "p4mtcp.hashing",                 # checksums and the RSS hash: engine and pipeline
    "p4mtcp.link.frames",             # the NIC's AF_PACKET edge: frame fix-ups
)
# Modules under a listed package that stay Python: the tracer runs only when an application
# attaches one.
EXCLUDED = ("p4mtcp.control.tcp.trace",)

_active = False


class BuildError(RuntimeError):
    """The build or the sources cannot be used, and why."""


def build_dir() -> Path:
    """Where the compiled build lives (``$P4MTCP_ACCEL_DIR`` or the per-interpreter cache)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "p4mtcp" / "accel" / sys.implementation.cache_tag


def find_source_spec(name: str) -> importlib.machinery.ModuleSpec:
    """The spec of module ``name`` as the import system would find its source, without
    importing it or any package above it (a package's ``__init__`` may import the very
    modules that are to be compiled). Our own finder is skipped: this is about sources."""
    parent, _, _ = name.rpartition(".")
    path = None
    if parent:
        parent_spec = find_source_spec(parent)
        path = parent_spec.submodule_search_locations
        if path is None:
            raise BuildError(f"{parent} is not a package, so {name} cannot be in it")
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None or isinstance(finder, CompiledFinder):
            continue
        spec = find(name, path)
        if spec is not None:
            return spec
    raise BuildError(f"module {name} (listed in p4mtcp.accel.COMPILED) not found")


def sources() -> dict[str, Path]:
    """Module name -> source file of every module the build compiles (COMPILED, expanded)."""
    out: dict[str, Path] = {}
    for name in COMPILED:
        spec = find_source_spec(name)
        if spec.origin is None or not spec.origin.endswith(".py"):
            raise BuildError(f"{name}: no Python source ({spec.origin})")
        if spec.submodule_search_locations is None:
            out[name] = Path(spec.origin)
            continue
        root = Path(spec.origin).parent
        for file in sorted(root.rglob("*.py")):
            rel = file.relative_to(root)
            if "__pycache__" in rel.parts or rel == Path("__init__.py"):
                continue
            parts = rel.with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((name, *parts))] = file
    for name in EXCLUDED:
        out.pop(name, None)
    return out


def source_hashes(files: dict[str, Path] | None = None) -> dict[str, str]:
    """Module name -> SHA-256 of its source."""
    files = sources() if files is None else files
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


def check(folder: Path) -> tuple[dict | None, str]:
    """(manifest, "") when ``folder`` holds a build of exactly the current sources for this
    interpreter; else (None, why not), naming the first file that differs."""
    import sysconfig

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None, f"no build in {folder} (p4mtcp accel build)"
    except (OSError, ValueError) as exc:
        return None, f"{folder / MANIFEST}: unreadable manifest ({exc})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None, f"{folder} holds a build of an older format (p4mtcp accel build)"
    if manifest.get("ext_suffix") != sysconfig.get_config_var("EXT_SUFFIX"):
        return None, f"{folder} was built for another interpreter ({manifest.get('ext_suffix')})"
    try:
        files = sources()
        now = source_hashes(files)
    except (BuildError, OSError) as exc:
        return None, str(exc)
    built = {name: m.get("sha256") for name, m in manifest.get("modules", {}).items()}
    for name in sorted(set(built) | set(now)):
        if built.get(name) != now.get(name):
            if name not in now:
                return None, f"module {name} was removed after the build in {folder}"
            what = "added" if name not in built else "edited"
            return None, f"{files[name]} was {what} after the build in {folder}"
    for entry in [*manifest["modules"].values(), manifest["shared"]]:
        if not (folder / entry["file"]).is_file():
            return None, f"{folder / entry['file']} is missing: the build is incomplete"
    return manifest, ""


class CompiledFinder:
    """First on ``sys.meta_path``: the build's extension module for each compiled name."""

    def __init__(self, folder: Path, manifest: dict):
        self._files = {name: folder / m["file"] for name, m in manifest["modules"].items()}
        self._packages = {name for name, m in manifest["modules"].items() if m.get("package")}
        shared = manifest["shared"]
        self._files[shared["name"]] = folder / shared["file"]  # mypyc's runtime, by its name

    def names(self) -> frozenset[str]:
        return frozenset(self._files)

    def find_spec(self, fullname: str, path=None, target: ModuleType | None = None):
        file = self._files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        # a compiled package __init__ keeps its sources' folder for any module not compiled
        locations = None
        if fullname in self._packages:
            locations = find_source_spec(fullname).submodule_search_locations
        return importlib.util.spec_from_file_location(fullname, file, loader=loader,
                                                      submodule_search_locations=locations)


def install() -> bool:
    """Called by ``p4mtcp/__init__`` before anything else is imported: with ``P4MTCP_ACCEL=1``
    and a build that matches the sources, put its finder first; else warn and stay Python."""
    global _active
    if os.environ.get(ENV_ENABLE, "") not in ("1", "yes", "true"):
        return False
    if _active:
        return True
    folder = build_dir()
    manifest, why = check(folder)
    if manifest is None:
        warnings.warn(f"{ENV_ENABLE}=1 ignored, running pure Python: {why}", RuntimeWarning,
                      stacklevel=3)
        return False
    loaded = sorted(n for n in manifest["modules"] if n in sys.modules)
    if loaded:
        warnings.warn(f"{ENV_ENABLE}=1 ignored, running pure Python: {loaded[0]} was imported "
                      "before the compiled build could be installed", RuntimeWarning, stacklevel=3)
        return False
    sys.meta_path.insert(0, CompiledFinder(folder, manifest))
    _active = True
    return True


def active() -> bool:
    """True when this process runs the compiled build."""
    return _active


def is_compiled(module: ModuleType) -> bool:
    """True when ``module`` was loaded from the compiled build."""
    return isinstance(getattr(module, "__spec__", None) and module.__spec__.loader,
                      importlib.machinery.ExtensionFileLoader)
