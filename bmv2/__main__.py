"""`python -m p4mtcp.bmv2` is `p4mtcp testbed`."""

import sys

from p4mtcp.bmv2.topo import main

sys.exit(main())
