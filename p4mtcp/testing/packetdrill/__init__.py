"""packetdrill scripts on the p4mtcp stack: parse (parse.py), run on a Host (run.py, syscalls.py),
report (report.py), the `p4mtcp packetdrill` command (cli.py). See docs/testing.md."""

from .parse import parse, parse_file
from .run import DEFAULT_TOLERANCE, Outcome, run_path, run_script
from .script import Failure, Script, ScriptError, Unmapped

__all__ = ["parse", "parse_file", "run_script", "run_path", "Outcome", "Script", "ScriptError",
           "Failure", "Unmapped", "DEFAULT_TOLERANCE"]
