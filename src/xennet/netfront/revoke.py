"""Grants the backend may still map (XSA-396): their pages are freed only once every ref has ended."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..platform.base import Page, Platform


@dataclass
class Revoke:
    refs: list[int]
    pages: list[Page] = field(default_factory=list)

    def retry(self, platform: Platform) -> bool:
        """End what can be ended; free the pages when nothing is left.  True when done."""
        self.refs = [ref for ref in self.refs if not platform.grants.end_access(ref)]
        if self.refs:
            return False
        for page in self.pages:
            platform.memory.free(page)
        self.pages = []
        return True
