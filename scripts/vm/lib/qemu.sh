# Sourced by scripts/vm-test.sh: booting the guest.  Every boot is one qemu
# process (-no-reboot: a guest reboot or power-off ends it) whose serial
# console goes to $LOGS/NN-name.log (and, without CRs, NN-name.log.txt).
# Test controls reach the guest through fw_cfg (opt/abtest/mode), never
# through its disks.
#
# In: W, DISK, VARS, LOGS, FIRMWARE.  Out (per boot): LOG, ENDED, LAST_MS,
# PRE_ENV (the bootloader's state on the host before the boot: boot_state).

# The systemd guest's boots (a Debian userspace; a 160 MiB install) take 2-4
# times as long as the busybox guest's under TCG: 370 s for an install on a
# loaded 2-core host.
case "${GUEST:-busybox}" in systemd) BOOT_TIMEOUT_DEFAULT=900 ;; *) BOOT_TIMEOUT_DEFAULT=300 ;; esac
BOOT_TIMEOUT="${ABUPDATE_VM_BOOT_TIMEOUT:-$BOOT_TIMEOUT_DEFAULT}"
ACCEL_WANT="${ABUPDATE_VM_ACCEL:-auto}"
THROTTLE="${ABUPDATE_VM_THROTTLE:-16777216}"
ACCEL="" QEMU_PID=""
qemu_cleanup() { if [ -n "$QEMU_PID" ]; then kill -9 "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; fi; }
on_exit qemu_cleanup

qemu_stale_cleanup() {
    if [ -f "$W/qemu.pid" ]; then
        local q; q="$(cat "$W/qemu.pid" 2>/dev/null || true)"
        if [ -n "$q" ] && grep -qF "$DISK" "/proc/$q/cmdline" 2>/dev/null; then kill -9 "$q" || true; fi
        rm -f "$W/qemu.pid"
    fi
}

# What the firmware adds to the command line: nothing for SeaBIOS (qemu's
# default); for UEFI the OVMF code (read-only) and the disk's own writable
# copy of OVMF_VARS (its NVRAM: BootOrder, BootNext, Boot####) as two pflash
# drives.  A throw-away boot (-snapshot) gets a throw-away copy of the NVRAM.
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
firmware_args() { # FIRMWARE SNAPSHOT
    case "$1" in
        bios) ;;
        ovmf)
            local vars="$VARS"
            if [ "$2" = 1 ]; then vars="$W/vars-snapshot.fd"; cp "$VARS" "$vars"; fi
            QARGS+=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
                    -drive "if=pflash,format=raw,unit=1,file=$vars") ;;
        *) die "FIRMWARE=$1: no such firmware variant (see scripts/vm/README.md)" ;;
    esac
}

qemu_args() { # MODE LOG SNAPSHOT
    QARGS=(qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot
        -machine pc -m 512 -smp 1 -pidfile "$W/qemu.pid")
    if [ "$ACCEL" = kvm ]; then QARGS+=(-accel kvm -cpu host); else QARGS+=(-accel tcg -cpu max); fi
    firmware_args "$FIRMWARE" "$3"
    QARGS+=(-serial "file:$2"
        -drive "file=$DISK,format=raw,if=virtio,cache=writeback,throttling.bps-write=$THROTTLE"
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=
        -fw_cfg "name=opt/abtest/mode,string=$1")
    if [ "$3" = 1 ]; then QARGS+=(-snapshot); fi
}

# BOOT_PREFIX (set per scenario) starts every log name: NN-s3-trial-v3.log.
BOOTNO=0 BOOT_MS=() LOG="" ENDED="" LAST_MS=0 PRE_ENV=""
# boot_vm NAME MODE [KILL_REGEX KILL_DELAY_MS [SNAPSHOT]]
# Runs one boot to its end (guest reboot/power-off ends qemu), or kills qemu
# (SIGKILL: a power cut) KILL_DELAY_MS after KILL_REGEX shows up in the serial
# log.  MODE is the guest's (normal, probe, cut-at-reboot, cut-at:POINT).
boot_vm() {
    local name="${BOOT_PREFIX:-}$1" mode="$2" kre="${3:-}" kdelay="${4:-0}" snap="${5:-0}"
    BOOTNO=$((BOOTNO + 1))
    mkdir -p "$LOGS"
    LOG="$LOGS/$(printf '%02d' "$BOOTNO")-$name.log"
    : > "$LOG"
    PRE_ENV="$(boot_state)"
    qemu_args "$mode" "$LOG" "$snap"
    local t0 t armed="" rc=0
    t0=$(now_ms)
    "${QARGS[@]}" > "$LOG.qemu" 2>&1 &
    QEMU_PID=$!
    ENDED=exit
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        t=$(now_ms)
        if [ $((t - t0)) -gt $((BOOT_TIMEOUT * 1000)) ]; then
            kill -9 "$QEMU_PID" 2>/dev/null || true; ENDED=timeout; break
        fi
        if [ -n "$kre" ]; then
            if [ -z "$armed" ] && grep -qE "$kre" "$LOG"; then armed=$t; fi
            if [ -n "$armed" ] && [ $((t - armed)) -ge "$kdelay" ]; then
                kill -9 "$QEMU_PID" 2>/dev/null || true; ENDED=killed; break
            fi
        fi
        sleep 0.05
    done
    wait "$QEMU_PID" 2>/dev/null || rc=$?
    QEMU_PID=""
    LAST_MS=$(( $(now_ms) - t0 ))
    BOOT_MS+=("$LAST_MS")
    # Without CRs and terminal escapes (OVMF draws its screen with them).
    tr -d '\r' < "$LOG" | sed 's/\x1b\[[0-9;?=]*[a-zA-Z]//g' > "$LOG.txt"
    if [ "$ENDED" = exit ] && [ "$rc" -ne 0 ]; then ENDED="qemu-error($rc)"; fi
    say "  boot $BOOTNO ($name, mode=$mode): $(ms2s "$LAST_MS") s, $ENDED$( [ "$ENDED" = killed ] && echo " ${kdelay} ms after /$kre/")"
    if [ "$ENDED" = timeout ] || [[ "$ENDED" == qemu-error* ]]; then
        sed 's/^/    | /' "$LOG.qemu" | tail -n 5
        tail -n 15 "$LOG.txt" | sed 's/^/    | /'
    fi
}

# Decide KVM vs TCG: /dev/kvm may exist but be unable to boot a stock kernel
# (nested hypervisors); a throw-away boot (-snapshot) tells, cached per host kernel.
choose_accel() {
    case "$ACCEL_WANT" in
        kvm|tcg) ACCEL="$ACCEL_WANT"; return ;;
        auto) ;;
        *) die "ABUPDATE_VM_ACCEL must be auto, kvm or tcg" ;;
    esac
    local cache="$W/cache/accel-$(uname -r)-$KVER"
    if [ -s "$cache" ]; then ACCEL="$(cat "$cache")"; say "accelerator: $ACCEL (cached)"; return; fi
    ACCEL=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
        ACCEL=kvm
        local saved="$BOOT_TIMEOUT"; BOOT_TIMEOUT=40
        boot_vm kvm-probe probe "" 0 1
        BOOT_TIMEOUT="$saved"
        if ! grep -q 'ABTEST: end' "$LOG.txt"; then
            say "KVM cannot boot this kernel here; using TCG"
            ACCEL=tcg
        fi
    fi
    mkdir -p "$W/cache"; echo "$ACCEL" > "$cache"
    say "accelerator: $ACCEL"
}

boot_stats() { # one line over the boots of BOOT_MS
    local total=0 n=${#BOOT_MS[@]} mn=999999999 mx=0 ms
    [ "$n" -gt 0 ] || return 0
    for ms in "${BOOT_MS[@]}"; do
        total=$((total + ms)); [ "$ms" -lt "$mn" ] && mn=$ms; [ "$ms" -gt "$mx" ] && mx=$ms
    done
    say "boots: $n ($ACCEL), seconds per boot: min $(ms2s "$mn"), avg $(ms2s $((total / n))), max $(ms2s "$mx")"
}

# The guest's uptime printed on the first marker line matching REGEX.
guest_uptime() { grep -m1 -E "$1" "$LOG.txt" | sed -n 's/.*uptime=\([0-9.]*\).*/\1/p'; }

# The guest-side duration of the last boot's install, update start -> reboot
# requested: what an install costs under this machine's TCG and load.
note_install_time() {
    local a b ms
    a="$(guest_uptime 'ABTEST: update start')"; b="$(guest_uptime 'ABTEST: reboot requested')"
    if [ -n "$a" ] && [ -n "$b" ]; then
        ms="$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%d", (b - a) * 1000 }')"
        say "  install took $(ms2s "$ms") s in the guest (update start -> reboot)"
    fi
}
