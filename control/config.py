"""mTCP's configuration files: mtcp.conf, arp.conf and route.conf, parsed into frozen values.

The formats are mTCP's, so an mTCP user's files read the same here; every problem is a
`ConfigError` whose text is ``FILE:LINE: problem``. Nothing is half-accepted: an unknown key, a
malformed line or a bad value stops the load.

mtcp.conf — ``key = value`` lines, ``#`` starts a comment, each key at most once:

==================  =========================================  ==================================
key                 value                                      default
==================  =========================================  ==================================
num_cores           cores (one context and one NIC port each)  CPUs this process may use
max_concurrency     socket ids per context                     10000
max_num_buffers     send/receive buffers per context           10000
rcvbuf, sndbuf      bytes per socket buffer                    8192
tcp_timeout         idle seconds before a connection is        30
                    dropped; <= 0 turns it off
tcp_timewait        seconds in TIME_WAIT                       0
congestion_control  ``newreno`` (RFC 5681, RFC 6582; mTCP)     newreno
                    or ``cubic`` (RFC 9438)
mtu                 IPv4 MTU of the host's links, 576..9216:   1500
                    the engine announces and sends an MSS
                    of mtu - 40 (9000: jumbo frames)
port                interface names, space separated           net0
stat_print          interfaces whose statistics are printed    (none)
nic_target          ``embedded`` or ``bmv2``                    embedded
p4runtime           the NIC's P4Runtime ``host:port``          127.0.0.1:9559
device_id           P4Runtime device id                        1
election_id         the agent's election id (1 .. 2**128-1)    1
p4info              P4Info text file                           the packaged mtcp_nic.p4info.txtpb
p4_device_config    target config file (BMv2 JSON) pushed      (none: empty bytes, which the
                    with the P4Info                            embedded target accepts)
cpu_port            the NIC's CPU port                         255
core_port_base      core i is NIC port core_port_base + i      16
network_ports       NIC port number of each ``port`` name      1, 2, ... in ``port`` order
local_ip            ``addr/prefix`` of each ``port`` name      (required)
host_mac            MAC of each ``port`` name                  02:00 + the four bytes of local_ip
network_links       NIC-side port spec of each ``port`` name   (none: chosen by the launcher)
core_links          NIC-side port spec of each core            (none: chosen by the launcher)
steer_socket        UNIX socket of the agent's steering        (none: connect gives EAGAIN when
                    server (`control.steering`): connect's     no source port hashes to its
                    flow_steer fallback; at most 107 bytes     core)
nic_pcap            directory the NIC launched for this host   (none: no capture)
                    captures every port into (`p4mtcp nic
                    --pcap`; dataplane/capture.py)
ss_dir              directory where each core process serves   (none: p4mtcp ss cannot see
                    its connections (coreN.sock) to            this host)
                    `p4mtcp ss`
==================  =========================================  ==================================

Per-interface lists (network_ports, local_ip, host_mac, network_links) hold one item per name in
``port``, in the same order. Relative paths are relative to the file's directory. Port specs are
``p4mtcp.link`` strings (``shm:PATH``, ``unix:PATH``, ``IFNAME``); `MtcpConfig.core_link` gives
the core's side of its link.

arp.conf — ``ARP_ENTRY n`` then n lines ``addr/prefix mac``: a prefix shorter than /32 sends
every address in it to that MAC (mTCP's way to name a gateway).

route.conf — ``ROUTES n`` then n lines ``addr/prefix dev``: ``dev`` is a name from ``port``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p4mtcp.control.tcp.congestion import ALGORITHMS
from p4mtcp.link import MAX_MTU, host_side

DEFAULT_P4INFO = Path(__file__).resolve().parent.parent / "p4src" / "mtcp_nic.p4info.txtpb"
MAX_PORT = 511  # v1model ports are bit<9>; 511 is the drop port
MIN_MTU = 576   # RFC 791 / RFC 1122 3.3.3: the datagram every host must take (MSS 536)
DEFAULT_MTU = 1500  # Ethernet's
IP_TCP_HEADERS = 40  # RFC 9293 3.7.1: MSS = MTU - fixed IPv4 header - fixed TCP header


class ConfigError(ValueError):
    """A problem in a configuration file, located by file and line (None: the file as a whole)."""

    def __init__(self, file: str, line: int | None, problem: str):
        super().__init__(file, line, problem)
        self.file, self.line, self.problem = file, line, problem

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.problem}"


# --- value parsers: text -> typed value, ValueError with the reason otherwise ---------------------

def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise ValueError(f"{text!r} is not an integer") from None
        if lo is not None and value < lo or hi is not None and value > hi:
            bounds = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise ValueError(f"{value} is out of range (must be {bounds})")
        return value
    return parse


def _names(text: str) -> tuple[str, ...]:
    names = tuple(text.split())
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_.:@-]+", name):
            raise ValueError(f"{name!r} is not an interface name")
    if len(set(names)) != len(names):
        raise ValueError("a name is listed twice")
    return names


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return text
    return parse


def _address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return text


def _path(text: str) -> str:
    return text


def _list(item: Callable[[str], Any]) -> Callable[[str], tuple]:
    return lambda text: tuple(item(t) for t in text.split())


def parse_mac(text: str) -> str:
    """Canonical lower-case ``aa:bb:cc:dd:ee:ff``; ValueError for anything else."""
    if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", text):
        raise ValueError(f"{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return text.lower()


def mac_to_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def _interface(text: str) -> ipaddress.IPv4Interface:
    if "/" not in text:
        raise ValueError(f"{text!r} lacks its /prefix")
    try:
        return ipaddress.IPv4Interface(text)
    except ValueError as e:
        raise ValueError(f"{text!r} is not an IPv4 addr/prefix ({e})") from None


def _network(text: str) -> ipaddress.IPv4Network:
    """``addr/prefix`` with host bits allowed (mTCP masks them)."""
    return _interface(text).network


def _port_spec(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not a port spec")
    return text


# --- mtcp.conf ------------------------------------------------------------------------------------

@dataclass
class MtcpConf:
    """mTCP's ``struct mtcp_conf``: what `mtcp_getconf` returns and `mtcp_setconf` takes."""

    num_cores: int
    max_concurrency: int
    max_num_buffers: int
    rcvbuf_size: int
    sndbuf_size: int
    tcp_timewait: int
    tcp_timeout: int

    def check(self) -> None:
        """ValueError naming the first field out of range (mtcp_setconf refuses it with EINVAL)."""
        for name in ("num_cores", "max_concurrency", "max_num_buffers", "rcvbuf_size",
                     "sndbuf_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(self.tcp_timewait, int) or self.tcp_timewait < 0:
            raise ValueError(f"tcp_timewait must be an integer >= 0, not {self.tcp_timewait!r}")
        if not isinstance(self.tcp_timeout, int):
            raise ValueError(f"tcp_timeout must be an integer, not {self.tcp_timeout!r}")


@dataclass(frozen=True)
class MtcpConfig:
    """A parsed mtcp.conf (see the module docstring for each key)."""

    local_ip: tuple[ipaddress.IPv4Interface, ...]
    num_cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    max_concurrency: int = 10000
    max_num_buffers: int = 10000
    rcvbuf: int = 8192
    sndbuf: int = 8192
    tcp_timeout: int = 30
    tcp_timewait: int = 0
    congestion_control: str = "newreno"
    mtu: int = DEFAULT_MTU
    port: tuple[str, ...] = ("net0",)
    stat_print: tuple[str, ...] = ()
    nic_target: str = "embedded"
    p4runtime: str = "127.0.0.1:9559"
    device_id: int = 1
    election_id: int = 1
    p4info: str = str(DEFAULT_P4INFO)
    p4_device_config: str | None = None
    cpu_port: int = 255
    core_port_base: int = 16
    network_ports: tuple[int, ...] = ()
    host_mac: tuple[str, ...] = ()
    network_links: tuple[str, ...] = ()
    core_links: tuple[str, ...] = ()
    steer_socket: str | None = None
    nic_pcap: str | None = None
    ss_dir: str | None = None

    def __post_init__(self) -> None:
        # Derived defaults (one per interface) are filled in so every instance is complete.
        if not self.network_ports:
            object.__setattr__(self, "network_ports", tuple(range(1, len(self.port) + 1)))
        if not self.host_mac:
            object.__setattr__(self, "host_mac", tuple(
                "02:00:" + ":".join(f"{b:02x}" for b in a.ip.packed) for a in self.local_ip))

    @property
    def mss(self) -> int:
        """The MSS the host's engine announces and its largest segment (RFC 9293 3.7.1)."""
        return self.mtu - IP_TCP_HEADERS

    def core_port(self, core: int) -> int:
        """The NIC port that carries core `core`'s frames."""
        return self.core_port_base + core

    @property
    def core_ports(self) -> tuple[int, ...]:
        return tuple(self.core_port_base + i for i in range(self.num_cores))

    def interface(self, name: str) -> int:
        """Index of interface `name` in the per-interface lists."""
        return self.port.index(name)

    def core_link(self, core: int) -> str:
        """The core's side of its link (``shm:P`` on the NIC is ``shm-host:P`` here, ``unix:P``
        is ``unix-host:P``; other specs are returned as they are)."""
        return host_side(self.core_links[core])

    def conf(self) -> MtcpConf:
        return MtcpConf(self.num_cores, self.max_concurrency, self.max_num_buffers, self.rcvbuf,
                        self.sndbuf, self.tcp_timewait, self.tcp_timeout)

    def with_conf(self, conf: MtcpConf) -> "MtcpConfig":
        """A copy carrying `conf`'s values (ValueError if they are out of range)."""
        conf.check()
        new = dataclasses.replace(
            self, num_cores=conf.num_cores, max_concurrency=conf.max_concurrency,
            max_num_buffers=conf.max_num_buffers, rcvbuf=conf.rcvbuf_size,
            sndbuf=conf.sndbuf_size, tcp_timewait=conf.tcp_timewait,
            tcp_timeout=conf.tcp_timeout)
        problem = _consistency(new)
        if problem:
            raise ValueError(problem[1])
        return new


_KEYS: dict[str, Callable[[str], Any]] = {
    "num_cores": _int(1, 256),
    "max_concurrency": _int(1),
    "max_num_buffers": _int(1),
    "rcvbuf": _int(1),
    "sndbuf": _int(1),
    "tcp_timeout": _int(),
    "tcp_timewait": _int(0),
    "congestion_control": _choice(*ALGORITHMS),
    "mtu": _int(MIN_MTU, MAX_MTU),
    "port": _names,
    "stat_print": _names,
    "nic_target": _choice("embedded", "bmv2"),
    "p4runtime": _address,
    "device_id": _int(0, 2**64 - 1),
    "election_id": _int(1, 2**128 - 1),
    "p4info": _path,
    "p4_device_config": _path,
    "cpu_port": _int(1, MAX_PORT - 1),
    "core_port_base": _int(0, MAX_PORT - 1),
    "network_ports": _list(_int(0, MAX_PORT - 1)),
    "local_ip": _list(_interface),
    "host_mac": _list(parse_mac),
    "network_links": _list(_port_spec),
    "core_links": _list(_port_spec),
    "steer_socket": _path,
    "nic_pcap": _path,
    "ss_dir": _path,
}

_MTCP_ONLY = {
    "io": "the NIC is chosen by nic_target",
    "num_mem_ch": "there are no DPDK memory channels here",
    "multiprocess": "every core is its own process already",
}
"""mTCP keys that mean nothing here: refused with the reason rather than silently ignored."""

_PER_INTERFACE = ("network_ports", "local_ip", "host_mac", "network_links")
_PATH_KEYS = ("p4info", "p4_device_config", "steer_socket", "nic_pcap", "ss_dir")
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def _consistency(cfg: MtcpConfig) -> tuple[str, str] | None:
    """(key, problem) for the first rule the keys break together, or None."""
    n = len(cfg.port)
    for key in _PER_INTERFACE:
        got = len(getattr(cfg, key))
        if got and got != n:
            return key, f"{key} has {got} item(s) but port names {n} interface(s)"
    for name in cfg.stat_print:
        if name not in cfg.port:
            return "stat_print", f"stat_print names {name!r}, which is not in port"
    if len(set(cfg.network_ports)) != n:
        return "network_ports", "network_ports lists a port number twice"
    if cfg.core_links and len(cfg.core_links) != cfg.num_cores:
        return "core_links", (f"core_links has {len(cfg.core_links)} item(s) but num_cores is "
                              f"{cfg.num_cores}")
    last = cfg.core_port_base + cfg.num_cores - 1
    if last > MAX_PORT - 1:
        return "core_port_base", (f"core ports {cfg.core_port_base}..{last} exceed port "
                                  f"{MAX_PORT - 1}")
    cores = set(cfg.core_ports)
    if cfg.cpu_port in cores or cfg.cpu_port in cfg.network_ports:
        return "cpu_port", f"cpu_port {cfg.cpu_port} is also a network or core port"
    clash = cores.intersection(cfg.network_ports)
    if clash:
        return "network_ports", f"port {min(clash)} is both a network port and a core port"
    if len({a.ip for a in cfg.local_ip}) != len(cfg.local_ip):
        return "local_ip", "local_ip lists an address twice"
    if cfg.steer_socket and len(os.fsencode(cfg.steer_socket)) > UNIX_PATH_MAX:
        return "steer_socket", (f"steer_socket {cfg.steer_socket!r} is longer than a UNIX "
                                f"socket path may be ({UNIX_PATH_MAX} bytes)")
    # p4mtcp ss: each core serves ss_dir/core<N>.sock (control/sockstat.py)
    longest = os.path.join(cfg.ss_dir or "", f"core{cfg.num_cores - 1}.sock")
    if cfg.ss_dir and len(os.fsencode(longest)) > UNIX_PATH_MAX:
        return "ss_dir", (f"ss_dir {cfg.ss_dir!r}: {longest!r} is longer than a UNIX socket "
                          f"path may be ({UNIX_PATH_MAX} bytes)")
    return None


def _strip(line: str) -> str:
    return line.split("#", 1)[0].strip()


def parse_mtcp_conf(text: str, file: str = "mtcp.conf", base_dir: str | Path | None = None
                    ) -> MtcpConfig:
    """Parse mtcp.conf text; `base_dir` anchors relative paths (default: the current directory)."""
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip(raw)
        if not line:
            continue
        key, sep, value = (s.strip() for s in line.partition("="))
        if not sep:
            raise ConfigError(file, lineno, f"expected 'key = value', got {line!r}")
        if key in _MTCP_ONLY:
            raise ConfigError(file, lineno, f"mTCP key {key!r} is not used here: {_MTCP_ONLY[key]}")
        if key not in _KEYS:
            raise ConfigError(file, lineno, f"unknown key {key!r}")
        if key in lines:
            raise ConfigError(file, lineno,
                              f"duplicate key {key!r} (first set on line {lines[key]})")
        if not value:
            raise ConfigError(file, lineno, f"key {key!r} has no value")
        try:
            parsed = _KEYS[key](value)
        except ValueError as e:
            raise ConfigError(file, lineno, f"{key}: {e}") from None
        if key in _PATH_KEYS:
            parsed = str(Path(base_dir or ".", parsed).resolve())
        values[key], lines[key] = parsed, lineno
    if "local_ip" not in values:
        raise ConfigError(file, None, "missing required key 'local_ip'")
    cfg = MtcpConfig(**values)
    problem = _consistency(cfg)
    if problem:
        raise ConfigError(file, lines.get(problem[0]), problem[1])
    return cfg


def _format_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def format_mtcp_conf(cfg: MtcpConfig) -> str:
    """mtcp.conf text that parses back to `cfg` (every key written, empty ones left out)."""
    out = []
    for key in _KEYS:
        value = getattr(cfg, key)
        if value is None or value == ():
            continue
        out.append(f"{key} = {_format_value(value)}")
    return "\n".join(out) + "\n"


def load_mtcp_conf(path: str | Path) -> MtcpConfig:
    path = Path(path)
    return parse_mtcp_conf(_read(path), str(path), path.parent)


# --- arp.conf and route.conf ----------------------------------------------------------------------

@dataclass(frozen=True)
class ArpEntry:
    network: ipaddress.IPv4Network
    mac: str
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Route:
    network: ipaddress.IPv4Network
    dev: str
    line: int = field(default=0, compare=False)


def _counted(text: str, file: str, header: str, parse_line: Callable[[str, int], Any]) -> tuple:
    """mTCP's counted list: ``HEADER n`` then exactly n entry lines (comments and blanks aside)."""
    count: int | None = None
    header_line = 0
    entries: list = []
    seen: dict[Any, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip(raw)
        if not line:
            continue
        if count is None:
            words = line.split()
            if len(words) != 2 or words[0] != header:
                raise ConfigError(file, lineno, f"expected '{header} <count>', got {line!r}")
            try:
                count = _int(0)(words[1])
            except ValueError as e:
                raise ConfigError(file, lineno, f"{header}: {e}") from None
            header_line = lineno
            continue
        if line.split()[0] == header:
            raise ConfigError(file, lineno, f"second {header} line (first on line {header_line})")
        try:
            entry = parse_line(line, lineno)
        except ValueError as e:
            raise ConfigError(file, lineno, str(e)) from None
        if entry.network in seen:
            raise ConfigError(file, lineno, f"{entry.network} already listed on line "
                                            f"{seen[entry.network]}")
        seen[entry.network] = lineno
        entries.append(entry)
    if count is None:
        raise ConfigError(file, None, f"missing '{header} <count>' line")
    if count != len(entries):
        raise ConfigError(file, header_line, f"{header} says {count} entries but the file has "
                                             f"{len(entries)}")
    return tuple(entries)


def _two_words(line: str, what: str) -> tuple[str, str]:
    words = line.split()
    if len(words) != 2:
        raise ValueError(f"expected '{what}', got {line!r}")
    return words[0], words[1]


def _arp_line(line: str, lineno: int) -> ArpEntry:
    net, mac = _two_words(line, "addr/prefix mac")
    return ArpEntry(_network(net), parse_mac(mac), lineno)


def _route_line(line: str, lineno: int) -> Route:
    net, dev = _two_words(line, "addr/prefix dev")
    return Route(_network(net), _names(dev)[0], lineno)


def parse_arp_conf(text: str, file: str = "arp.conf") -> tuple[ArpEntry, ...]:
    return _counted(text, file, "ARP_ENTRY", _arp_line)


def parse_route_conf(text: str, file: str = "route.conf") -> tuple[Route, ...]:
    return _counted(text, file, "ROUTES", _route_line)


def format_arp_conf(entries: Sequence[ArpEntry]) -> str:
    return "".join([f"ARP_ENTRY {len(entries)}\n"] + [f"{e.network} {e.mac}\n" for e in entries])


def format_route_conf(routes: Sequence[Route]) -> str:
    return "".join([f"ROUTES {len(routes)}\n"] + [f"{r.network} {r.dev}\n" for r in routes])


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise ConfigError(str(path), None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), None, f"not text: {e}") from None


# --- the three files together ---------------------------------------------------------------------

@dataclass(frozen=True)
class HostConfig:
    """What one host runs on: mtcp.conf plus its static neighbours and routes."""

    mtcp: MtcpConfig
    arp: tuple[ArpEntry, ...] = ()
    routes: tuple[Route, ...] = ()

    def connected(self) -> tuple[Route, ...]:
        """The subnet of each local address, reachable on its interface."""
        return tuple(Route(a.network, dev) for a, dev in zip(self.mtcp.local_ip, self.mtcp.port))

    def all_routes(self) -> tuple[Route, ...]:
        """route.conf entries, then connected subnets route.conf does not already name."""
        named = {r.network for r in self.routes}
        return self.routes + tuple(r for r in self.connected() if r.network not in named)

    def route_for(self, addr: ipaddress.IPv4Address) -> Route | None:
        """Longest-prefix match over `all_routes`."""
        best = None
        for r in self.all_routes():
            if addr in r.network and (best is None or r.network.prefixlen > best.network.prefixlen):
                best = r
        return best


def check_host(host: HostConfig, arp_file: str = "arp.conf", route_file: str = "route.conf"
               ) -> HostConfig:
    """Cross-file rules: routes name known interfaces; every ARP entry is reachable by a route."""
    for r in host.routes:
        if r.dev not in host.mtcp.port:
            raise ConfigError(route_file, r.line or None,
                              f"device {r.dev!r} is not in mtcp.conf's port list "
                              f"({' '.join(host.mtcp.port)})")
    for e in host.arp:
        if host.route_for(e.network.network_address) is None:
            raise ConfigError(arp_file, e.line or None,
                              f"{e.network} is not reachable: no route.conf entry or local_ip "
                              f"subnet covers it")
    return host


def load_host_beside(mtcp_conf: str | Path) -> HostConfig:
    """mtcp.conf with the arp.conf and route.conf that sit beside it, where they exist (mTCP
    reads them from ./config/; here the directory of mtcp.conf plays that part)."""
    here = Path(mtcp_conf).parent
    arp, route = here / "arp.conf", here / "route.conf"
    return load_host(mtcp_conf, arp if arp.is_file() else None, route if route.is_file() else None)


def load_host(mtcp_conf: str | Path, arp_conf: str | Path | None = None,
              route_conf: str | Path | None = None) -> HostConfig:
    """Load mtcp.conf and, when given, arp.conf and route.conf, and check them together."""
    mtcp = load_mtcp_conf(mtcp_conf)
    arp = parse_arp_conf(_read(Path(arp_conf)), str(arp_conf)) if arp_conf else ()
    routes = parse_route_conf(_read(Path(route_conf)), str(route_conf)) if route_conf else ()
    return check_host(HostConfig(mtcp, arp, routes), str(arp_conf or "arp.conf"),
                      str(route_conf or "route.conf"))
