"""The optional compiled build (p4mtcp/accel.py) is loaded only when it matches every source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from p4mtcp import accel, accelbuild


# A NIC module of the build: the newest of the packages the build covers.
NIC_MODULE = next(n for n in sorted(accel.sources()) if n.startswith(("p4mtcp.dataplane.",
                                                                      "p4mtcp.link.")))


def _fake_build(folder: Path, hashes: dict[str, str]) -> None:
    """A manifest for `hashes`, with empty stand-ins for the files it names (never loaded)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    modules = {n: {"sha256": h, "file": n.replace(".", "/") + suffix} for n, h in hashes.items()}
    for m in modules.values():
        (folder / m["file"]).parent.mkdir(parents=True, exist_ok=True)
        (folder / m["file"]).write_bytes(b"")
    (folder / f"x__mypyc{suffix}").write_bytes(b"")
    (folder / accel.MANIFEST).write_text(json.dumps({
        "format": accel.FORMAT, "ext_suffix": suffix, "modules": modules,
        "shared": {"name": "x__mypyc", "file": f"x__mypyc{suffix}"}}))


def test_one_build_covers_the_engine_and_the_nic_modules() -> None:
    names = set(accel.sources())
    assert {"p4mtcp.control.tcp.connection", "p4mtcp.control.tcp.congestion",
            "p4mtcp.control.tcp.congestion.cubic", "p4mtcp.hashing"} <= names
    assert {"p4mtcp.link.frames"} <= names


def test_the_loader_and_the_tracer_stay_python() -> None:
    names = set(accel.sources())
    assert not {"p4mtcp.accel", "p4mtcp.accelbuild", "p4mtcp.control.tcp",
                "p4mtcp.control.tcp.trace"} & names


def test_a_build_of_the_current_sources_is_usable(tmp_path: Path) -> None:
    _fake_build(tmp_path, accel.source_hashes())
    manifest, why = accel.check(tmp_path)
    assert manifest is not None and why == ""


def test_an_edited_nic_source_makes_the_build_unusable(tmp_path: Path) -> None:
    hashes = accel.source_hashes()
    hashes[NIC_MODULE] = "0" * 64
    _fake_build(tmp_path, hashes)
    manifest, why = accel.check(tmp_path)
    assert manifest is None
    assert why == f"{accel.sources()[NIC_MODULE]} was edited after the build in {tmp_path}"


def test_an_added_module_makes_the_build_unusable(tmp_path: Path) -> None:
    hashes = accel.source_hashes()
    del hashes[NIC_MODULE]
    _fake_build(tmp_path, hashes)
    manifest, why = accel.check(tmp_path)
    assert manifest is None and f"{accel.sources()[NIC_MODULE]} was added after the build" in why


def test_a_removed_module_makes_the_build_unusable(tmp_path: Path) -> None:
    hashes = accel.source_hashes()
    hashes["p4mtcp.dataplane.gone"] = "0" * 64
    _fake_build(tmp_path, hashes)
    manifest, why = accel.check(tmp_path)
    assert manifest is None and why.startswith("module p4mtcp.dataplane.gone was removed")


def test_a_build_missing_a_file_is_unusable(tmp_path: Path) -> None:
    _fake_build(tmp_path, accel.source_hashes())
    manifest = json.loads((tmp_path / accel.MANIFEST).read_text())
    (tmp_path / manifest["modules"]["p4mtcp.hashing"]["file"]).unlink()
    assert accel.check(tmp_path)[0] is None


def test_a_stale_build_is_refused_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    hashes = accel.source_hashes()
    hashes[NIC_MODULE] = "0" * 64
    _fake_build(tmp_path, hashes)
    monkeypatch.setenv(accel.ENV_ENABLE, "1")
    monkeypatch.setenv(accel.ENV_DIR, str(tmp_path))
    before = list(sys.meta_path)
    source = str(accel.sources()[NIC_MODULE])
    with pytest.warns(RuntimeWarning, match=f"{source} was edited"):
        assert accel.install() is False
    assert sys.meta_path == before and not accel.active()


def test_without_the_switch_nothing_is_looked_at(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(accel.ENV_ENABLE, raising=False)
    monkeypatch.setenv(accel.ENV_DIR, str(tmp_path / "missing"))
    before = list(sys.meta_path)
    assert accel.install() is False and sys.meta_path == before


def test_without_a_c_compiler_the_build_says_so_and_changes_nothing(tmp_path: Path, monkeypatch,
                                                                    capsys) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert accelbuild.main(["build", "--dir", str(tmp_path / "b")]) == 1
    assert "no C compiler" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def _current_build() -> Path:
    folder = accel.build_dir()
    manifest, why = accel.check(folder)
    if manifest is None:
        pytest.skip(why)
    return folder


def _run(code: str, folder: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{accel.ENV_ENABLE: "1", accel.ENV_DIR: str(folder)})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_compiled_build_runs_the_engine_and_the_nic_when_built() -> None:
    """Runs only where `p4mtcp accel build` made a current build."""
    folder = _current_build()
    code = (
        "import sys\n"
        "from p4mtcp import accel\n"
        "from p4mtcp.control import tcp\n"
        "from p4mtcp.control.tcp import TcpConfig, TcpStack\n"
        "import p4mtcp.hashing\n"
        "for name in sorted(accel.sources()):\n"
        "    __import__(name)\n"
        "    assert sys.modules[name].__file__.endswith('.so'), sys.modules[name].__file__\n"
        "assert tcp.ACCELERATED and accel.active()\n"
        "a = TcpStack(TcpConfig(), b'k' * 16); b = TcpStack(TcpConfig(), b'j' * 16)\n"
        "lst = b.listen(2, 80, 4); c = a.connect(1, 4000, 2, 80, 0.0)\n"
        "for _ in range(20):\n"
        "    for s, d in ((a, b), (b, a)):\n"
        "        for src, dst, seg in s.poll(0.0): d.receive(src, dst, seg, 0.0)\n"
        "    if lst.pending: s2 = lst.accept(); c.send(b'x' * 5000)\n"
        "got = b''\n"
        "for _ in range(50):\n"
        "    for s, d in ((a, b), (b, a)):\n"
        "        for src, dst, seg in s.poll(0.0): d.receive(src, dst, seg, 0.0)\n"
        "    got += s2.recv(10000)\n"
        "assert got == b'x' * 5000, len(got)\n"
        "assert p4mtcp.hashing.csum16(b'\\x45\\x00\\x00\\x1c') == 0xbae3\n"
    )
    proc = _run("import warnings; warnings.simplefilter('error', RuntimeWarning)\n" + code,
                folder)
    assert proc.returncode == 0, proc.stderr


def test_an_edited_nic_source_falls_back_with_the_warning(tmp_path: Path) -> None:
    """A real build whose manifest no longer matches a NIC source (as after an edit of it):
    the process warns, naming the file, and imports every module from its source."""
    folder = tmp_path / "build"
    shutil.copytree(_current_build(), folder)
    manifest = json.loads((folder / accel.MANIFEST).read_text())
    name = NIC_MODULE
    manifest["modules"][name]["sha256"] = "0" * 64
    (folder / accel.MANIFEST).write_text(json.dumps(manifest))
    proc = _run(
        "import sys\n"
        "from p4mtcp import accel\n"
        "from p4mtcp.control import tcp\n"
        f"import {name} as m\n"
        "assert m.__file__.endswith('.py') and not tcp.ACCELERATED and not accel.active()\n"
        "assert sys.modules['p4mtcp.control.tcp.connection'].__file__.endswith('.py')\n",
        folder)
    assert proc.returncode == 0, proc.stderr
    source = accel.sources()[name]
    assert f"{accel.ENV_ENABLE}=1 ignored, running pure Python: {source} was edited" in proc.stderr
