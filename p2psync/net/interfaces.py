"""This machine's IPv4 addresses, for announcing over mDNS (ifaddr: zeroconf's own dependency)."""

from __future__ import annotations

import ipaddress

import ifaddr


def local_ipv4_addresses() -> list[str]:
    """Every IPv4 address on an interface, link-local ones last (a peer on the LAN should try a
    routable address first); loopback only when there is nothing else."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ip.ip not in found:
                found.append(ip.ip)
    outside = [a for a in found if not ipaddress.IPv4Address(a).is_loopback]
    outside.sort(key=lambda a: ipaddress.IPv4Address(a).is_link_local)
    return outside or ["127.0.0.1"]
