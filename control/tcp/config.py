"""TcpConfig: every tunable of the engine in one immutable value, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from .congestion import ALGORITHMS


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Engine settings. Defaults follow mTCP where it has one, else Linux/RFC practice.

    Times are seconds (floats). Buffers are bytes. A connection may override nodelay, keepalive,
    linger, rcvbuf and sndbuf with ``Connection.set_option``.
    """

    mss: int = 1460                   # MSS we announce and the largest segment we send
    rcvbuf: int = 8192                # mTCP default receive buffer
    sndbuf: int = 8192                # mTCP default send buffer
    timewait: float = 0.0             # TIME_WAIT duration; mTCP default 0 (TCB freed at once)
    idle_timeout: float = 30.0        # mTCP tcp_timeout: abort after this long idle; <= 0 off
    delayed_ack: float = 0.04         # bounded ACK delay (RFC 9293 3.8.6.3: < 0.5 s); 0 = off
    rto_initial: float = 1.0          # RFC 6298 2.1
    rto_min: float = 0.2              # RFC 6298 2.4 allows < 1 s; Linux uses 0.2 s
    rto_max: float = 60.0             # RFC 6298 2.5
    max_retries: int = 15             # data retransmissions before ETIMEDOUT (RFC 9293 R2)
    syn_retries: int = 7              # SYN retransmissions: 255 s >= 3 min (RFC 9293 MUST-23)
    synack_retries: int = 5           # SYN-ACK retransmissions (Linux default): frees flood slots
    keepalive: bool = False           # default for new connections (RFC 9293 3.8.4: off)
    keepalive_idle: float = 7200.0    # RFC 9293 3.8.4: >= 2 hours by default
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9
    nodelay: bool = False             # Nagle on by default (RFC 9293 3.7.4)
    fin_timeout: float = 60.0         # orphaned FIN_WAIT_2 lifetime (Linux tcp_fin_timeout)
    syn_backlog: int = 256            # half-open TCBs per listener before SYN cookies
    syncookies: bool = True           # answer SYNs statelessly when the SYN backlog is full
    window_scaling: bool = True       # offer RFC 7323 window scaling
    timestamps: bool = True           # offer RFC 7323 timestamps
    sack: bool = True                 # offer RFC 2018 SACK
    congestion: str = "newreno"       # "newreno" (mTCP's) or "cubic" (RFC 9438)
    initial_window: int = 10          # segments (RFC 6928)
    tail_loss_probe: bool = True      # RFC 8985 7 TLP: probe a silent tail before the RTO
    challenge_ack_limit: int = 1000   # RFC 5961 section 7: challenge ACKs per second per stack
    offload_checksum: bool = False    # True: emit zero checksums and trust received ones (NIC)

    def __post_init__(self) -> None:
        _positive = ("mss", "rcvbuf", "sndbuf", "rto_initial", "rto_min", "rto_max",
                     "keepalive_idle", "keepalive_interval", "keepalive_probes", "max_retries",
                     "syn_retries", "synack_retries", "syn_backlog", "initial_window", "fin_timeout")
        for name in _positive:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"TcpConfig.{name} must be > 0, got {value!r}")
        if not 88 <= self.mss <= 65495:
            raise ValueError(f"TcpConfig.mss must be in 88..65495, got {self.mss}")
        if self.rto_min > self.rto_max:
            raise ValueError(f"TcpConfig.rto_min ({self.rto_min}) exceeds rto_max ({self.rto_max})")
        if self.timewait < 0 or self.delayed_ack < 0 or self.delayed_ack >= 0.5:
            raise ValueError("TcpConfig.timewait must be >= 0 and delayed_ack in [0, 0.5)")
        if self.congestion not in ALGORITHMS:
            raise ValueError(f"TcpConfig.congestion must be one of {', '.join(ALGORITHMS)}, "
                             f"got {self.congestion!r}")
        if self.rcvbuf > (65535 << 14) or self.sndbuf > (1 << 30):
            raise ValueError("TcpConfig.rcvbuf/sndbuf too large (RFC 7323 limits the window to 2^30)")
