#!/usr/bin/env bash
# Installs the system libraries layerskip builds against, when they are missing:
# OpenBLAS (libopenblas-dev), SQLite (libsqlite3-dev) and libpq (libpq-dev, the PostgreSQL job
# store's client), GNU time (the tests measure peak memory with it), and the PostgreSQL server and
# psql (postgresql: the tests run the store on a throwaway cluster of their own, never on a system
# service). Debian/Ubuntu; uses sudo when not root.
set -euo pipefail

missing=()
for pkg in libopenblas-dev libsqlite3-dev libpq-dev postgresql pkg-config time iproute2; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "error: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
