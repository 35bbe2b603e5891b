"""Import pyroute2's IPRoute without the rest of the pyroute2 package.

`import pyroute2` runs a package `__init__` that imports every pyroute2 facility (NDB, IPDB,
nftables, conntrack, wireless, IPVS, 9p, ...): about 6 MiB of resident memory that flanneld-py,
which needs only `IPRoute`, would carry for its whole life. `ensure_lite()` registers the
package without running that `__init__`, so that `pyroute2.iproute.linux` and what it needs are
imported alone. The first access of a name the `__init__` defines (another user's
`from pyroute2 import NDB`) runs it then (a module `__getattr__`, PEP 562), so every other user
of pyroute2 in the same process still sees the whole package; a subpackage name
(`from pyroute2 import config`) imports only that subpackage.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import Any


def ensure_lite() -> None:
    """Register `pyroute2` as a package whose `__init__` runs on first use of one of its
    names. Does nothing when pyroute2 is imported already. Raises ImportError without it."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        raise ImportError("pyroute2 is not installed")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader
    lock = threading.RLock()
    kept = ("__all__", "__version__")  # dunder names the __init__ defines

    def load_the_rest(name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name not in kept:
            raise AttributeError(name)  # import machinery probing: no need for the rest
        if not name.startswith("_") and importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")  # a subpackage: just that
        with lock:  # one thread runs the __init__; the others wait for it
            if module.__dict__.get("__getattr__") is load_the_rest:
                loader.exec_module(module)  # raises what the __init__ raises, and stays lazy
                del module.__dict__["__getattr__"]
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}") from None

    module.__getattr__ = load_the_rest  # type: ignore[method-assign]
    sys.modules["pyroute2"] = module
