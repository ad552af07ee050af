"""`python -m p4mtcp.testbed` is `p4mtcp testbed`."""

import sys

from p4mtcp.testbed.topo import main

sys.exit(main())
