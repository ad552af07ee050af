"""Build the optional compiled TCP engine: ``python -m p4mtcp.control.tcp.accelbuild [--dir D]``.

Copies the package's sources into a scratch tree, compiles every module but the loader with
mypyc (``pip install mypy``; a C compiler), and installs the extension modules with a manifest
of the source hashes into the build folder that ``accel.activate`` checks before loading them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from .accel import ENV_ENABLE, MANIFEST, SOURCE_DIR, build_dir, check, sources


def build(dest: Path) -> Path:
    """Compile the package's modules with mypyc into ``dest`` (replacing an older build)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise RuntimeError("no C compiler (cc/gcc) on PATH: the pure-Python engine is used")
    if importlib.util.find_spec("mypyc") is None:
        raise RuntimeError("mypyc is not installed (pip install mypy)")
    with tempfile.TemporaryDirectory(prefix="p4mtcp-accel-") as tmp:
        work = Path(tmp)
        pkg = work / "p4mtcp" / "control" / "tcp"
        shutil.copytree(SOURCE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        hashes = sources(pkg)                      # what is compiled, even if edited meanwhile
        (work / "p4mtcp" / "__init__.py").write_text("")
        (work / "p4mtcp" / "control" / "__init__.py").write_text("")
        shutil.copy(_module_file("p4mtcp.hashing"), work / "p4mtcp" / "hashing.py")
        files = [f"p4mtcp/control/tcp/{name}" for name in hashes]
        proc = subprocess.run([sys.executable, "-m", "mypyc", *files], cwd=work,
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"mypyc failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        shared = [p for p in work.glob(f"*__mypyc{suffix}")]
        if len(shared) != 1:
            raise RuntimeError(f"mypyc left {len(shared)} runtime libraries in {work}")
        if dest.exists():
            shutil.rmtree(dest)
        out = dest / "pkg"
        for so in pkg.rglob(f"*{suffix}"):
            target = out / so.relative_to(pkg)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(so, target)
        shutil.copy2(shared[0], dest / shared[0].name)
    manifest = {"ext_suffix": suffix, "shared_lib": shared[0].name[:-len(suffix)],
                "shared_file": shared[0].name, "sources": hashes}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return dest


def _module_file(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot find the source of {name}")
    return spec.origin


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m p4mtcp.control.tcp.accelbuild",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--status", action="store_true", help="only say whether the build is usable")
    ap.add_argument("--dir", type=Path, default=None,
                    help="build folder (default: $P4MTCP_ACCEL_DIR, else ~/.cache/p4mtcp/accel/TAG)")
    args = ap.parse_args(argv)
    folder = args.dir or build_dir()
    if not args.status:
        try:
            build(folder)
        except RuntimeError as exc:
            print(f"accel build: {exc}", file=sys.stderr)
            return 1
        print(f"built {folder}; use it with {ENV_ENABLE}=1")
        return 0
    manifest, why = check(folder)
    print(f"usable: {folder}" if manifest else f"not usable: {why}")
    return 0 if manifest else 1


if __name__ == "__main__":
    raise SystemExit(main())
