"""What every fuzz target implements, and the checks they share."""

from __future__ import annotations

import resource


class Leak(Exception):
    """Something not given back after teardown: ``what`` says which account and by how much."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Harness:
    """One fuzz target.  ``one`` feeds an input to the real code; any exception it lets out
    is a crash.  ``check`` tears down whatever state ``one`` reuses across inputs (fresh
    state per input would be too slow), raises ``Leak`` if an account is not back to zero,
    and sets up again; the runner calls it every ``check_every`` inputs and at the end."""

    max_len = 4096
    check_every = 64

    def __init__(self, name: str) -> None:
        self.name = name

    def seeds(self) -> list[bytes]:
        """Inputs that reach past the first checks, to start the corpus."""
        return []

    def one(self, data: bytes) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Tear down, raise ``Leak`` if anything is still held, set up again."""

    def close(self) -> None:
        """Tear down for good (after the last ``check``)."""


def rss_mb() -> float:
    """This process's peak resident set, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
