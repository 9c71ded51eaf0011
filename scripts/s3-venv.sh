#!/usr/bin/env bash
# A Python virtualenv holding the moto S3 server (a real S3 implementation:
# buckets, policies, ETag/If-None-Match, Range, virtual-host and path-style
# addressing), for tests/integration/s3_releases.rs and scripts/fleet-e2e.sh.
#   scripts/s3-venv.sh DIR     → DIR/bin/moto_server
# Idempotent; concurrent callers wait for the first one (flock).
set -euo pipefail
dir=${1:?usage: scripts/s3-venv.sh DIR}
spec='moto[server]==5.2.5'
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ -x "$dir/bin/moto_server" ] && [ "$(cat "$dir/.spec" 2>/dev/null)" = "$spec" ]; then
    exit 0
fi
rm -rf "$dir"
# Debian's python3 (python3-venv, see scripts/deps.sh), not whatever
# python3 comes first on PATH.
/usr/bin/python3 -m venv "$dir"
timeout 900 "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec"
echo "$spec" > "$dir/.spec"
