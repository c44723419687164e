"""The command line: usage errors are messages, never tracebacks; every choice comes from its
registry; the demo runs for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import xennet as xennet_pkg
from xennet.abi import netif
from xennet.cli import choices
from xennet.cli.main import main
from xennet.cli.packets import pktgen
from xennet.cli.vif import vif_config
from xennet.netback.rxpolicy import ADMISSION_POLICIES, PACKING_POLICIES
from xennet.netfront.slotpolicy import policy_names
from xennet.ports.pktgen import PRESETS


def xennet(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xennet.cli.main", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args",
    [
        ("demo", "--packts", "5"),
        ("bogus",),
        ("demo", "--packets", "zero"),
        ("demo", "--packets", "0"),
        ("demo", "--mac", "zz:zz"),
        ("xenstored",),
        ("bench", "small", "--runs", "-1"),
    ],
)
def test_typos_get_usage_not_a_traceback(args: tuple[str, ...]) -> None:
    r = xennet(*args)
    assert r.returncode == 2
    assert "Usage:" in r.stderr or "Error:" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.slow
def test_demo_json_reports_verified_counters() -> None:
    r = xennet("demo", "--packets", "300", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] and out["problems"] == []
    assert out["guest"]["stats"]["tx_completed"] == 300 and out["guest"]["received"] == 300
    assert out["backend"]["received"] == 300 and out["backend"]["stats"]["rx_packets"] == 300
    assert out["tx_pps"] > 0 and out["rx_pps"] > 0


@pytest.mark.slow
def test_demo_table() -> None:
    r = xennet("demo", "--packets", "100")
    assert r.returncode == 0, r.stderr
    assert "every byte checked" in r.stdout and "OK" in r.stdout
    assert "pages 0, grants 0, maps 0, ports 0" in r.stdout


# -- the command tree, its choices and where they come from --------------------------------------

CLI_DIR = Path(xennet_pkg.__file__).parent / "cli"
MAX_MODULE_LINES = 300


def _commands(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            out += _commands(cmd, click.Context(cmd, parent=ctx, info_name=name), (*path, name))
        else:
            out.append((*path, name))
    return out


ALL_COMMANDS = _commands(main, click.Context(main, info_name="xennet"))


def test_the_tree_holds_every_command_group() -> None:
    for expected in [("demo",), ("pktgen",), ("link",), ("xen", "netfront"), ("bench", "small"),
                     ("xenlab", "up"), ("fuzz",), ("layout",), ("report",), ("soak",)]:  # fmt: skip
        assert expected in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=[" ".join(p) or "xennet" for p in ALL_COMMANDS])
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    r = CliRunner().invoke(main, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output and "Traceback" not in r.output


def _choice_options() -> list[tuple[tuple[str, ...], str, str]]:
    """(command path, option flag, value) for every value of every click.Choice option."""
    out = []
    for path in ALL_COMMANDS:
        cmd: Any = main
        for name in path:
            cmd = cmd.get_command(click.Context(cmd), name)
        for p in cmd.params:
            if isinstance(p, click.Option) and isinstance(p.type, click.Choice):
                out += [(path, p.opts[0], str(v)) for v in p.type.choices]
    return out


CHOICES = _choice_options()


@pytest.mark.parametrize("path,flag,value", CHOICES, ids=[f"{' '.join(p)} {f}={v}" for p, f, v in CHOICES])
def test_every_offered_choice_parses(path: tuple[str, ...], flag: str, value: str) -> None:
    cmd: Any = main
    for name in path:
        cmd = cmd.get_command(click.Context(cmd), name)
    ctx = cmd.make_context(path[-1], [flag, value])  # parses; raises a UsageError if refused
    name = next(p.name for p in cmd.params if flag in p.opts)
    got = ctx.params[name]
    assert value in (got if isinstance(got, tuple) else (got,))


def test_choices_are_the_registries() -> None:
    params = {p.name: p for p in pktgen.params}

    def offered(name: str) -> list[str]:
        t = params[name].type
        assert isinstance(t, click.Choice)
        return [str(c) for c in t.choices]

    assert offered("policy") == policy_names()
    assert "segment+relayout" in offered("policy") and "segment+linearize" in offered("policy")
    assert offered("packing") == list(PACKING_POLICIES)
    assert offered("admission") == list(ADMISSION_POLICIES)
    assert offered("preset") == list(PRESETS)
    assert choices.VIF_CHOICES["policy"] == tuple(policy_names())
    assert choices.GSO_TYPES == {
        "tcpv4": netif.XEN_NETIF_GSO_TYPE_TCPV4,
        "tcpv6": netif.XEN_NETIF_GSO_TYPE_TCPV6,
    }


def test_a_policy_added_to_the_registry_reaches_the_command_line() -> None:
    code = (
        "from xennet.netfront.slotpolicy import policies as p\n"
        "p._POLICIES['drop+test'] = p.DropPolicy\n"
        "from xennet.cli.main import main\n"
        "main(['pktgen', '--help'], standalone_mode=False)\n"
        "main(['xen', 'netfront', '--help'], standalone_mode=False)\n"
        "from xennet.cli.vif import vif_config\n"
        "print('front', vif_config(('policy=drop+test',))[1].front.slot_policy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("drop+test") >= 3 and "front drop+test" in r.stdout


@pytest.mark.parametrize(
    "args,bad",
    [
        (("pktgen", "--policy", "relayot"), "relayot"),
        (("pktgen", "--packing", "fulll"), "fulll"),
        (("pktgen", "--admission", "fit"), "fit"),
        (("pktgen", "--data", "mmap"), "mmap"),
        (("pktgen", "--direction", "up"), "up"),
        (("layout", "--preset", "wrost"), "wrost"),
        (("fuzz", "--target", "nosuch"), "nosuch"),
    ],
)
def test_a_misspelled_choice_is_a_usage_error(args: tuple[str, ...], bad: str) -> None:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 2, r.output
    assert "Invalid value" in r.output and bad in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    "spec", ["policy=relayot", "packing=fulll", "admission=fit", "data=mmap", "grants=shared", "offloads=2"]
)
def test_a_misspelled_vif_choice_is_a_usage_error(spec: str) -> None:
    r = CliRunner().invoke(main, ["xen", "netfront", spec])
    assert r.exit_code == 2 and spec in r.output and "choose one of" in r.output, r.output


@pytest.mark.parametrize("policy", policy_names())
def test_every_slot_policy_is_a_vif_option(policy: str) -> None:
    _, drivers = vif_config((f"policy={policy}", "grants=per-packet", "data=map", "packing=seed"))
    assert drivers.front.slot_policy == policy and drivers.front.grants == "per-packet"
    assert drivers.back.tx_limits.data == "map" and drivers.back.rx_packing == "seed"


def test_tx_batch_is_a_vif_option_checked_when_built() -> None:
    assert vif_config(())[1].back.tx_limits.batch_slots == 64
    assert vif_config(("tx_batch=256", "data=map"))[1].back.tx_limits.batch_slots == 256
    for bad in ("tx_batch=0", "tx_batch=257", "tx_batch=many"):
        r = CliRunner().invoke(main, ["xen", "netback", bad])
        assert r.exit_code == 2 and bad in r.output and "1..256" in r.output, r.output


@pytest.mark.parametrize("policy", ["segment+linearize", "segment+relayout"])
def test_pktgen_runs_the_composed_policies(policy: str) -> None:
    r = CliRunner().invoke(
        main, ["pktgen", "--preset", "worst", "--count", "4", "--gso", "1448", "--policy", policy, "--json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["packets_generated"] == 4 and out["problems"] == []
    assert out["policy"][f"{policy}:applied"] == 4  # the worst case is over the limit: the policy ran


@pytest.mark.parametrize("gso,ip", [("tcpv4:1448", 4), ("tcpv6:1448", 6)])
def test_layout_gso_kinds(gso: str, ip: int) -> None:
    r = CliRunner().invoke(main, ["layout", "--preset", "worst", "--gso", gso, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["strategies"]) == set(policy_names())
    # segmented into TCP packets of 1448 bytes payload after the IPv4 or IPv6 headers
    assert out["strategies"]["segment"]["packets"] > 1


@pytest.mark.parametrize("gso", ["udp:1448", "tcpv4", "tcpv4:0", "tcpv6:70000"])
def test_layout_bad_gso_is_a_usage_error(gso: str) -> None:
    r = CliRunner().invoke(main, ["layout", "--preset", "worst", "--gso", gso])
    assert r.exit_code == 2 and "tcpv4:MSS or tcpv6:MSS" in r.output, r.output


def test_no_cli_module_is_over_the_limit() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI_DIR.glob("*.py")}
    assert "main.py" in sizes and len(sizes) > 5
    assert all(n <= MAX_MODULE_LINES for n in sizes.values()), sizes


def test_help_does_not_import_the_lab() -> None:
    code = (
        "import sys\n"
        "from xennet.cli.main import main\n"
        "main(['--help'], standalone_mode=False)\n"
        "main(['pktgen', '--help'], standalone_mode=False)\n"
        "print('lab loaded' if any(m.startswith('xenlab') for m in sys.modules) else 'no lab')\n"
        "main(['xenlab', '--help'], standalone_mode=False)\n"
        "print('lab loaded' if 'xenlab.cli' in sys.modules else 'no lab')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, _, second = r.stdout.partition("no lab\n")
    assert "xenlab" in first and "Real Xen" in first  # listed all the same
    assert second.rstrip().endswith("lab loaded") and "preflight" in second  # loaded when asked


def test_the_lazy_xenlab_help_is_the_labs_own() -> None:
    from xenlab.cli import register
    from xennet.cli.main import XENLAB_HELP

    holder = click.Group()
    register(holder)
    assert holder.commands["xenlab"].help == XENLAB_HELP
    r = CliRunner().invoke(main, ["xenlab", "preflight", "--help"])
    assert r.exit_code == 0 and "missing" in r.output


def test_link_guests_wants_two_or_more_and_no_capture_options() -> None:
    from click.testing import CliRunner

    from xennet.cli.main import main

    r = CliRunner().invoke(main, ["link", "guests=1", "--check"])
    assert r.exit_code == 2 and "guests=N wants N >= 2" in r.output
    r = CliRunner().invoke(main, ["link", "guests=3", "--pcap-host", "x.pcap"])
    assert r.exit_code == 2 and "takes --check" in r.output
    r = CliRunner().invoke(main, ["switch", "17"])
    assert r.exit_code == 2
