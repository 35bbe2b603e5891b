"""The allocator settings of `flanneld_py.memory` (glibc; this test machine runs glibc)."""

from __future__ import annotations

import subprocess
import sys

from flanneld_py import memory


def test_glibc_takes_the_settings() -> None:
    assert memory.configure_allocator()
    assert memory.release_free_memory()


def test_a_threads_freed_memory_is_returned_once_configured() -> None:
    """A thread frees a large dict (which raises glibc's dynamic trim threshold) and then many
    small objects; only with `configure_allocator` does its arena give the freed pages back."""
    code = """
import sys, threading
from pathlib import Path
from flanneld_py import memory
if sys.argv[1] == "on":
    memory.configure_allocator()
def anon():
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1])
def work():
    big = dict.fromkeys(range(200_000))
    del big
    junk = [str(i) * 3 for i in range(300_000)]
    before = anon()
    del junk
    print(before - anon())
t = threading.Thread(target=work)
t.start()
t.join()
"""
    freed = {}
    for mode in ("off", "on"):
        res = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                             env={"PYTHONMALLOC": "malloc"}, check=True)  # fmt: skip
        freed[mode] = int(res.stdout)
    assert freed["on"] >= 1024 and freed["off"] < freed["on"] // 4, freed  # KiB given back
