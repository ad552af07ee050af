"""The embedded P4 target: a Python mirror of p4src/ behind a P4Runtime server."""
