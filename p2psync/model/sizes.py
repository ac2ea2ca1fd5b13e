"""Sizes as a person reads them, one formatter for the command line, the daemon's log and the web
app: 300 bytes is "300 bytes", not "0.0 MB" (which reads as if nothing happened)."""

from __future__ import annotations


def human_size(size: int | float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers show them); under 1000, in bytes."""
    if size < 1000:
        return f"{int(size)} bytes"
    value = float(size)
    unit = "KB"
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":  # 999,999 bytes is "1.0 MB", never "1000.0 KB"
            break
    return f"{value:.1f} {unit}"
