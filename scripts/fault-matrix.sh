#!/usr/bin/env bash
# The fault-injection matrix (tests/integration/fault_matrix.rs) with its coverage
# printed: every flow × bootloader, every durable step it crashed at, and
# the total. Needs root (grub-editenv, fw_printenv, nginx for the delta flow).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test --features failpoints --test integration fault_matrix -- --nocapture >"$out" 2>&1 || {
    grep -v '^abupdate: ' "$out" | tail -60
    exit 1
}
grep '^fault matrix ' "$out" | sort
total=$(grep '^fault matrix ' "$out" | awk -F': ' '{split($2, a, " "); s += a[1]} END {print s}')
flows=$(grep -c '^fault matrix ' "$out")
echo "fault matrix: $total crash points over $flows flow/bootloader pairs, each recovered"
# The floor: fewer points means flows or failpoints were lost (350 today).
if [ "${total:-0}" -lt 180 ]; then
    echo "fault matrix: only $total crash points (at least 180 expected)" >&2
    exit 1
fi
grep '^test result' "$out"
