"""The per-update errors of a failed P4Runtime Write, in a size every gRPC client accepts.

P4Runtime spec (Write RPC, Error Reporting): a batch with failures ends with UNKNOWN and a
google.rpc.Status in the `grpc-status-details-bin` trailer holding one p4.Error per update, in
update order, OK ones with code 0 and nothing else. A gRPC client drops trailers beyond its
metadata limit (grpcio: 8 KiB soft, 16 KiB hard by default) and then reports only
RESOURCE_EXHAUSTED "Stream removed". Even an OK update's entry costs 16 bytes in that list, so
past about 400 updates no per-update list fits; such batches get the grouped form instead: one
p4.Error per distinct failure, its message starting with the update indexes it applies to
("updates 0-9,12,20-98/2: ..."). Both sides use this module: the server to build the status,
the client to read either form back.
"""

from __future__ import annotations

import re
from typing import Iterator, Sequence

from google.protobuf import any_pb2, wrappers_pb2
from google.rpc import code_pb2, status_pb2
from p4.v1 import p4runtime_pb2

# Bytes of status details sent at most: the client's 8 KiB soft limit also counts the other
# trailers (grpc-status, grpc-message) and 32 bytes of overhead per entry.
DETAILS_BUDGET = 7 * 1024
MESSAGE_CAP = 200             # characters of one failure's message in the report
GROUPED = "grouped by error"  # in the status message of the grouped form
BITMAP = "(bitmap)"           # in place of the runs of a group whose indexes are a bitmap

Failure = tuple[int, str]     # (canonical code, message) of one failed update


def _detail(error) -> any_pb2.Any:
    """Packed with the type URL "/p4.v1.Error": an Any's URL may be any path whose last segment
    is the type's full name, and every protobuf runtime unpacks it so; the usual
    "type.googleapis.com/" prefix would double the size of an OK update's entry."""
    a = any_pb2.Any()
    a.Pack(error, type_url_prefix="")
    return a


def _group(code: int, message: str, indexes: list[int]) -> any_pb2.Any:
    runs = format_indexes(indexes)
    bitmap = bytearray(indexes[-1] // 8 + 1)
    for i in indexes:
        bitmap[i >> 3] |= 1 << (i & 7)
    if len(runs) <= len(bitmap) + 16:
        return _detail(p4runtime_pb2.Error(canonical_code=code,
                                           message=f"updates {runs}: {message}"))
    e = p4runtime_pb2.Error(canonical_code=code, message=f"updates {BITMAP}: {message}")
    e.details.CopyFrom(_detail(wrappers_pb2.BytesValue(value=bytes(bitmap))))
    return _detail(e)


def _cap(message: str) -> str:
    return message if len(message) <= MESSAGE_CAP else message[:MESSAGE_CAP - 3] + "..."


def write_status(results: Sequence[Failure | None]) -> status_pb2.Status:
    """The UNKNOWN status for a batch in which some updates failed (`results[i]` is None for an
    update that succeeded): per update while that fits DETAILS_BUDGET (a failure repeating an
    earlier one's error says only "as update k"), else grouped."""
    failed = sum(r is not None for r in results)
    status = status_pb2.Status(code=code_pb2.UNKNOWN,
                               message=f"{failed} of {len(results)} updates failed")
    ok = _detail(p4runtime_pb2.Error())
    first: dict[Failure, int] = {}
    for i, r in enumerate(results):
        if r is None:
            status.details.append(ok)
            continue
        r = (r[0], _cap(r[1]))
        k = first.setdefault(r, i)
        status.details.append(_detail(p4runtime_pb2.Error(
            canonical_code=r[0], message=r[1] if k == i else f"as update {k}")))
        if status.ByteSize() > DETAILS_BUDGET:
            return _grouped(results, failed)
    return status


def _grouped(results: Sequence[Failure | None], failed: int) -> status_pb2.Status:
    groups: dict[Failure, list[int]] = {}
    for i, r in enumerate(results):
        if r is not None:
            groups.setdefault((r[0], _cap(r[1])), []).append(i)
    status = status_pb2.Status(code=code_pb2.UNKNOWN, message=(
        f"{failed} of {len(results)} updates failed; {GROUPED}: one detail per distinct error, "
        "its message starts with the indexes of the updates it applies to"))
    left = failed
    for (code, message), indexes in groups.items():
        detail = _group(code, message, indexes)
        if status.ByteSize() + detail.ByteSize() + 8 > DETAILS_BUDGET - 200:
            break  # room is kept for the note below
        status.details.append(detail)
        left -= len(indexes)
    if left:
        status.details.append(_detail(p4runtime_pb2.Error(
            canonical_code=code_pb2.UNKNOWN,
            message=f"{left} more failed updates are not listed: the report would exceed "
                    f"{DETAILS_BUDGET} bytes, more than a gRPC client accepts")))
    return status


def update_errors(status: status_pb2.Status, updates: int) -> Iterator[tuple[int, int, str]]:
    """(update index, canonical code, message) of each failed update a Write status reports, from
    either form. A grouped report may end with a note on failures it could not list, given as
    index -1."""
    errors = []
    for a in status.details:
        e = p4runtime_pb2.Error()
        errors.append(e if a.Unpack(e) else None)
    if len(errors) == updates and GROUPED not in status.message:
        for i, e in enumerate(errors):
            if e is not None and e.canonical_code != code_pb2.OK:
                yield i, e.canonical_code, e.message
        return
    for e in errors:
        if e is None:
            continue
        m = _PREFIX.match(e.message)
        try:
            indexes = (_bitmap_indexes(e) if m.group(1) == BITMAP else parse_indexes(m.group(1))) \
                if m else []
        except ValueError:
            indexes = []
        if not indexes:
            yield -1, e.canonical_code, e.message
        for i in indexes:
            yield i, e.canonical_code, m.group(2)


_PREFIX = re.compile(r"updates ([0-9,/-]+|\(bitmap\)): (.*)\Z", re.S)


def _bitmap_indexes(e: p4runtime_pb2.Error) -> list[int]:
    value = wrappers_pb2.BytesValue()
    if not e.details.Unpack(value):
        raise ValueError("no bitmap in the details")
    bitmap = value.value
    return [i for i in range(len(bitmap) * 8) if bitmap[i >> 3] >> (i & 7) & 1]


def format_indexes(indexes: Sequence[int]) -> str:
    """Ascending indexes as runs: "4" one index, "0-9" consecutive, "20-98/2" every 2nd."""
    out = []
    i, n = 0, len(indexes)
    while i < n:
        j = i + 1
        if j < n:
            step = indexes[j] - indexes[i]
            while j + 1 < n and indexes[j + 1] - indexes[j] == step:
                j += 1
            if j - i >= 2 or step == 1:  # three or more in steps, or two adjacent ones
                out.append(f"{indexes[i]}-{indexes[j]}" + (f"/{step}" if step != 1 else ""))
                i = j + 1
                continue
        out.append(str(indexes[i]))
        i += 1
    return ",".join(out)


def parse_indexes(text: str) -> list[int]:
    """The indexes `format_indexes` wrote; ValueError for text it cannot have written."""
    indexes: list[int] = []
    for part in text.split(","):
        run, _, step = part.partition("/")
        first, _, last = run.partition("-")
        lo, hi = int(first), int(last or first)
        indexes.extend(range(lo, hi + 1, int(step or 1)))
    return indexes
