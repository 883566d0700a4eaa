"""hnet_dna.backends.keep_freed_memory: a freed large tensor's pages serve the next one."""

import os
import platform
import subprocess
import sys

import pytest

CHILD = """
import resource, sys, torch
from hnet_dna import backends
if sys.argv[1] == "keep":
    assert backends.keep_freed_memory()
if sys.argv[1] == "switched_off":  # HNET_DNA_KEEP_FREED_MEMORY=0: the call does nothing
    assert not backends.keep_freed_memory()
def step():  # what a training step does with an activation: allocate, fill, free
    x = torch.ones(64 << 18)  # 64 MiB: above glibc's largest mmap threshold
    del x
for _ in range(5):
    step()
faults = []
for _ in range(11):  # the median step: now and then an aligned request that does not fit the freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # chunk grows the heap (layout-dependent)
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults)[5])
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's malloc")
def test_keeping_freed_memory_spares_the_page_faults_of_the_next_large_tensor():
    env = {**os.environ, "HNET_DNA_KEEP_FREED_MEMORY": "0"}
    faults = {mode: int(subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                                       env=env if mode == "switched_off" else None).stdout)
              for mode in ("keep", "default", "switched_off")}
    pages = (64 << 20) // 4096
    # default: every step maps fresh pages and faults each one in (huge pages aside); kept: the
    # freed memory serves most steps (an aligned request that does not fit a freed chunk
    # exactly still grows the heap now and then)
    assert faults["default"] > pages / 2, faults
    assert faults["keep"] < faults["default"] / 3, faults
    assert faults["switched_off"] > pages / 2, faults  # the environment switch restores glibc's default
