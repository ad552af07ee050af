"""Control plane: per-core TCP stack, mTCP API, P4Runtime agent and configuration."""
