"""Networking: the peer server and client (mutual TLS, pinned keys), framing, discovery."""
