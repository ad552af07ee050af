"""`p4mtcp accel build|status`: compile the modules of ``p4mtcp.accel.COMPILED`` with mypyc.

The build copies the sources to compile, and the p4mtcp modules they import (for their types),
into a scratch tree laid out by module name, compiles the listed ones in one mypyc run, one
shared library per group (compiled modules call each other directly, also across groups), and
installs the extension modules with a manifest of the source hashes and of the groups each group
calls into, in the folder that ``p4mtcp.accel.install`` checks before loading anything from it. It needs mypy (``pip install
-e '.[accel]'``) and a C compiler; without them it says so and nothing changes: p4mtcp runs as
pure Python.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from .accel import (ENV_ENABLE, FORMAT, MANIFEST, NATIVE, BuildError, build_dir,
                    find_source_spec, groups, native_sources, source_hashes, sources,
                    usable_groups)

# Given to mypy: modules imported only for their types are followed but not judged, and
# libraries without type information (grpc, protobuf) are Any.
MYPY_FLAGS = ("--follow-imports=silent", "--ignore-missing-imports")


_SETUP = """\
from setuptools import Extension, setup
from mypyc.build import mypycify

native = [Extension(name, [source], extra_compile_args=["-O3"]) for name, source in {native!r}]
setup(name="p4mtcp_accel",
      ext_modules=mypycify({args!r}, separate={separate!r}, opt_level="3") + native)
"""


def build(dest: Path) -> Path:
    """Compile the listed modules with mypyc, and the NATIVE C modules, into ``dest``
    (replacing an older build)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise BuildError("no C compiler (cc/gcc) on PATH: p4mtcp runs as pure Python")
    if importlib.util.find_spec("mypyc") is None:
        raise BuildError("mypyc is not installed (pip install -e '.[accel]')")
    native = native_sources()
    compiled = {name: path for name, path in sources().items() if name not in native}
    group_of = groups()
    with tempfile.TemporaryDirectory(prefix="p4mtcp-accel-") as tmp:
        work = Path(tmp)
        copied = _copy_tree(compiled, work)
        for name, path in native.items():  # beside the package's Python modules
            copied[name] = work / "p4mtcp" / path.name
            shutil.copyfile(path, copied[name])
        hashes = source_hashes({name: copied[name] for name in [*compiled, *native]})
        rel = {name: str(copied[name].relative_to(work)) for name in compiled}
        names = sorted({group_of[m] for m in compiled})  # the mypyc groups
        separate = [([rel[m] for m in sorted(compiled) if group_of[m] == g], _lib(g))
                    for g in names]
        (work / "setup.py").write_text(_SETUP.format(
            args=[*MYPY_FLAGS, *sorted(rel.values())], separate=separate,
            native=[(name, str(copied[name].relative_to(work))) for name in sorted(native)]))
        proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=work,
                              capture_output=True, text=True)
        if proc.returncode:
            raise BuildError(f"mypyc failed:\n{proc.stdout[-6000:]}{proc.stderr[-4000:]}")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        built: dict[str, dict] = {}
        for g in names:
            shared = work / f"{_lib(g)}__mypyc{suffix}"
            if not shared.is_file():
                raise BuildError(f"mypyc left no runtime library {shared.name} for group {g}")
            shutil.copy2(shared, dest / shared.name)
            built[g] = {"shared": {"name": f"{_lib(g)}__mypyc", "file": shared.name},
                        "needs": _needs(g, group_of, copied), "modules": {}}
        for _, _, g, needs in NATIVE:
            built[g] = {"shared": None, "needs": sorted(needs), "modules": {}}
        for name in sorted([*compiled, *native]):
            source = copied[name]
            stem = name.rpartition(".")[2] if name in native else source.stem
            ext = source.with_name(stem + suffix).relative_to(work)
            if not (work / ext).is_file():
                raise BuildError(f"the build left no extension module {ext} for {name}")
            (dest / ext).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / ext, dest / ext)
            built[group_of[name]]["modules"][name] = {
                "sha256": hashes[name], "file": ext.as_posix(),
                "package": source.name == "__init__.py"}
    manifest = {"format": FORMAT, "ext_suffix": suffix, "groups": built}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return dest


def _lib(group: str) -> str:
    """A group's name for mypyc: its runtime library is this + "__mypyc", a top-level module."""
    return f"p4mtcp_accel_{group}"


def _needs(group: str, group_of: dict[str, str], copied: dict[str, Path]) -> list[str]:
    """The other groups whose modules the group's modules import (or could reach through a
    package that holds them): its compiled code may call theirs directly."""
    needs: set[str] = set()
    for name, g in group_of.items():
        if g != group:
            continue
        source = copied[name]
        for imported in _p4mtcp_imports(source.read_text(), name, source.name == "__init__.py"):
            if imported == "p4mtcp":
                continue
            needs.update(og for other, og in group_of.items() if og != group and
                         (other == imported or other.startswith(imported + ".")))
    return sorted(needs)


def _copy_tree(compiled: dict[str, Path], work: Path) -> dict[str, Path]:
    """Copy the modules to compile and every p4mtcp module they import, directly or not, into
    ``work`` by module name (with the ``__init__`` of each package on the way): module name ->
    its copy."""
    copied: dict[str, Path] = {}
    todo = list(compiled)
    while todo:
        name = todo.pop()
        if name in copied:
            continue
        try:
            spec = find_source_spec(name)
        except BuildError:
            continue  # `from pkg import name` where name is not a module
        if spec.origin is None or not spec.origin.endswith(".py"):
            continue
        is_pkg = spec.submodule_search_locations is not None
        rel = Path(*name.split("."), "__init__.py") if is_pkg else Path(*name.split(".")).with_suffix(".py")
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec.origin, target)
        copied[name] = target
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)
        todo.extend(_p4mtcp_imports(target.read_text(), name, is_pkg))
    return copied


def _p4mtcp_imports(source: str, name: str, is_pkg: bool) -> set[str]:
    """The p4mtcp modules (and possible modules: `from X import y` may name a module y) a
    source imports."""
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return {m for m in out if m == "p4mtcp" or m.startswith("p4mtcp.")}


def status(folder: Path) -> tuple[bool, str]:
    usable, refused = usable_groups(folder)
    lines = [f"group {g}: compiled, {len(e['modules'])} modules" for g, e in sorted(usable.items())]
    lines += [f"group {g}: pure Python: {why}" if g != "all" else f"not usable: {why}"
              for g, why in sorted(refused.items())]
    if usable:
        lines.append(f"{folder}: load it with {ENV_ENABLE}=1")
    return not refused, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="p4mtcp accel", description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("build", "status"),
                    help="build: compile (needs mypy and a C compiler); status: is the build "
                         "there and current")
    ap.add_argument("--dir", type=Path, default=None,
                    help="build folder (default: $P4MTCP_ACCEL_DIR, else ~/.cache/p4mtcp/accel/TAG)")
    args = ap.parse_args(argv)
    folder = args.dir or build_dir()
    if args.action == "build":
        try:
            build(folder)
        except BuildError as exc:
            print(f"p4mtcp accel build: {exc}", file=sys.stderr)
            return 1
        print(f"built {folder}; use it with {ENV_ENABLE}=1")
        return 0
    ok, text = status(folder)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
