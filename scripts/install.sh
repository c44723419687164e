#!/usr/bin/env bash
# Install everything xennet needs on a Debian bookworm machine: Debian packages, then the
# package itself with its test extras.  Idempotent; quick when everything is already there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
mapfile -t pkgs < <(grep -vE '^\s*(#|$)' "$here/apt-packages.txt")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "install: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e "$repo[test]" -e "$repo/lab" 2>&1 | grep -v -e "^WARNING: Running pip as" -e "is ignored: it is neither" || true
python3 -c "import xennet, xenlab" && command -v xennet >/dev/null
