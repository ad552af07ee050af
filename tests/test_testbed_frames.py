"""The PTF-style frame tests through real interfaces, against each switch class in Mininet.

The same cases (p4mtcp.bmv2.frametests.CASES) run against the embedded target and against
BMv2; each kind skips with the reason when this machine cannot run it (root, Mininet, BMv2).
"""

from __future__ import annotations

import pytest

from p4mtcp.bmv2.frametests import CASES, frame_fabric
from p4mtcp.bmv2.preflight import missing

KINDS = ["embedded", pytest.param("bmv2", marks=pytest.mark.bmv2)]

pytestmark = pytest.mark.root


@pytest.fixture(scope="module", params=KINDS)
def fabric(request, tmp_path_factory):
    reason = missing(request.param)
    if reason:
        pytest.skip(f"{request.param} testbed: {reason}")
    with frame_fabric(request.param, tmp_path_factory.mktemp(request.param)) as fab:
        yield fab


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_frames(fabric, case):
    fabric.drain()
    case(fabric)
