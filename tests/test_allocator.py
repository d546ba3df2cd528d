import platform
import subprocess
import sys

import pytest

from app.allocator import return_large_buffers_to_os


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_threshold_is_set_on_glibc() -> None:
    assert return_large_buffers_to_os() is True


_FAULTS_OF_REUSED_BUFFERS = """
import resource
from app.allocator import return_large_buffers_to_os

assert return_large_buffers_to_os()
for _ in range(10):
    b"x" * (256 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    b"x" * (256 * 1024)  # the size of one of the event loop's socket reads
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_freed_buffer_is_reused_without_new_page_faults() -> None:
    """With only the mmap threshold fixed, each buffer went back to the OS on free: 64 faults per 256 KB."""
    run = subprocess.run([sys.executable, "-c", _FAULTS_OF_REUSED_BUFFERS], capture_output=True, text=True, check=True)
    assert int(run.stdout) < 200 * 64 // 10
