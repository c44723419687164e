"""Where a vif lives in xenstore, exactly as libxl lays it out."""

from __future__ import annotations

from dataclasses import dataclass


def domain_path(domid: int) -> str:
    return f"/local/domain/{domid}"


@dataclass(frozen=True)
class VifPaths:
    frontend_domid: int
    backend_domid: int
    handle: int
    backend_kind: str = "vif"  # a userspace backend beside a live kernel netback may use another

    @property
    def frontend(self) -> str:
        return f"{domain_path(self.frontend_domid)}/device/vif/{self.handle}"

    @property
    def backend(self) -> str:
        return (
            f"{domain_path(self.backend_domid)}/backend/{self.backend_kind}/"
            f"{self.frontend_domid}/{self.handle}"
        )

    @property
    def backend_root(self) -> str:
        return f"{domain_path(self.backend_domid)}/backend/{self.backend_kind}"
