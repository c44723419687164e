#!/usr/bin/env bash
# The test command: install, lint, type-check, the fast tests on each core, the fuzzers, the
# multi-process tests (a 20,000-packet soak among them), then a quick bench.  A stage that runs no test fails, and
# so does a skipped test (XENNET_STRICT_SKIPS): install.sh installs every tool they need.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
echo "== ruff"; ruff check src lab tests && ruff format --check src lab tests
echo "== mypy"; mypy
# install.sh installed every tool the tests need, so a skip means a missing install step: it fails
export XENNET_STRICT_SKIPS=${XENNET_STRICT_SKIPS:-1}
run_pytest() {  # pytest's exit 5 is "no test selected": for a stage of CI that is a failure too
  python3 -m pytest -q -p no:cacheprovider -rs "$@"
}
seeds=build/fuzz/seeds
rm -rf "$seeds"; mkdir -p "$seeds"
echo "== tests (fast, compiled core)"
XENNET_REQUIRE_NATIVE=1 run_pytest -m "not slow and not xen" "$@"
echo "== tests (fast, pure-Python twin; recording the fuzzers' seed calls)"
XENNET_PURE=1 XENNET_FUZZ_RECORD="$seeds" run_pytest -m "not slow and not xen" "$@"
echo "== fuzz (compiled core under ASan+UBSan; twin against compiled core)"
bash scripts/fuzz-core.sh -n "${XENNET_FUZZ_EXECS:-1000000}" -d "${XENNET_FUZZ_DIFF_EXECS:-50000}" -s "$seeds"
echo "== fuzz campaigns (xennet fuzz: every parser of peer bytes, 5 targets x 6 s)"
xennet fuzz --seconds 6 --json build/fuzz/campaign.json
echo "== tests (multi-process)"
XENNET_REQUIRE_NATIVE=1 run_pytest -m "slow and not xen" "$@"
echo "== bench (quick: a smoke test, no targets asserted)"
XENNET_REQUIRE_NATIVE=1 xennet bench --quick --json build/bench-quick.json
python3 -c "
import json, sys
r = json.load(open('build/bench-quick.json'))
assert r['core'] == 'compiled', r['core']
for group, keys in {'small': ['tx_pps', 'rx_pps', 'c_pps'], 'bulk': ['gbit', 'memcpy_gbit'],
                    'link': ['xennet_tx_gbit', 'xennet_rx_gbit', 'veth_gbit', 'relay_gbit',
                             'xennet_rtt_ms', 'veth_rtt_ms', 'relay_rtt_ms',
                             'split_relay_gbit', 'split_relay_rx_gbit', 'split_relay_rtt_ms'],
                    'scale': ['guests', 'rss_mib', 'ok']}.items():
    missing = [k for k in keys if r[group].get(k) in (None, 0)]
    assert not missing, (group, missing)
assert r['scale']['ok'] is True
print('bench --quick: every figure measured')
"
