"""pyvirtrpc: libvirt's RPC protocol in pure Python, with Trio."""

__version__ = "0.1.0"
