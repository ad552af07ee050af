"""The optional compiled engine (control/tcp/accel.py) is loaded only when it matches the sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from p4mtcp.control.tcp import accel


def _fake_build(folder: Path, sources: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / accel.MANIFEST).write_text(json.dumps({
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"), "shared_lib": "x__mypyc",
        "shared_file": "x__mypyc.so", "sources": sources}))


def test_a_build_of_the_current_sources_is_usable(tmp_path: Path) -> None:
    _fake_build(tmp_path, accel.sources())
    manifest, why = accel.check(tmp_path)
    assert manifest is not None and why == ""


def test_an_edited_source_makes_the_build_unusable(tmp_path: Path) -> None:
    hashes = accel.sources()
    hashes["rtt.py"] = "0" * 64
    _fake_build(tmp_path, hashes)
    manifest, why = accel.check(tmp_path)
    assert manifest is None and why.endswith(f"rtt.py was edited after the build in {tmp_path}")


def test_an_added_module_makes_the_build_unusable(tmp_path: Path) -> None:
    hashes = accel.sources()
    del hashes["sack.py"]
    _fake_build(tmp_path, hashes)
    manifest, why = accel.check(tmp_path)
    assert manifest is None and "sack.py was added after the build" in why


def test_the_loader_itself_is_never_compiled() -> None:
    assert {"rtt.py", "connection.py", "congestion/cubic.py"} <= set(accel.sources())
    assert not {"__init__.py", "accel.py", "accelbuild.py", "trace.py"} & set(accel.sources())


def test_a_stale_build_is_refused_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    hashes = accel.sources()
    hashes["wire.py"] = "0" * 64
    _fake_build(tmp_path, hashes)
    monkeypatch.setenv(accel.ENV_ENABLE, "1")
    monkeypatch.setenv(accel.ENV_DIR, str(tmp_path))
    path = ["/somewhere"]
    with pytest.warns(RuntimeWarning, match="wire.py was edited"):
        assert accel.activate(path) is False
    assert path == ["/somewhere"]


def test_without_the_switch_nothing_is_looked_at(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(accel.ENV_ENABLE, raising=False)
    monkeypatch.setenv(accel.ENV_DIR, str(tmp_path / "missing"))
    path: list[str] = []
    assert accel.activate(path) is False and path == []


def test_the_compiled_engine_moves_bytes_when_built() -> None:
    """Runs only where `python -m p4mtcp.control.tcp.accelbuild` made a current build."""
    manifest, why = accel.check(accel.build_dir())
    if manifest is None:
        pytest.skip(why)
    code = (
        "from p4mtcp.control import tcp\n"
        "from p4mtcp.control.tcp import TcpConfig, TcpStack, connection\n"
        "assert tcp.ACCELERATED and connection.__file__.endswith('.so'), connection.__file__\n"
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
    )
    env = dict(os.environ, **{accel.ENV_ENABLE: "1"})
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
