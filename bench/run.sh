#!/usr/bin/env bash
# abupdate install performance, side by side with RAUC, SWUpdate and casync,
# on this machine, in one run. See bench/README.md.
#
#   bench/run.sh            everything: prepare, cases (bounds and tools), scaling, http,
#                           ram (the slot on a loop device over a RAM file), rss, sizes
#   bench/run.sh PART       one of prepare|cases|scaling|http|ram|rss|sizes (prepare runs first anyway),
#                           or report (only print the tables of the last results)
#   CASES_ONLY="abu-w27 rauc-zstd" bench/run.sh cases     a subset of the cases
#
# Knobs (environment): RUNS=5 (runs per case, alternating), SIZE_MIB=1024 (the
# image), LEVEL=19 (zstd level of the image's payloads: pack's default), RSS_SIZES="256 1024 4096",
# BENCH_DIR=target/bench (scratch; images and payloads are cached there between
# runs, keyed by mode and level: delete $BENCH_DIR/rel to re-pack), SKIP_BUILD=1,
# LOOP_DIO=on (the slots' loop devices use direct I/O on their backing files),
# HOLD_FREED_PAGES=off (a VM's free page reporting left as it is: bench/lib/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=${BENCH_DIR:-$ROOT/target/bench}
RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
LEVEL=${LEVEL:-19}
RSS_SIZES=${RSS_SIZES:-256 1024 4096}
ABU=$ROOT/target/x86_64-unknown-linux-musl/release/abupdate
RES=$W/results
mkdir -p "$W"/{img,rel,keys,slots,tmp,logs} "$RES"

log() { printf '\033[1m[bench %(%H:%M:%S)T]\033[0m %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# shellcheck source=bench/lib/image.sh
. "$ROOT/bench/lib/image.sh"
# shellcheck source=bench/lib/tools.sh
. "$ROOT/bench/lib/tools.sh"
# shellcheck source=bench/lib/measure.sh
. "$ROOT/bench/lib/measure.sh"

deps() {
    [ "$(id -u)" = 0 ] || die "run as root (loop devices, mounts, RAUC's D-Bus service)"
    "$ROOT/scripts/deps.sh"
    local want=(rauc swupdate casync squashfs-tools dbus time nginx curl zstd openssl e2fsprogs grub2-common)
    local missing=()
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [ -z "${SKIP_BUILD:-}" ]; then
        log "building the static release binaries (with pack; the host build without)"
        cargo build --release --quiet --target x86_64-unknown-linux-musl --no-default-features
        cp "$ROOT/target/x86_64-unknown-linux-musl/release/abupdate" "$W/abupdate-host"
        cargo build --release --quiet --target x86_64-unknown-linux-musl
    fi
    [ -x "$ABU" ] || die "no $ABU"
}

prepare() {
    [ -s "$W/keys/release.key" ] || "$ABU" keygen --secret "$W/keys/release.key" --public "$W/keys/release.pub" >/dev/null
    image rootfs "$SIZE_MIB"
    old_image rootfs "$SIZE_MIB"
    release rootfs "$LEVEL" seg 2.0
    release rootfs "$LEVEL" w27 2.0
    release rootfs "$LEVEL" w23 2.0
    release rootfs "$RAUC_LEVEL" seg-rl 2.0
    rauc_prepare
    swu_prepare
    casync_prepare
    slots_setup "$SIZE_MIB"
}

main() {
    local what=${1:-all}
    if [ "$what" = report ]; then report; return; fi   # the tables from the last results
    deps
    trap cleanup EXIT
    hold_freed_pages
    local reported_before; reported_before=$(reported_kib)
    rm -f "$RES/reporting.txt"
    prepare
    case $what in
        prepare) ;;
        cases) cases ;;
        scaling) scaling ;;
        http) http_bench ;;
        rss) rss_sweep ;;
        ram) ram_bench ;;
        sizes) sizes ;;
        all) cases; scaling; http_bench; ram_bench; rss_sweep; sizes ;;
        *) die "unknown part $what" ;;
    esac
    local reported_after; reported_after=$(reported_kib)
    if [ "$reported_before" != - ]; then
        printf '%s\n%s\n' "${REPORTING_WAS:+held 60000 ms (was $REPORTING_WAS)}" \
            "$((reported_after - reported_before))" > "$RES/reporting.txt"
    elif reporting_balloon; then
        # A mainline kernel reports without a knob to hold pages or a count.
        echo "on and not held (no min_free_ms here: RAUC, SWUpdate and casync may swing from run to run)" > "$RES/reporting.txt"
    fi
    report | tee "$RES/report.md"
}

main "$@"
