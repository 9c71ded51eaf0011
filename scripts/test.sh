#!/usr/bin/env bash
# The test command: everything CI checks, in one run from a clean clone.
#   lint (fmt, clippy) → unit + integration tests (real minisign, grub-editenv,
#   fw_printenv, nginx, node_exporter, Prometheus, moto S3, loop devices;
#   failpoints compiled in) → the alerting rules (promtool) → the static
#   musl release build (size reported) → the demo → the fleet end to end (50 hosts,
#   Prometheus, S3) → systemd unit check → the GRUB-in-qemu
#   end-to-end test → one UEFI (OVMF) scenario per EFI backend (all of them, and the
#   Debian guest with systemd as PID 1: scripts/vm-test.sh --firmware ovmf
#   --all) → short fuzz runs of every parser (FUZZ_SECONDS, default 30 per target; longer runs: scripts/fuzz.sh 600).
set -euo pipefail
cd "$(dirname "$0")/.."

# Space first: a full disk fails the build mid-way with a linker "Bus error"
# and a rustc panic that name neither the disk nor the need. A run from a
# clean clone leaves target/ at about 5.3 GB, plus temporary files and VM disks.
need_gib=12
free_gib=$(( $(df --output=avail -k . | tail -1) / 1024 / 1024 ))
if [ "$free_gib" -lt "$need_gib" ]; then
    echo "FAIL: $free_gib GiB free on the file system of $(pwd) ($(df --output=target . | tail -1)); the test run needs about $need_gib GiB" >&2
    exit 1
fi

# Every temporary file of the run (the tests' fixtures, slots, servers) goes
# under one directory, removed when the run ends however it ends: a run
# leaves nothing behind in /tmp, also when a test process is killed.
TMPDIR=$(mktemp -d /tmp/abupdate-test.XXXXXX)
chmod 1777 "$TMPDIR" # as /tmp: servers' workers and checks run as other users
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

# Each step's heading says when it began (seconds into the run), so a slow
# CI run shows which step took the time.
phase() { echo "== $* (at ${SECONDS} s)"; }

scripts/deps.sh

phase "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --features failpoints -- -D warnings

phase "32-bit host build (i686, static; the delta tests run it as a 32-bit host)"
cargo build --release --target i686-unknown-linux-musl --no-default-features
echo "static 32-bit host binary: $(stat -c %s target/i686-unknown-linux-musl/release/abupdate) bytes"

phase "tests"
rm -rf target/tmp/fault-matrix
cargo test --features failpoints

phase "alerting rules (promtool): syntax, then their unit tests"
promtool check rules contrib/prometheus/abupdate-rules.yml
(cd contrib/prometheus && promtool test rules abupdate-rules.test.yml)

phase "fault-injection matrix: every durable step, crashed at and recovered"
cat target/tmp/fault-matrix/*.txt
awk -F': ' '{split($2, a, " "); s += a[1]; n++} END {print "fault matrix: " s " crash points over " n " flow/bootloader pairs, each recovered"}' \
    target/tmp/fault-matrix/*.txt

phase "static release builds"
bin=target/x86_64-unknown-linux-musl/release/abupdate
# The host build: everything but `pack` (no zstd compressor).
cargo build --release --target x86_64-unknown-linux-musl --no-default-features
cp "$bin" target/abupdate-host
./target/abupdate-host --version
host_size=$(stat -c %s target/abupdate-host)
# The brief's budget: the static host binary is at most 3 MiB.
host_limit=$((3 * 1024 * 1024))
echo "static host binary (no pack): $host_size bytes (limit $host_limit)"
if [ "$host_size" -gt "$host_limit" ]; then
    echo "FAIL: the static host binary is $host_size bytes, over the limit of $host_limit bytes (3 MiB)" >&2
    exit 1
fi
# The full build (with `pack`): what the VM test packs releases with.
cargo build --release --target x86_64-unknown-linux-musl
file "$bin" 2>/dev/null || true
echo "static binary with pack: $(stat -c %s "$bin") bytes"

phase "the README's first command: scripts/demo.sh"
scripts/demo.sh > target/demo.log 2>&1 || { cat target/demo.log; exit 1; }
grep -q 'by delta' target/demo.log || { cat target/demo.log; echo "the demo's update did not go by delta"; exit 1; }
grep -E '^last install' target/demo.log

if [ "${ABUPDATE_SKIP_FLEET_E2E:-0}" != 1 ]; then
    phase "fleet end to end: 50 hosts, node_exporter, Prometheus, releases on S3 (scripts/fleet-e2e.sh)"
    # Bounded: about 4 minutes on an idle machine; a hang is killed with
    # everything it started (timeout signals the script's process group).
    timeout -k 30 1200 scripts/fleet-e2e.sh > target/fleet-e2e.log 2>&1 \
        || { cat target/fleet-e2e.log; echo "fleet e2e failed or ran over 20 minutes"; exit 1; }
    grep -vE '^(wrote|key id) ' target/fleet-e2e.log
fi

if [ -x scripts/check-units.sh ]; then
    phase "systemd units"
    scripts/check-units.sh
fi

if [ -x scripts/vm-test.sh ] && [ "${ABUPDATE_SKIP_VM:-0}" != 1 ]; then
    phase "GRUB in qemu: the shipped grub.cfg's choices, then end to end"
    scripts/vm-test.sh --grub-selftest
    scripts/vm-test.sh
    # One scenario per EFI backend keeps CI within 60 minutes; the systemd
    # guest (debootstrap, 2-4 min per boot under TCG) and every other scenario:
    # scripts/vm-test.sh --firmware ovmf --all
    phase "UEFI in qemu (OVMF): kind = efi, then systemd-boot"
    scripts/vm-test.sh --firmware ovmf --boot efi --scenario 1
    scripts/vm-test.sh --firmware ovmf --boot systemd-boot --scenario 1
fi

if [ "${ABUPDATE_SKIP_FUZZ:-0}" != 1 ]; then
    phase "fuzz"
    # A fixed seed: the same inputs on every CI run of a build (new seeds are
    # for the long runs, scripts/fuzz.sh 600).
    FUZZ_SEED=${FUZZ_SEED:-20261203} scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
fi
phase "all checks passed"
