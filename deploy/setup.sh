#!/usr/bin/env bash
# Install everything the TRE and its tests need on a fresh Debian machine: system packages (when run as root
# and missing) and a Python virtual environment with the project and its development tools.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# PostgreSQL for the store tests; Ceph's radosgw for a real S3 server that checks signatures and object lock;
# iproute2, nftables and bubblewrap for the embedded workspace sandbox (network namespaces, firewall, mounts).
debian_packages=(postgresql ceph-mon ceph-osd radosgw iproute2 nftables bubblewrap)
missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: Debian packages missing (${missing[*]}); install them as root, or the PostgreSQL tests will skip" >&2
  fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[dev]'
echo "setup: done ($("$VENV/bin/tre" --help >/dev/null && echo 'tre installed'))"
