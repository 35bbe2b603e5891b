"""pyroute2 imported without its package __init__ still looks whole to every other user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys, threading
import backend.netlink  # registers the lazy package and imports IPRoute alone
assert "pyroute2.ndb.main" not in sys.modules, "the whole package was imported"
import pyroute2
barrier, errors = threading.Barrier(4), []
def use(name):
    barrier.wait()
    try:
        getattr(pyroute2, name)
    except Exception as err:
        errors.append(f"{name}: {err!r}")
names = ("IPRoute", "NDB", "WireGuard", "IPSet")
threads = [threading.Thread(target=use, args=(n,)) for n in names]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
assert pyroute2.__version__ and pyroute2.IPRoute in pyroute2.__all__
from pyroute2 import netns, NetlinkError  # a subpackage and a name of the __init__
print("ok")
"""


def test_first_use_from_several_threads_loads_the_package_once() -> None:
    for _ in range(3):
        res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
