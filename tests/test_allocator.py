import platform

import pytest

from app.allocator import return_large_buffers_to_os


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_threshold_is_set_on_glibc() -> None:
    assert return_large_buffers_to_os() is True
