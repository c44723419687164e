"""Without Xen: constructing the xen platform fails with one clear line naming the device."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xennet.platform.base import PlatformError
from xennet.platform.xen import Evtchn, Gntalloc, Gntdev, XenbusTransport, XenPlatform
from xennet.platform.xen.device import XenDeviceError, open_device
from xennet.platform.xen.platform import check_devices, detect_domid, required_devices


@pytest.fixture
def no_hv(tmp_path: Path) -> str:
    return str(tmp_path / "no-hypervisor-type")


@pytest.fixture
def xen_hv(tmp_path: Path) -> str:
    p = tmp_path / "hv-type"
    p.write_text("xen\n")
    return str(p)


def make_devs(tmp_path: Path, *names: str) -> str:
    d = tmp_path / "dev-xen"
    d.mkdir(exist_ok=True)
    for n in names:
        (d / n).touch()
    return str(d)


def one_line(e: pytest.ExceptionInfo[PlatformError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_real_machine_without_xen_names_gntdev() -> None:
    if os.path.exists("/dev/xen"):
        pytest.skip("/dev/xen exists here: this machine may really be a Xen domain")
    with pytest.raises(PlatformError) as e:
        XenPlatform(domid=1, peer_domid=0)
    msg = one_line(e)
    assert msg.startswith("no /dev/xen/gntdev: not running on Xen"), msg
    assert "xen-gntdev" in msg
    assert "also missing: evtchn, gntalloc" in msg


def test_empty_dev_dir(tmp_path: Path, no_hv: str) -> None:
    dev = make_devs(tmp_path)
    with pytest.raises(PlatformError) as e:
        XenPlatform(domid=3, dev_dir=dev, hv_type_path=no_hv)
    msg = one_line(e)
    assert msg == (
        f"no {dev}/gntdev: not running on Xen (no /sys/hypervisor/type), or the xen-gntdev module "
        "is not loaded (modprobe xen-gntdev) (also missing: evtchn)"
    )


def test_on_xen_with_a_module_missing(tmp_path: Path, xen_hv: str) -> None:
    dev = make_devs(tmp_path, "gntdev", "xenbus", "gntalloc")
    with pytest.raises(PlatformError) as e:
        XenPlatform(peer_domid=0, dev_dir=dev, hv_type_path=xen_hv)
    assert one_line(e) == (
        f"no {dev}/evtchn: running on Xen, but the xen-evtchn module is not loaded (modprobe xen-evtchn)"
    )


def test_other_hypervisor_is_named(tmp_path: Path) -> None:
    hv = tmp_path / "hv"
    hv.write_text("kvm\n")
    with pytest.raises(PlatformError) as e:
        XenPlatform(domid=1, dev_dir=make_devs(tmp_path), hv_type_path=str(hv))
    assert "/sys/hypervisor/type is 'kvm'" in one_line(e)


@pytest.mark.parametrize(
    ("peer", "domid", "missing"),
    [
        (None, 1, "gntdev"),  # a backend with its domid given needs gntdev and evtchn only
        (0, 1, "gntalloc"),  # a frontend grants: gntalloc
        (None, None, "xenbus"),  # the domid is looked up in xenstore: xenbus
    ],
)
def test_which_devices_are_needed(
    tmp_path: Path, no_hv: str, peer: int | None, domid: int | None, missing: str
) -> None:
    present = [n for n in ("gntdev", "evtchn", "gntalloc", "xenbus") if n != missing]
    dev = make_devs(tmp_path, *present)
    assert missing in required_devices(peer, domid)
    with pytest.raises(PlatformError) as e:
        check_devices(required_devices(peer, domid), dev, no_hv)
    assert one_line(e).startswith(f"no {dev}/{missing}: ")
    check_devices([n for n in required_devices(peer, domid) if n != missing], dev, no_hv)


def test_xenbus_provider_message(tmp_path: Path, xen_hv: str) -> None:
    with pytest.raises(PlatformError) as e:
        check_devices(["xenbus"], make_devs(tmp_path), xen_hv)
    assert "the kernel has no xenbus device" in one_line(e)


@pytest.mark.parametrize(
    ("cls", "name"),
    [(Gntdev, "gntdev"), (Gntalloc, "gntalloc"), (Evtchn, "evtchn"), (XenbusTransport, "xenbus")],
)
def test_each_device_wrapper_says_what_is_missing(tmp_path: Path, cls: type, name: str) -> None:
    dev = make_devs(tmp_path)
    with pytest.raises(PlatformError) as e:
        cls(dev)
    assert one_line(e).startswith(f"no {dev}/{name}: ")


def test_a_device_that_cannot_be_opened(tmp_path: Path) -> None:
    dev = tmp_path / "d"
    (dev / "gntdev").mkdir(parents=True)  # a directory cannot be opened read-write
    with pytest.raises(XenDeviceError) as e:
        open_device("gntdev", str(dev))
    assert e.value.errno is not None
    assert one_line(e).startswith(f"cannot open {dev}/gntdev: ")


@pytest.mark.parametrize(("domid", "peer"), [(-1, None), (0x7FF0, None), (1, 0x7FF0), (1, -3)])
def test_bad_domids(tmp_path: Path, domid: int, peer: int | None) -> None:
    with pytest.raises(PlatformError, match="is not a domain id"):
        XenPlatform(domid=domid, peer_domid=peer, dev_dir=make_devs(tmp_path))


def test_detect_domid_without_xenstore(tmp_path: Path) -> None:
    uuid = tmp_path / "uuid"
    with pytest.raises(PlatformError) as e:
        detect_domid(make_devs(tmp_path), str(uuid))
    msg = one_line(e)
    assert "pass XenPlatform(domid=...)" in msg and "xenbus" in msg
    uuid.write_text("00000000-0000-0000-0000-000000000000\n")  # dom0's UUID
    assert detect_domid(make_devs(tmp_path), str(uuid)) == 0
    uuid.write_text("6b1ad0b6-6d5c-4c1e-9d3a-2f2c2a1c9e01\n")
    with pytest.raises(PlatformError):
        detect_domid(make_devs(tmp_path), str(uuid))


def test_device_errors_keep_errno_and_status_across_pickle() -> None:
    import pickle

    e = XenDeviceError("gntdev: map: Invalid argument (EINVAL)", status=-3, errno=22)
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, XenDeviceError) and isinstance(back, PlatformError)
    assert (str(back), back.status, back.errno) == (str(e), -3, 22)
