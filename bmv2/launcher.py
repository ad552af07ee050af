"""Start and stop a P4 switch process: BMv2 `simple_switch_grpc` or the embedded `p4mtcp nic`.

Both targets take the same inputs (port number -> interface, a gRPC address, a device id, the CPU
port) and are ready when their P4Runtime server accepts connections; after that a controller
pushes the pipeline over P4Runtime, so nothing downstream knows which one is running. The
p4c compile step is here too because BMv2's device config is p4c's JSON.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from p4mtcp.p4src import CPU_PORT, PROGRAM

SIMPLE_SWITCH_GRPC = "simple_switch_grpc"
P4C_BM2_SS = "p4c-bm2-ss"

INSTALL_HINTS = {
    SIMPLE_SWITCH_GRPC: (
        "BMv2 with P4Runtime support (Ubuntu: apt-get install p4lang-bmv2 from the home:p4lang "
        "OBS repository, or build p4lang/behavioral-model with PI and "
        "targets/simple_switch_grpc); see bmv2/README.md"),
    P4C_BM2_SS: (
        "p4c, the P4 compiler with its BMv2 back end (Ubuntu: apt-get install p4lang-p4c from "
        "the home:p4lang OBS repository, or build p4lang/p4c); see bmv2/README.md"),
}


class ToolMissing(RuntimeError):
    """A required binary is not on PATH; the message says what to install."""


class SwitchFailed(RuntimeError):
    """The switch process exited or never opened its gRPC port; the message carries its log tail."""


def require(tool: str) -> str:
    """Absolute path of `tool` on PATH, or ToolMissing naming the package that provides it."""
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} not found on PATH; install {INSTALL_HINTS.get(tool, tool)}")
    return path


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


@dataclass(frozen=True)
class Compiled:
    json: Path      # BMv2 device config
    p4info: Path    # P4Info text emitted by p4c


def compile_program(out_dir: str | Path, source: Path = PROGRAM,
                    timeout: float = 300.0) -> Compiled:
    """Run `p4c-bm2-ss --arch v1model --p4runtime-files` on the NIC program into `out_dir`."""
    p4c = require(P4C_BM2_SS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # p4c picks the P4Info format from the suffix; releases before .txtpb support know .txt.
    result = Compiled(out / f"{source.stem}.json", out / f"{source.stem}.p4info.txt")
    argv = [p4c, "--arch", "v1model", "--std", "p4-16",
            "--p4runtime-files", str(result.p4info), "-o", str(result.json), str(source)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          cwd=source.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n"
                           f"{proc.stdout}{proc.stderr}")
    return result


def split_address(address: str) -> tuple[str, int]:
    """'host:port' -> (host, port); a clear ValueError for anything else."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"gRPC address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the kernel just had free on `host` (gRPC/Thrift ports of private switches)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def accepts_connections(address: str) -> bool:
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _port_args(ports: Mapping[int, str], cpu_port: int) -> list[str]:
    args: list[str] = []
    for num, spec in sorted(ports.items()):
        if not 0 <= num < 511 or num == cpu_port:
            raise ValueError(f"port {num}@{spec}: port numbers are 0..510 and not the CPU port "
                             f"({cpu_port})")
        args += ["-i", f"{num}@{spec}"]
    return args


def bmv2_argv(ports: Mapping[int, str], grpc: str, *, device_id: int = 1,
              cpu_port: int = CPU_PORT, log_file: str | None = None, json: str | None = None,
              thrift_port: int | None = None, pcap_dir: str | None = None) -> list[str]:
    """The simple_switch_grpc command line; without `json` it starts empty (`--no-p4`) and waits
    for SetForwardingPipelineConfig. `pcap_dir`: BMv2 writes each port's frames there."""
    argv = [require(SIMPLE_SWITCH_GRPC), *_port_args(ports, cpu_port),
            "--device-id", str(device_id)]
    if thrift_port is not None:
        argv += ["--thrift-port", str(thrift_port)]
    if log_file:
        argv += ["--log-file", log_file, "--log-flush"]
    if pcap_dir:
        argv.append(f"--pcap={pcap_dir}")
    argv += [json] if json else ["--no-p4"]
    return argv + ["--", "--grpc-server-addr", grpc, "--cpu-port", str(cpu_port)]


def embedded_argv(ports: Mapping[int, str], grpc: str, *, device_id: int = 1,
                  cpu_port: int = CPU_PORT, pcap_dir: str | None = None,
                  flow_cache: bool = True) -> list[str]:
    """The `p4mtcp nic` command line (same ports, same gRPC contract as BMv2). `pcap_dir`:
    the NIC captures every port there (dataplane/capture.py). `flow_cache=False`: every frame
    through the program's mirror (`--no-flow-cache`)."""
    return [sys.executable, "-m", "p4mtcp.cli", "nic", "--grpc", grpc, "--cpu-port", str(cpu_port),
            "--device-id", str(device_id), *_port_args(ports, cpu_port),
            *([f"--pcap={pcap_dir}"] if pcap_dir else []),
            *([] if flow_cache else ["--no-flow-cache"])]


def terminate(proc: subprocess.Popen, grace: float, sig: int = signal.SIGTERM) -> int:
    """Ask a child to end with `sig`, SIGKILL it after `grace` seconds; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)
    return proc.returncode


class SwitchProcess:
    """One switch process: started, ready when its gRPC port accepts, stopped within a bound."""

    def __init__(self, argv: Sequence[str], grpc: str, name: str, log_path: str | Path):
        split_address(grpc)
        self.argv = list(argv)
        self.grpc = grpc
        self.name = name
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> "SwitchProcess":
        if accepts_connections(self.grpc):
            raise SwitchFailed(f"{self.name}: {self.grpc} is already in use by another process")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not accepts_connections(self.grpc):
            if self.proc.poll() is not None:
                raise SwitchFailed(f"{self.name} exited with code {self.proc.returncode} before "
                                   f"its gRPC server listened on {self.grpc}{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SwitchFailed(f"{self.name}: no gRPC server on {self.grpc} after "
                                   f"{timeout:.0f} s{self.log_tail()}")
            time.sleep(0.05)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; the exit code (None if never started)."""
        return None if self.proc is None else terminate(self.proc, grace)

    def log_tail(self, nbytes: int = 3000) -> str:
        try:
            size = os.path.getsize(self.log_path)
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, size - nbytes))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return f"; log {self.log_path}:\n{text}" if text else ""

    def __enter__(self) -> "SwitchProcess":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_switch(kind: str, ports: Mapping[int, str], grpc: str, log_dir: str | Path, *,
                 device_id: int = 1, cpu_port: int = CPU_PORT, name: str | None = None,
                 thrift_port: int | None = None, timeout: float = 30.0) -> SwitchProcess:
    """Start a switch of `kind` ('bmv2' or 'embedded') with no pipeline; return it once ready."""
    name = name or f"{kind}-{device_id}"
    log_path = Path(log_dir) / f"{name}.log"
    if kind == "bmv2":
        # BMv2 writes its own log file; its stdout/stderr (start-up errors) go to a second one.
        argv = bmv2_argv(ports, grpc, device_id=device_id, cpu_port=cpu_port,
                         log_file=str(Path(log_dir) / f"{name}.bmv2.log"), thrift_port=thrift_port)
    elif kind == "embedded":
        argv = embedded_argv(ports, grpc, device_id=device_id, cpu_port=cpu_port)
    else:
        raise ValueError(f"switch kind {kind!r}: expected 'bmv2' or 'embedded'")
    return SwitchProcess(argv, grpc, name, log_path).start(timeout)
