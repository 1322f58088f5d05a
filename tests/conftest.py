"""Shared pytest configuration. Keep this small: put fixtures in their own modules."""

from realdaemons import libvirtd_qemu, libvirtd_test, libvirtd_test_factory

__all__ = ["libvirtd_qemu", "libvirtd_test", "libvirtd_test_factory"]
