"""Optional compiled build (mypyc) of the hot modules, loaded only when it matches the sources.

The pure-Python modules are the reference: they are what the tests run and what every machine
runs, with or without a C compiler. `p4mtcp accel build` (p4mtcp/accelbuild.py) compiles the
modules named in COMPILED, in one build of a few groups, into a folder with a manifest of the
SHA-256 of every source it was compiled from. With ``P4MTCP_ACCEL=1`` in the environment,
``p4mtcp``'s ``__init__`` calls :func:`install` before any other p4mtcp module is imported: a
finder placed first on ``sys.meta_path`` hands out the compiled modules of every group whose
sources all still hash as in the manifest (none added or removed) and whose groups it calls
into are loaded too; for any other group it warns, naming the first file that differs, and
that group stays pure Python. Compiled modules call each other directly, also across groups:
a compiled module beside an edited source of one it calls would run that one's old code, so
the check covers a group and every group it imports. A compiled module never stands in for an
edited source.

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
FORMAT = 4

# What the build compiles, one module per line: (module, group). A package stands for every
# module below it (sub-packages' __init__ included) but its own __init__.py. The modules of a
# group are checked together, so an edit in one group leaves the others compiled: keep modules
# that are edited together (or by different people) in groups of their own. To compile another
# module, add its line here and run `p4mtcp accel build`.
COMPILED = (
    ("p4mtcp.control.tcp", "engine"),          # the sans-IO TCP engine
    ("p4mtcp.hashing", "hashing"),             # checksums and the RSS hash: engine and NIC
    ("p4mtcp.dataplane.tables", "nic"),        # the NIC: table lookups and counters
    ("p4mtcp.dataplane.pipeline", "nic"),      # the NIC: the P4 program
    ("p4mtcp.dataplane.flowcache", "nic"),     # the NIC: the flow cache's per-frame glue
    ("p4mtcp.link.frames", "nic"),             # the NIC's AF_PACKET edge: frame fix-ups
    ("p4mtcp.link.afpacket", "nic"),           # the NIC's AF_PACKET edge: PACKET_MMAP rings
    ("p4mtcp.link.shmring", "nic"),            # core links: the shared-memory frame rings
    ("p4mtcp.link.shm", "nic"),                # core links: their doorbells and set-up
    ("p4mtcp.link.unix", "nic"),               # UNIX-socket links: NIC to NIC, and the old core link
    ("p4mtcp.control.context", "core"),        # a core's loop, socket table and epoll wiring
    ("p4mtcp.control.epoll", "core"),          # mTCP epoll bookkeeping
    ("p4mtcp.control.netif", "core"),          # a core's Ethernet/IPv4 framing
    ("p4mtcp.apps.http", "core"),              # epserver's and epwget's HTTP parsing
)
# Modules under a listed package that stay Python: the tracer runs only when an application
# attaches one.
EXCLUDED = ("p4mtcp.control.tcp.trace",)
# Hand-written C modules the build compiles beside mypyc's: (module, its C source under the
# p4mtcp package, group, the groups whose C it calls). A C module has no Python source to fall
# back on: the module that imports it keeps the reference code and uses the C only when the
# import succeeds, which it does only while the C source hashes as in the manifest (like any
# other group) and so do the groups it calls.
NATIVE = (
    ("p4mtcp._csum", "csum.c", "csum", ()),  # the RFC 1071 sum for hashing.ones_sum
    ("p4mtcp._flowcache", "flowcache.c", "flowcache", ("csum",)),  # the NIC's fast path
)

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


def groups() -> dict[str, str]:
    """Module name -> its group, for every module the build compiles (COMPILED, expanded, and
    NATIVE)."""
    out = {module: group for name, group in COMPILED for module in _expand(name)}
    out.update((module, group) for module, _, group, _ in NATIVE)
    return out


def sources() -> dict[str, Path]:
    """Module name -> source file of every module the build compiles (COMPILED, expanded, and
    NATIVE's C files)."""
    out: dict[str, Path] = {}
    for name, _ in COMPILED:
        out.update(_expand(name))
    out.update(native_sources())
    return out


def native_sources() -> dict[str, Path]:
    """Module name -> C source of every NATIVE module."""
    package = Path(__file__).resolve().parent
    return {module: package / source for module, source, _, _ in NATIVE}


def _expand(name: str) -> dict[str, Path]:
    """Module name -> source of ``name``, or of every module below it if it is a package
    (EXCLUDED left out)."""
    spec = find_source_spec(name)
    if spec.origin is None or not spec.origin.endswith(".py"):
        raise BuildError(f"{name}: no Python source ({spec.origin})")
    if spec.submodule_search_locations is None:
        return {name: Path(spec.origin)}
    out: dict[str, Path] = {}
    root = Path(spec.origin).parent
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root)
        if "__pycache__" in rel.parts or rel == Path("__init__.py"):
            continue
        parts = rel.with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        module = ".".join((name, *parts))
        if module not in EXCLUDED:
            out[module] = file
    return out


def source_hashes(files: dict[str, Path] | None = None) -> dict[str, str]:
    """Module name -> SHA-256 of its source."""
    files = sources() if files is None else files
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


def _read_manifest(folder: Path) -> tuple[dict | None, str]:
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
    return manifest, ""


def usable_groups(folder: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """({group: its manifest entry} for the groups that may load, {group: why not} for the
    others). A group may load when it is built from exactly the current sources of the modules
    COMPILED assigns to it, all its files are there, and every group it imports may load."""
    manifest, why = _read_manifest(folder)
    try:
        files = sources()
        now = source_hashes(files)
        wanted = groups()
    except (BuildError, OSError) as exc:
        manifest, why = None, str(exc)
    if manifest is None:
        return {}, {"all": why}
    built: dict[str, dict] = manifest.get("groups", {})
    refused: dict[str, str] = {}
    for group in sorted(set(built) | set(wanted.values())):
        entry = built.get(group)
        mine = {m for m, g in wanted.items() if g == group}
        if entry is None:
            first = files[min(mine)]
            refused[group] = f"{first} was added after the build in {folder}"
            continue
        had = entry.get("modules", {})
        for name in sorted(mine | set(had)):
            if name not in mine:
                refused[group] = (f"module {name} was removed after the build in {folder}"
                                  if name not in now else
                                  f"{files[name]} moved to another group after the build")
            elif name not in had or had[name].get("sha256") != now[name]:
                what = "added" if name not in had else "edited"
                refused[group] = f"{files[name]} was {what} after the build in {folder}"
            else:
                continue
            break
        else:
            files_of = [*had.values(), *([entry["shared"]] if entry.get("shared") else [])]
            missing = [e["file"] for e in files_of if not (folder / e["file"]).is_file()]
            if missing:
                refused[group] = f"{folder / missing[0]} is missing: the build is incomplete"
    changed = True
    while changed:  # a group that calls into a refused group is refused too
        changed = False
        for group, entry in built.items():
            needs = [g for g in entry.get("needs", ()) if g in refused]
            if group not in refused and needs:
                refused[group] = f"it calls into group {needs[0]}, which stays Python"
                changed = True
    return {g: e for g, e in built.items() if g not in refused}, refused


def check(folder: Path) -> tuple[dict | None, str]:
    """(manifest, "") when ``folder`` holds a build of exactly the current sources for this
    interpreter, every group usable; else (None, why not), naming the first file that
    differs."""
    usable, refused = usable_groups(folder)
    if refused:
        group, why = min(refused.items())
        return None, why if group == "all" else f"group {group}: {why}"
    return _read_manifest(folder)[0], ""


class CompiledFinder:
    """First on ``sys.meta_path``: the build's extension module for each compiled name."""

    def __init__(self, folder: Path, groups: dict[str, dict]):
        self._files: dict[str, Path] = {}
        self._packages: set[str] = set()
        for entry in groups.values():
            for name, m in entry["modules"].items():
                self._files[name] = folder / m["file"]
                if m.get("package"):
                    self._packages.add(name)
            shared = entry.get("shared")          # mypyc's runtime, by its name (C: none)
            if shared:
                self._files[shared["name"]] = folder / shared["file"]

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
    """Called by ``p4mtcp/__init__`` before anything else is imported: with ``P4MTCP_ACCEL=1``,
    put a finder for the usable groups first and warn about the others (they stay Python).
    True when some group was loaded."""
    global _active
    if os.environ.get(ENV_ENABLE, "") not in ("1", "yes", "true"):
        return False
    if _active:
        return True
    usable, refused = usable_groups(build_dir())
    early = sorted(n for e in usable.values() for n in e["modules"] if n in sys.modules)
    if early:
        refused = {g: f"{early[0]} was imported before the compiled build could be installed"
                   for g in usable}
        usable = {}
    if refused:
        said = "; ".join(f"{'everything runs' if g == 'all' else f'group {g} runs'} pure "
                         f"Python: {why}" for g, why in sorted(refused.items()))
        warnings.warn(f"{ENV_ENABLE}=1: {said}", RuntimeWarning, stacklevel=3)
    if not usable:
        return False
    sys.meta_path.insert(0, CompiledFinder(build_dir(), usable))
    _active = True
    return True


def active() -> bool:
    """True when this process runs (part of) the compiled build."""
    return _active


def is_compiled(module: ModuleType) -> bool:
    """True when ``module`` was loaded from the compiled build."""
    return isinstance(getattr(module, "__spec__", None) and module.__spec__.loader,
                      importlib.machinery.ExtensionFileLoader)
