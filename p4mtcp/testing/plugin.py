"""The pytest plugin of p4mtcp.testing (registered as the ``pytest11`` entry point ``p4mtcp``).

Fixtures: ``p4mtcp_host`` (a :class:`~p4mtcp.testing.Host`), ``p4mtcp_nic_host`` (the same with
the embedded NIC's P4 pipeline on the path) and ``p4mtcp_host_factory`` (``factory(**kwargs)``
makes more; all are closed after the test).

packetdrill scripts: ``.pkt`` files are collected as tests only where asked, so that unrelated
files named ``*.pkt`` are left alone: under the directories of the ``p4mtcp_packetdrill`` ini
option (paths relative to the ini file), or anywhere with ``--p4mtcp-packetdrill``. A script
that cannot run on p4mtcp is reported skipped with its reason; a failure shows packetdrill's
diff. ``--p4mtcp-nic`` runs every script through the NIC pipeline as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .host import Host
from .packetdrill.run import Outcome, run_path


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("p4mtcp", "p4mtcp protocol tests")
    group.addoption("--p4mtcp-packetdrill", action="store_true",
                    help="collect every .pkt file found as a packetdrill test")
    group.addoption("--p4mtcp-nic", action="store_true",
                    help="also run each packetdrill script through the embedded NIC pipeline")
    parser.addini("p4mtcp_packetdrill", type="paths", default=[],
                  help="directories whose .pkt files are collected as packetdrill tests")


def _wanted(path: Path, config: pytest.Config) -> bool:
    if config.getoption("p4mtcp_packetdrill"):
        return True
    return any(path.is_relative_to(d) for d in config.getini("p4mtcp_packetdrill"))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".pkt" and _wanted(file_path, parent.config):
        return PacketdrillFile.from_parent(parent, path=file_path)
    return None


class PacketdrillFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        yield PacketdrillItem.from_parent(self, name="host", nic=False)
        if self.config.getoption("p4mtcp_nic"):
            yield PacketdrillItem.from_parent(self, name="nic", nic=True)


class PacketdrillFailure(Exception):
    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        super().__init__(outcome.reason)


class PacketdrillItem(pytest.Item):
    def __init__(self, *, nic: bool, **kwargs: Any):
        super().__init__(**kwargs)
        self.nic = nic

    def runtest(self) -> None:
        outcome = run_path(str(self.path), nic=self.nic)
        if outcome.status == "skipped":
            where = f"line {outcome.line}: " if outcome.line else ""
            pytest.skip(f"{where}{outcome.reason}")
        if outcome.status != "passed":
            raise PacketdrillFailure(outcome)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, PacketdrillFailure):
            o = excinfo.value.outcome
            return f"{o.headline()}\n{o.detail}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"packetdrill {self.path.name} [{self.name}]"


@pytest.fixture
def p4mtcp_host_factory() -> Iterator[Any]:
    """``factory(**kwargs)`` -> a new :class:`Host` (kwargs as Host's); closed after the test."""
    hosts: list[Host] = []

    def make(**kwargs: Any) -> Host:
        h = Host(**kwargs)
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.close()


@pytest.fixture
def p4mtcp_host(p4mtcp_host_factory: Any) -> Host:
    """A host under test with p4mtcp's defaults, no NIC on the path."""
    return p4mtcp_host_factory()


@pytest.fixture
def p4mtcp_nic_host(p4mtcp_host_factory: Any) -> Host:
    """A host under test whose frames cross the embedded NIC's P4 pipeline."""
    return p4mtcp_host_factory(nic=True)
