"""What a benchmark ran on: the first processor's fields of /proc/cpuinfo, shared by the reports."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cpuinfo_fields"]


def cpuinfo_fields() -> dict[str, str]:
    """``key: value`` lines of the first processor block of /proc/cpuinfo; {} where there is none."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0].splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields
