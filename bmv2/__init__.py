"""Research testbed: BMv2 launcher and Mininet integration."""
