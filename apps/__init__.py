"""mTCP's example programs: epserver, epwget, perf."""
