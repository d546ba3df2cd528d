import os
import platform
import subprocess
import sys

import pytest

from app.allocator import keep_buffers_while_busy

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's")


def _run(script: str, **env: str) -> str:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env={**environment, **env}
    )
    return run.stdout.strip()


@glibc_only
def test_thresholds_are_set_on_glibc() -> None:
    assert keep_buffers_while_busy() is True


@glibc_only
def test_an_operators_own_glibc_tuning_is_left_alone() -> None:
    script = "from app.allocator import keep_buffers_while_busy; print(keep_buffers_while_busy())"
    assert _run(script, MALLOC_TRIM_THRESHOLD_="1048576") == "False"
    assert _run(script, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=8388608") == "False"
    assert _run(script, GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F") == "True"


_FAULTS_OF_REUSED_BUFFERS = """
import resource
from app.allocator import keep_buffers_while_busy

assert keep_buffers_while_busy()
for _ in range(3):
    b"x" * SIZE
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    b"x" * SIZE
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@glibc_only
@pytest.mark.parametrize("size", [256 << 10, 12 << 20], ids=["a socket read", "a 12 MP alpha plane"])
def test_a_freed_buffer_is_reused_without_new_page_faults(size: int) -> None:
    """Handed back on free, each buffer is faulted in again: 64 faults per 256 KB, 3,072 per 12 MB."""
    faults = int(_run(_FAULTS_OF_REUSED_BUFFERS.replace("SIZE", str(size))))
    assert faults < 50 * (size // 4096) // 10


_RSS_AFTER_TRIM = """
import ctypes
from app.allocator import _glibc, give_back_free_memory, keep_buffers_while_busy

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

keep_buffers_while_busy()
libc = _glibc()
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
big = []
for _ in range(24):
    big.append(libc.malloc(10 << 20))
    ctypes.memset(big[-1], 1, 10 << 20)  # written, so resident
pin = libc.malloc(4 << 20)  # above them, so once freed they are a hole no trim at the heap's top reaches
assert pin > max(big), "the pin landed below the blocks"
for block in big:
    libc.free(block)
before = rss_mb()
assert give_back_free_memory()
print(before - rss_mb())
"""


@glibc_only
def test_free_memory_inside_the_heap_is_given_back() -> None:
    assert float(_run(_RSS_AFTER_TRIM)) > 150
