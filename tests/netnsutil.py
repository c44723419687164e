"""Shared by the multi-process tests: the network namespaces that exist now (a test that made
some must leave none behind)."""

from __future__ import annotations

import subprocess


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}
