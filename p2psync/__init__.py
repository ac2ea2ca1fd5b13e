"""p2psync: keep one reference library identical on several machines, peer to peer."""

__version__ = "0.1.0"
