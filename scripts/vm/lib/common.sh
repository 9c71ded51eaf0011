# Sourced by scripts/vm-test.sh: messages, time, the disk layout every other
# file agrees on, and the one EXIT trap (each lib registers its own cleanup,
# so an interrupted run leaves no qemu, nginx, loop device or mount behind).

say() { printf 'vm-test: %s\n' "$*"; }
die() { printf 'vm-test: ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
ms2s() { printf '%d.%01d' $(( $1 / 1000 )) $(( ($1 % 1000) / 100 )); }

COMPATIBLE=abupdate-vmtest
# Disk layout (MiB), per variant.  Partition 1 is the BIOS boot partition
# (bios) or the ESP (ovmf: vfat, the kernels or systemd-boot, its entries);
# the partition numbers stay the same for every variant (/dev/vda3, vda4
# the slots, vda5 the data partition).  Slot images are smaller than their
# partitions on purpose; the data partition holds state.json and the
# (resumable) download of a whole payload, and for the systemd guest all of
# /var (journal included).
case "${FIRMWARE:-bios}" in
    ovmf) P1_MB=64 P1_NAME=esp ;;
    *) P1_MB=1 P1_NAME=bios ;;
esac
case "${GUEST:-busybox}" in
    systemd) BOOT_MB=16 SLOT_MB=192 DATA_MB=256 IMG_MB=160 FILLER_MB=8 ;;
    *) BOOT_MB=64 SLOT_MB=64 DATA_MB=128 IMG_MB=48 FILLER_MB=24 ;;
esac
MIB=1048576
P1_OFF=$((1 * MIB))
BOOT_OFF=$((P1_OFF + P1_MB * MIB))
A_OFF=$((BOOT_OFF + BOOT_MB * MIB))
B_OFF=$((A_OFF + SLOT_MB * MIB))
DATA_OFF=$((B_OFF + SLOT_MB * MIB))
DISK_MB=$(( (DATA_OFF / MIB) + DATA_MB + 1 ))
slot_off() { # SLOT -> byte offset of its partition
    case "$1" in A) echo "$A_OFF" ;; B) echo "$B_OFF" ;; *) die "no slot '$1'" ;; esac
}

# on_exit FUNC: run FUNC (with errexit off) when the script ends, newest first.
EXIT_HOOKS=()
on_exit() { EXIT_HOOKS=("$1" "${EXIT_HOOKS[@]}"); }
run_exit_hooks() {
    local rc=$? h
    set +e
    for h in "${EXIT_HOOKS[@]}"; do "$h" "$rc"; done
    exit "$rc"
}
trap run_exit_hooks EXIT
trap 'exit 130' INT TERM
