"""``xennet xen ...`` off Xen: one-line errors; the toolstack step against a real xenstored socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from xennet.cli.main import main
from xennet.world.xen import host as xenhost
from xennet.xenstore import daemon
from xennet.xenstore.client import XenstoreClient


@pytest.fixture
def xenstored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[XenstoreClient]:
    sock = str(tmp_path / "xs.sock")
    proc = daemon.spawn(sock)
    monkeypatch.setenv("XENSTORED_PATH", sock)
    xs = XenstoreClient(sock)
    try:
        xs.write("/local/domain/0/domid", "0")
        xs.write("/local/domain/5/domid", "5")
        yield xs
    finally:
        xs.close()
        daemon.stop(proc)


def test_off_xen_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setattr(xenhost, "XENSTORED_SOCKETS", (str(tmp_path / "none"),))
    monkeypatch.setattr(xenhost, "open_xenstore", _no_xenbus(tmp_path))
    for argv in (["xen", "netback"], ["xen", "netfront"], ["xen", "attach", "3"]):
        r = CliRunner().invoke(main, argv)
        assert r.exit_code == 1, (argv, r.output)
        (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
        assert line.startswith("Error: no xenstore here")


def _no_xenbus(tmp_path: Path) -> object:
    real = xenhost.open_xenstore

    def fake(dev_dir: str = "/dev/xen") -> XenstoreClient:
        return real(str(tmp_path / "no-dev-xen"))

    return fake


def test_cli_rejects_bad_options() -> None:
    r = CliRunner().invoke(main, ["xen", "netback", "packing=sideways"])
    assert r.exit_code == 2 and "packing=sideways" in r.output
    r = CliRunner().invoke(main, ["xen", "netback", "--kind", "../vif"])
    assert r.exit_code == 2 and "xenstore directory name" in r.output
    r = CliRunner().invoke(main, ["xen", "attach", "0"])
    assert r.exit_code == 2  # dom0 has no frontend to attach


def test_attach_and_detach_write_libxl_keys(xenstored: XenstoreClient) -> None:
    r = CliRunner().invoke(main, ["xen", "attach", "5", "--kind", "pyvif", "mac=00:16:3E:00:00:20"])
    assert r.exit_code == 0, r.output
    be, fe = "/local/domain/0/backend/pyvif/5/0", "/local/domain/5/device/vif/0"
    assert r.output.strip() == f"{fe} <-> {be}"
    assert xenstored.try_read(f"{fe}/backend") == be
    assert xenstored.try_read(f"{fe}/mac") == "00:16:3e:00:00:20"
    assert xenstored.try_read(f"{be}/frontend-id") == "5"
    assert xenstored.get_perms(fe) == ["n5", "r0"]
    # a second attach of the same handle is refused, not merged
    r = CliRunner().invoke(main, ["xen", "attach", "5", "--kind", "pyvif"])
    assert r.exit_code == 1 and "taken" in r.output
    r = CliRunner().invoke(main, ["xen", "attach", "9"])
    assert r.exit_code == 1 and "domain 9 does not exist" in r.output
    r = CliRunner().invoke(main, ["xen", "detach", "5", "--kind", "pyvif"])
    assert r.exit_code == 0, r.output
    assert xenstored.try_read(fe) is None and xenstored.try_read(be) is None
