"""Import Mininet from the distribution's package when this interpreter cannot see it.

Debian installs Mininet for the system Python (`python3-mininet` files under
/usr/lib/python3/dist-packages). A virtualenv or pyenv Python does not search that directory, and
adding the whole directory to `sys.path` would shadow our own dependencies (protobuf, grpc) with
the distribution's versions. Mininet is pure Python with only standard-library imports, so its
package directory alone is loaded from there.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import sys
from types import ModuleType

SEARCH = ("/usr/lib/python3/dist-packages/mininet",
          "/usr/local/lib/python3*/dist-packages/mininet",
          "/usr/lib/python3*/site-packages/mininet")

INSTALL = "install Mininet (Debian/Ubuntu: apt-get install mininet) and run as root"


class MininetMissing(ImportError):
    """Mininet is not installed where we can load it; the message says what to install."""


def load() -> ModuleType:
    """The `mininet` package: this interpreter's own, else the distribution's package directory."""
    if "mininet" in sys.modules:
        return sys.modules["mininet"]
    try:
        return importlib.import_module("mininet")
    except ImportError:
        pass
    for pattern in SEARCH:
        for pkg_dir in sorted(glob.glob(pattern)):
            spec = importlib.util.spec_from_file_location(
                "mininet", f"{pkg_dir}/__init__.py", submodule_search_locations=[pkg_dir])
            if spec is None or spec.loader is None:
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules["mininet"] = module
            try:
                spec.loader.exec_module(module)
            except Exception:
                del sys.modules["mininet"]
                raise
            return module
    raise MininetMissing(f"Mininet not found for {sys.executable} nor in {', '.join(SEARCH)}; "
                         f"{INSTALL}")
