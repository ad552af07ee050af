"""`p4mtcp demo --nic bmv2`: the main job with BMv2 as both hosts' NICs, the same final checks.

The program is compiled from p4src/ on the fly; the NICs' ports are veth pairs the demo creates
and removes again. Skips with the reason without root, BMv2 or p4c.
"""

from __future__ import annotations

import os

import pytest

from demo_run import assert_report, run_demo
from p4mtcp.bmv2.launcher import P4C_BM2_SS, SIMPLE_SWITCH_GRPC, have

pytestmark = [pytest.mark.bmv2, pytest.mark.root]


def _veths(prefix: str = "p4m") -> set[str]:
    return {name for name in os.listdir("/sys/class/net") if name.startswith(prefix)}


@pytest.mark.skipif(os.geteuid() != 0, reason="BMv2 NICs use veth interfaces: needs root")
@pytest.mark.skipif(not (have(SIMPLE_SWITCH_GRPC) and have(P4C_BM2_SS)),
                    reason="simple_switch_grpc and p4c-bm2-ss must be on PATH (bmv2/README.md)")
def test_demo_on_bmv2_nics_completes_every_request_on_the_hash_core(tmp_path):
    before = _veths()
    out = run_demo("--nic", "bmv2", "-N", "2", "-n", "60", "-c", "8", "--duration", "90",
                   "--workdir", str(tmp_path), timeout=240)
    assert_report(out, 60)
    assert (tmp_path / "build" / "mtcp_nic.json").is_file(), "not compiled from p4src/"
    assert "nic_target = bmv2" in (tmp_path / "server" / "mtcp.conf").read_text()
    assert _veths() == before, "the demo left veth interfaces behind"
