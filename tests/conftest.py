"""Shared fixtures. Data-plane fixtures are named dp_*."""

from __future__ import annotations

import pytest

from p4mtcp.dataplane.device import Device
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import P4INFO


class DpNic:
    """The embedded NIC with the packaged program installed, programmed by table name."""

    def __init__(self, cpu_port: int = 255, flow_cache: bool = True):
        self.device = Device(cpu_port=cpu_port, flow_cache=flow_cache)
        self.device.set_pipeline(P4Schema.from_file(P4INFO).p4info, b"")
        self.schema = self.device.schema

    def add(self, table: str, key: tuple, action: str, *params: int) -> None:
        """Insert an entry; key items are canonical (exact: value, lpm: (value, prefix_len))."""
        self.device.pipeline.tables[f"NicIngress.{table}"].insert(
            key, 0, self.schema.action(f"NicIngress.{action}"), params)

    def counter(self, name: str, index: int) -> tuple[int, int]:
        """(packets, bytes) of an indexed counter."""
        return self.device.pipeline.counters[name].read(index)

    def send(self, port: int, frame: bytes) -> list[tuple[int, bytes]]:
        return self.device.process(port, frame)


@pytest.fixture
def dp_nic() -> DpNic:
    return DpNic()
