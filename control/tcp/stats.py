"""TcpStats: the engine's counters, one set per stack (mTCP-style per-core statistics)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class TcpStats:
    """Counters for the whole stack (mTCP-style per-core statistics)."""

    segs_in: int = 0
    segs_out: int = 0
    bytes_in: int = 0            # in-order payload delivered to receive buffers
    bytes_out: int = 0           # payload sent, retransmissions included
    retransmits: int = 0
    fast_retransmits: int = 0
    lost_retransmits: int = 0    # retransmissions found lost and sent again before the RTO
    loss_probes: int = 0         # tail loss probes sent (RFC 8985 7)
    tlp_recoveries: int = 0      # probes that repaired a loss: cwnd reduced (RFC 8985 7.4.2)
    spurious_recoveries: int = 0  # fast recoveries undone: found spurious (RFC 3522 / RFC 3708)
    dsacks_in: int = 0           # D-SACK blocks received (RFC 2883)
    dsacks_out: int = 0          # D-SACK blocks sent for duplicate segments (RFC 2883)
    timeouts: int = 0
    bad_segments: int = 0        # malformed header/options
    bad_checksums: int = 0
    rst_in: int = 0
    rst_out: int = 0
    resets: int = 0              # connections reset by the peer
    challenge_acks: int = 0
    challenge_acks_suppressed: int = 0
    active_opens: int = 0
    passive_opens: int = 0
    syn_dropped: int = 0         # SYNs dropped: accept queue full (or backlog full, no cookies)
    listen_overflows: int = 0    # valid cookie ACKs dropped: accept queue full
    syncookies_sent: int = 0
    syncookies_accepted: int = 0
    syncookies_rejected: int = 0
    icmp_in: int = 0             # ICMP messages handed to the stack (the agent forwards them)
    pmtu_lowered: int = 0        # connections whose MSS a fragmentation-needed message lowered
    pmtu_ignored: int = 0        # such messages ignored: malformed, no connection, quoted
                                 # sequence number outside the flight, or MTU not lower (RFC 1191)
    pmtu_from_cache: int = 0     # connections that started below their MSS: a path MTU learned
                                 # for the destination by an earlier one (RFC 1191 5)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
