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
    """A manifest for `hashes`, grouped as COMPILED says, with empty stand-ins for the files it
    names (never loaded)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    group_of = accel.groups()
    built: dict[str, dict] = {}
    for name, sha in hashes.items():
        group = group_of.get(name, "nic")
        entry = built.setdefault(group, {
            "shared": {"name": f"{group}__mypyc", "file": f"{group}__mypyc{suffix}"},
            "needs": ["hashing"] if group != "hashing" else [], "modules": {}})
        entry["modules"][name] = {"sha256": sha, "file": name.replace(".", "/") + suffix}
    for entry in built.values():
        for m in [*entry["modules"].values(), entry["shared"]]:
            (folder / m["file"]).parent.mkdir(parents=True, exist_ok=True)
            (folder / m["file"]).write_bytes(b"")
    (folder / accel.MANIFEST).write_text(json.dumps({
        "format": accel.FORMAT, "ext_suffix": suffix, "groups": built}))


def test_one_build_covers_the_engine_and_the_nic_modules() -> None:
    names = set(accel.sources())
    assert {"p4mtcp.control.tcp.connection", "p4mtcp.control.tcp.congestion",
            "p4mtcp.control.tcp.congestion.cubic", "p4mtcp.hashing"} <= names
    assert {"p4mtcp.dataplane.pipeline", "p4mtcp.dataplane.tables", "p4mtcp.link.afpacket",
            "p4mtcp.link.frames"} <= names


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
    assert why == f"group nic: {accel.sources()[NIC_MODULE]} was edited after the build in {tmp_path}"


def test_an_edit_in_one_group_leaves_the_others_compiled(tmp_path: Path) -> None:
    hashes = accel.source_hashes()
    hashes["p4mtcp.control.tcp.connection"] = "0" * 64
    _fake_build(tmp_path, hashes)
    usable, refused = accel.usable_groups(tmp_path)
    assert set(usable) == set(accel.groups().values()) - {"engine"}  # the fake needs only hashing
    assert refused == {"engine": f"{accel.sources()['p4mtcp.control.tcp.connection']} was "
                                 f"edited after the build in {tmp_path}"}


def test_a_group_that_calls_into_an_edited_group_stays_python(tmp_path: Path) -> None:
    hashes = accel.source_hashes()
    hashes["p4mtcp.hashing"] = "0" * 64
    _fake_build(tmp_path, hashes)
    usable, refused = accel.usable_groups(tmp_path)
    assert usable == {}
    assert refused["hashing"].endswith("hashing.py was edited after the build in " + str(tmp_path))
    assert refused["nic"] == refused["engine"] == "it calls into group hashing, which stays Python"


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
    assert manifest is None and why.startswith("group nic: module p4mtcp.dataplane.gone was removed")


def test_a_build_missing_a_file_is_unusable(tmp_path: Path) -> None:
    _fake_build(tmp_path, accel.source_hashes())
    manifest = json.loads((tmp_path / accel.MANIFEST).read_text())
    (tmp_path / manifest["groups"]["hashing"]["modules"]["p4mtcp.hashing"]["file"]).unlink()
    assert accel.check(tmp_path)[0] is None


def test_a_stale_build_is_refused_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    if accel.active():
        pytest.skip("this process runs the compiled build already (P4MTCP_ACCEL=1)")
    hashes = accel.source_hashes()
    hashes["p4mtcp.hashing"] = "0" * 64  # every group calls into it: nothing may load
    _fake_build(tmp_path, hashes)
    monkeypatch.setenv(accel.ENV_ENABLE, "1")
    monkeypatch.setenv(accel.ENV_DIR, str(tmp_path))
    before = list(sys.meta_path)
    source = str(accel.sources()["p4mtcp.hashing"])
    with pytest.warns(RuntimeWarning, match=f"group hashing runs pure Python: {source} was edited"):
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


def _current_build(*groups: str) -> Path:
    """The default build folder, when `p4mtcp accel build` made one whose `groups` are current
    (the test is skipped otherwise)."""
    folder = accel.build_dir()
    usable, refused = accel.usable_groups(folder)
    for group in groups:
        if group not in usable:
            pytest.skip(f"group {group} of {folder}: {refused.get(group, refused.get('all'))}")
    return folder


def _run(code: str, folder: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{accel.ENV_ENABLE: "1", accel.ENV_DIR: str(folder)})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def _run_ok(code: str, folder: Path) -> None:
    """Run ``code`` on the build in ``folder``; it must exit 0 (its stderr is the failure)."""
    proc = _run(code, folder)
    assert proc.returncode == 0, proc.stderr


def _copy_with_manifest(folder: Path, into: Path, manifest: dict) -> Path:
    """The build's files (linked) under another manifest."""
    into.mkdir()
    for item in folder.iterdir():
        if item.name != accel.MANIFEST:
            (into / item.name).symlink_to(item)
    (into / accel.MANIFEST).write_text(json.dumps(manifest))
    return into


def _imports_compiled(*groups: str) -> str:
    """Code that imports every module of ``groups`` and checks it came from the build."""
    return ("import sys\n"
            "from p4mtcp import accel\n"
            "for name, group in sorted(accel.groups().items()):\n"
            f"    if group in {groups!r}:\n"
            "        __import__(name)\n"
            "        assert sys.modules[name].__file__.endswith('.so'), sys.modules[name].__file__\n")


def test_the_compiled_nic_processes_frames_when_built() -> None:
    """Runs only where `p4mtcp accel build` made a current build of the NIC's groups."""
    folder = _current_build("hashing", "nic")
    code = _imports_compiled("hashing", "nic") + (
        "from p4mtcp.dataplane.device import Device\n"
        "from p4mtcp.p4info import P4Schema\n"
        "from p4mtcp.p4src import P4INFO\n"
        "d = Device(); d.set_pipeline(P4Schema.from_file(P4INFO).p4info, b'')\n"
        "s = d.schema; t = d.pipeline.tables\n"
        "t['NicIngress.port_role'].insert((16,), 0, s.action('NicIngress.set_core_port'), (0,))\n"
        "t['NicIngress.ipv4_lpm'].insert(((0x0A000000, 8),), 0, s.action('NicIngress.set_next_hop'), (0, 1))\n"
        "t['NicIngress.neighbor'].insert((0x0A000002,), 0, s.action('NicIngress.set_dst_mac'), (0x020000000002,))\n"
        "frame = bytes(12) + b'\\x08\\x00' + bytes.fromhex('45000028000100004006') + bytes(2) + "
        "bytes.fromhex('0a0000010a000002') + bytes(12) + b'\\x50' + bytes(7)\n"
        "(port, out), = d.process(16, frame)\n"
        "assert port == 1 and out[:6] == bytes.fromhex('020000000002'), out\n"
        "assert out[24:26] != b'\\0\\0'  # the IPv4 checksum was filled in\n"
    )
    _run_ok(code, folder)


def test_the_compiled_engine_moves_bytes_when_built() -> None:
    """Runs only where `p4mtcp accel build` made a current build of the engine's groups."""
    folder = _current_build("hashing", "engine")
    code = _imports_compiled("engine") + (
        "from p4mtcp.control import tcp\n"
        "from p4mtcp.control.tcp import TcpConfig, TcpStack\n"
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
    )
    _run_ok(code, folder)


def test_an_edited_nic_source_falls_back_with_the_warning(tmp_path: Path) -> None:
    """A real build whose manifest no longer matches a NIC source (as after an edit of it):
    the process warns, naming the file, and imports the NIC group's modules from their sources;
    the hashing group, which does not call into it, stays compiled."""
    folder = _current_build("hashing", "nic")
    manifest = json.loads((folder / accel.MANIFEST).read_text())
    manifest["groups"]["nic"]["modules"][NIC_MODULE]["sha256"] = "0" * 64
    stale = _copy_with_manifest(folder, tmp_path / "build", manifest)
    proc = _run(
        "from p4mtcp import accel, hashing\n"
        f"import {NIC_MODULE} as m\n"
        "import p4mtcp.dataplane.pipeline as pipeline, p4mtcp.link.frames as frames\n"
        "assert m.__file__.endswith('.py') and pipeline.__file__.endswith('.py')\n"
        "assert frames.__file__.endswith('.py'), frames.__file__\n"
        "assert hashing.__file__.endswith('.so') and accel.active()\n",
        stale)
    assert proc.returncode == 0, proc.stderr
    source = accel.sources()[NIC_MODULE]
    assert f"group nic runs pure Python: {source} was edited" in proc.stderr


def test_the_c_checksum_matches_the_reference_when_built() -> None:
    """p4mtcp/csum.c against hashing.ones_sum_py: every length up to a jumbo frame's, odd and
    even, random, all-zero and all-ones words, starts up to past 64 bits, every buffer type
    (strided memoryviews too);
    hashing.ones_sum takes it; bad arguments raise as Python would, they do not crash."""
    folder = _current_build("csum", "hashing")
    code = _imports_compiled("csum", "hashing") + (
        "import random\n"
        "from p4mtcp import hashing\n"
        "from p4mtcp._csum import ones_sum as c\n"
        "assert hashing.ones_sum is not hashing.ones_sum_py\n"
        "py = hashing.ones_sum_py\n"
        "rng = random.Random(5)\n"
        "lengths = [*range(80), 1460, 1461, 1514, 8948, 9014, 9216,\n"
        "           *(rng.randrange(80, 9300) for _ in range(300))]\n"
        "starts = (0, 1, 0xFFFF, 0x1FFFE, 0x2FFFD, 1 << 40, (1 << 64) - 1, 1 << 64,\n"
        "          (1 << 70) + 3, 0xFFFF << 80)\n"
        "checked = 0\n"
        "for n in lengths:\n"
        "    for data in (rng.randbytes(n), bytes(n), b'\\xff' * n):\n"
        "        for start in starts:\n"
        "            for buf in (data, bytearray(data), memoryview(data)):\n"
        "                assert c(buf, start) == py(buf, start), (n, data[:4], start)\n"
        "                checked += 1\n"
        "        assert c(data) == py(data) == hashing.ones_sum(data)\n"
        "        strided = memoryview(data)[::3]  # not contiguous: read as bytes, as the reference\n"
        "        assert c(strided, 7) == py(strided, 7)\n"
        "        if n % 2 == 0:  # two-byte items: the length that counts is in bytes\n"
        "            assert c(memoryview(data).cast('H')) == py(memoryview(data).cast('H')) == c(data)\n"
        "        assert hashing.csum16(data) == ~py(data) & 0xFFFF\n"
        "assert checked > 30000, checked\n"
        "assert hashing.ones_sum(b'ab', -1) == py(b'ab', -1)  # the reference takes it\n"
        "for args, error in (((b'ab', -1), ValueError), (('ab', 0), TypeError),\n"
        "                    ((b'ab', 1.0), TypeError), ((), TypeError),\n"
        "                    ((b'a', 0, 0), TypeError)):\n"
        "    try:\n"
        "        c(*args)\n"
        "    except error:\n"
        "        continue\n"
        "    raise AssertionError(f'{args} did not raise {error.__name__}')\n"
    )
    _run_ok(code, folder)


def test_an_edited_c_source_leaves_hashing_on_the_reference(tmp_path: Path) -> None:
    """A build whose manifest no longer matches csum.c: the C module is not handed out, and
    hashing, which imports it, runs its Python reference (it says so, naming the file)."""
    folder = _current_build("csum", "hashing")
    manifest = json.loads((folder / accel.MANIFEST).read_text())
    manifest["groups"]["csum"]["modules"]["p4mtcp._csum"]["sha256"] = "0" * 64
    stale = _copy_with_manifest(folder, tmp_path / "build", manifest)
    proc = _run("from p4mtcp import hashing\n"
                "assert hashing.__file__.endswith('.py'), hashing.__file__\n"
                "assert hashing.ones_sum(b'\\x01\\x02', 3) == 0x0105\n"
                "try:\n"
                "    import p4mtcp._csum\n"
                "except ImportError:\n"
                "    pass\n"
                "else:\n"
                "    raise AssertionError('a stale C module was loaded')\n", stale)
    assert proc.returncode == 0, proc.stderr
    assert "csum.c was edited after the build" in proc.stderr
