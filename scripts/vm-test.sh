#!/usr/bin/env bash
# End-to-end test of abupdate on a real bootloader: GRUB (i386-pc) in qemu,
# Debian's kernel, a shared busybox initramfs, two ext4 root slots made of
# busybox-static + the static musl abupdate, a data partition, releases built
# with `abupdate pack` and served by nginx to the guest (10.0.2.2 = host
# loopback under qemu user networking).  One file per scenario in
# scripts/vm/scenarios, on the shared library scripts/vm/lib (scripts/vm/README.md).
#
#   scripts/vm-test.sh                  every scenario (needs root: apt, loop, mount)
#   scripts/vm-test.sh --scenario 3,5   these (repeatable; number or name); each starts
#                                       from the checkpoint its predecessor left, or runs it first
#   scripts/vm-test.sh --list           the scenarios
#   scripts/vm-test.sh --grub-selftest  GRUB script + harness only (scripts/vm/selftest;
#                                       no abupdate); --scenario and --list apply to it
#
# The variant (scripts/vm/README.md "Variants"):
#   --firmware bios|ovmf     SeaBIOS (default) or UEFI: Debian's OVMF, NVRAM in a
#                            writable copy of OVMF_VARS kept with the disk
#   --boot grub|efi|systemd-boot
#                            the bootloader abupdate drives (bios: grub; ovmf: efi,
#                            the default, or systemd-boot); its scenarios are
#                            scripts/vm/scenarios (grub), scripts/vm/efi, scripts/vm/systemd-boot
#   --guest busybox|systemd  the slots' userspace: busybox-static and an init doing
#                            what the units do (default), or Debian with systemd as
#                            PID 1 and the shipped units (debootstrap, cached)
#   --all                    every bootloader and guest of the firmware, one run each
#                            (the scenarios that support that guest); the last line
#                            sums them
#
# Environment:
#   ABUPDATE_VM_DIR           work dir (default target/vm); caches kernel, builds, checkpoints
#   ABUPDATE_BIN              use this static abupdate instead of building it
#   ABUPDATE_BIN_FAILPOINTS   the same built with --features failpoints (the
#                             releases of scenario 7, cut at named steps)
#   ABUPDATE_VM_ACCEL         auto (default) | kvm | tcg
#   ABUPDATE_VM_BOOT_TIMEOUT  seconds per boot (default 300; the systemd guest 900)
#   ABUPDATE_VM_THROTTLE      guest disk write limit in bytes/s (default 16 MiB/s)
#   ABUPDATE_VM_KEEP_GOING    1 = run later scenarios after a failed one
#   ABUPDATE_VM_REBUILD       1 = rebuild slot images and releases even if unchanged
#   ABUPDATE_VM_MIRROR        Debian mirror of the systemd guest (default deb.debian.org)
#
# Every boot is one qemu process; its serial console goes to
# target/vm/logs/NN-name.log.  The last line is "P passed, F failed" over the
# scenarios that were to run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
W="${ABUPDATE_VM_DIR:-$REPO/target/vm}"
mkdir -p "$W"
W="$(cd "$W" && pwd)"
KEEP_GOING="${ABUPDATE_VM_KEEP_GOING:-0}"
BIN="${ABUPDATE_BIN:-}"
BIN_FP="${ABUPDATE_BIN_FAILPOINTS:-}"
# The variant (scripts/vm/README.md): firmware, bootloader, guest userspace.
FIRMWARE=bios BOOT="" GUEST=busybox ALL=0 ARGS=("$@")
SUITE=abupdate SUITE_LETTER=s
WANT=() LIST=0
usage() {
    echo "usage: $0 [--firmware bios|ovmf] [--boot grub|efi|systemd-boot] [--guest busybox|systemd]" \
         "[--grub-selftest] [--all] [--list | --scenario NAME[,NAME...]...]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --grub-selftest) SUITE=grub-selftest SUITE_LETTER=g ;;
        --firmware|--boot|--guest)
            [ $# -ge 2 ] || usage
            case "$1" in --firmware) FIRMWARE="$2" ;; --boot) BOOT="$2" ;; --guest) GUEST="$2" ;; esac
            shift ;;
        --firmware=*) FIRMWARE="${1#*=}" ;;
        --boot=*) BOOT="${1#*=}" ;;
        --guest=*) GUEST="${1#*=}" ;;
        --all) ALL=1 ;;
        --scenario) [ $# -ge 2 ] || usage; IFS=, read -r -a names <<<"$2"; WANT+=("${names[@]}"); shift ;;
        --scenario=*) IFS=, read -r -a names <<<"${1#*=}"; WANT+=("${names[@]}") ;;
        --list) LIST=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage ;;
    esac
    shift
done
case "$FIRMWARE" in
    bios) BOOTS=(grub) ;;
    ovmf) BOOTS=(efi systemd-boot) ;;
    *) echo "vm-test: no firmware '$FIRMWARE' (bios, ovmf)" >&2; exit 2 ;;
esac
GUESTS_ALL=(busybox systemd)
if [ "$ALL" = 1 ]; then
    # One run per bootloader and guest, each a child process with its own
    # build, nginx and count; the last line sums them.
    { [ -z "$BOOT" ] && [ "$SUITE" = abupdate ]; } || usage
    rest=() skip=0
    for a in "${ARGS[@]}"; do
        if [ "$skip" = 1 ]; then skip=0; continue; fi
        case "$a" in --all|--boot=*|--guest=*) ;; --boot|--guest) skip=1 ;; *) rest+=("$a") ;; esac
    done
    p_all=0 f_all=0 rc_all=0
    for b in "${BOOTS[@]}"; do
        for g in "${GUESTS_ALL[@]}"; do
            [ "$g" = busybox ] || [ "$FIRMWARE" = ovmf ] || continue
            "$0" "${rest[@]}" --boot "$b" --guest "$g" --list 2>/dev/null | grep -q . || continue
            echo "vm-test: ===== $FIRMWARE / $b / $g"
            out="$W/all-$FIRMWARE-$b-$g.out"
            set +e; "$0" "${rest[@]}" --boot "$b" --guest "$g" | tee "$out"; rc=${PIPESTATUS[0]}; set -e
            [ "$LIST" = 1 ] && continue
            [ "$rc" = 0 ] || rc_all=1
            read -r p _ f _ < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1) || { p=0 f=1; }
            p_all=$((p_all + p)) f_all=$((f_all + f))
        done
    done
    [ "$LIST" = 1 ] && exit 0
    echo "$p_all passed, $f_all failed"
    exit "$rc_all"
fi
BOOT="${BOOT:-${BOOTS[0]}}"
in_boots=0; for b in "${BOOTS[@]}"; do [ "$b" = "$BOOT" ] && in_boots=1; done
[ "$in_boots" = 1 ] || { echo "vm-test: --boot $BOOT does not run on --firmware $FIRMWARE (${BOOTS[*]})" >&2; exit 2; }
case "$GUEST" in busybox|systemd) ;; *) echo "vm-test: no guest '$GUEST' (busybox, systemd)" >&2; exit 2 ;; esac
if [ "$GUEST" = systemd ] && [ "$FIRMWARE" != ovmf ]; then
    echo "vm-test: the systemd guest runs on --firmware ovmf" >&2; exit 2
fi
if [ "$SUITE" = grub-selftest ]; then
    { [ "$BOOT" = grub ] && [ "$GUEST" = busybox ]; } || { echo "vm-test: --grub-selftest is GRUB on BIOS with the busybox guest" >&2; exit 2; }
    SCENARIO_DIR="$REPO/scripts/vm/selftest"
else
    case "$BOOT" in
        grub) SCENARIO_DIR="$REPO/scripts/vm/scenarios" ;;
        *) SCENARIO_DIR="$REPO/scripts/vm/$BOOT" ;;
    esac
fi
BUILD="$W/build/$SUITE-$FIRMWARE-$BOOT-$GUEST"
DISK="$W/disk.img"
VARS="$W/vars.fd"
LOGS="$W/logs"

# shellcheck source=scripts/vm/lib/common.sh
. "$REPO/scripts/vm/lib/common.sh"     # messages, layout, the EXIT trap
# shellcheck source=scripts/vm/lib/host.sh
. "$REPO/scripts/vm/lib/host.sh"       # packages, kernel, abupdate binaries
# shellcheck source=scripts/vm/lib/disk.sh
. "$REPO/scripts/vm/lib/disk.sh"       # initramfs, slot images, releases, factory disk
# shellcheck source=scripts/vm/lib/server.sh
. "$REPO/scripts/vm/lib/server.sh"     # nginx, publish
# shellcheck source=scripts/vm/lib/qemu.sh
. "$REPO/scripts/vm/lib/qemu.sh"       # one boot, serial log, power cuts
# shellcheck source=scripts/vm/lib/guestdisk.sh
. "$REPO/scripts/vm/lib/guestdisk.sh"  # grubenv, state.json, slots read on the host
# shellcheck source=scripts/vm/lib/assert.sh
. "$REPO/scripts/vm/lib/assert.sh"     # the checks
# shellcheck source=scripts/vm/lib/cuts.sh
. "$REPO/scripts/vm/lib/cuts.sh"       # a power cut at each point, from one saved disk
# shellcheck source=scripts/vm/lib/scenario.sh
. "$REPO/scripts/vm/lib/scenario.sh"   # selection, checkpoints, the count

if [ "$LIST" = 1 ]; then list_scenarios; exit 0; fi
if [ ${#WANT[@]} -eq 0 ]; then
    mapfile -t SELECTED < <(scenario_ids)
else
    for n in "${WANT[@]}"; do id="$(resolve_scenario "$n")" || exit 2; SELECTED+=("$id"); done
fi
[ ${#SELECTED[@]} -gt 0 ] || die "no scenarios in $SCENARIO_DIR"
RELEASES="$(suite_releases "${SELECTED[@]}")"

preflight() {
    say "=== preflight: throw-away boot (-snapshot) of the factory image, no abupdate"
    boot_vm preflight probe "" 0 1
    grep -q 'ABTEST: end' "$LOG.txt" || { show_log; die "preflight boot failed (see $LOG)"; }
    grep -q 'ABTEST: probe http ok' "$LOG.txt" || { show_log; die "guest cannot reach nginx at 10.0.2.2:$PORT"; }
    say "  preflight ok: $FIRMWARE/$BOOT -> kernel -> initramfs -> slot A init ($GUEST) -> HTTP to the host in $(ms2s "$LAST_MS") s"
}

main() {
    local t_start; t_start=$(date +%s)
    COUNTING=1
    qemu_stale_cleanup
    server_stale_cleanup
    disk_stale_cleanup "$DISK" "$BUILD/factory.img"
    ensure_packages
    ensure_kernel
    ensure_binary
    say "abupdate binary: $BIN"
    say "variant: firmware $FIRMWARE, bootloader $BOOT, guest $GUEST; kernel: $KVER; work dir: $W"
    pick_port "$(cat "$BUILD/port" 2>/dev/null || true)"
    ensure_build
    echo "$PORT" > "$BUILD/port"
    make_plan
    say "scenarios: ${PLAN[*]}"
    rm -rf "$LOGS"; mkdir -p "$LOGS"
    factory_restore
    say "disk image: $DISK (${DISK_MB} MiB, GPT: $P1_NAME, boot, rootfs-a, rootfs-b, data)${FACTORY_VARS:+; NVRAM: $VARS}"
    start_nginx
    publish_nothing
    choose_accel
    preflight
    BOOT_MS=()   # the per-boot statistics cover the scenario boots only
    run_plan
    boot_stats
    say "total run $(( $(date +%s) - t_start )) s"
    summary
    [ "$FAILED" = 0 ] && [ "$PASSED" = ${#PLAN[@]} ]
}

main
