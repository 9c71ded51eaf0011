#!/usr/bin/env bash
# End-to-end test of abupdate on a real bootloader: GRUB (i386-pc) in qemu,
# Debian's kernel, a shared busybox initramfs, two ext4 root slots made of
# busybox-static + the static musl abupdate, a data partition, releases built
# with `abupdate pack` and served by nginx to the guest (10.0.2.2 = host
# loopback under qemu user networking).
#
#   scripts/vm-test.sh                  all scenarios (needs root: apt, loop, mount)
#   scripts/vm-test.sh --grub-selftest  GRUB script + harness only (no abupdate)
#
# Environment:
#   ABUPDATE_VM_DIR           work dir (default target/vm); caches kernel and builds
#   ABUPDATE_BIN              use this static abupdate instead of building it
#   ABUPDATE_BIN_FAILPOINTS   the same built with --features failpoints (the
#                             releases of scenario 7, cut at named steps)
#   ABUPDATE_VM_ACCEL         auto (default) | kvm | tcg
#   ABUPDATE_VM_BOOT_TIMEOUT  seconds per boot (default 150)
#   ABUPDATE_VM_THROTTLE      guest disk write limit in bytes/s (default 16 MiB/s)
#   ABUPDATE_VM_KEEP_GOING    1 = run later scenarios after a failed one
#
# Every boot is one qemu process (-no-reboot: a guest reboot or power-off ends
# it); its serial console goes to target/vm/logs/NN-name.log.  Assertions use
# the "ABTEST:"/"ABINIT:" marker lines the guest prints, GRUB's own
# "abupdate-grub:" lines, and grubenv / state.json read back from the disk
# image on the host with debugfs, which (like GRUB) reads the file system
# without replaying its journal.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
W="${ABUPDATE_VM_DIR:-$REPO/target/vm}"
mkdir -p "$W"
W="$(cd "$W" && pwd)"
BOOT_TIMEOUT="${ABUPDATE_VM_BOOT_TIMEOUT:-150}"
ACCEL_WANT="${ABUPDATE_VM_ACCEL:-auto}"
THROTTLE="${ABUPDATE_VM_THROTTLE:-16777216}"
KEEP_GOING="${ABUPDATE_VM_KEEP_GOING:-0}"
BIN="${ABUPDATE_BIN:-}"
BIN_FP="${ABUPDATE_BIN_FAILPOINTS:-}"
MODE=full
case "${1:-}" in
    "") ;;
    --grub-selftest) MODE=selftest ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--grub-selftest]" >&2; exit 2 ;;
esac

COMPATIBLE=abupdate-vmtest
# Disk layout (MiB).  Slot images are smaller than their partitions on purpose;
# /data holds state.json and the (resumable) download of a whole payload.
BIOS_MB=1 BOOT_MB=64 SLOT_MB=64 DATA_MB=128 IMG_MB=48 FILLER_MB=24
MIB=1048576
BIOS_OFF=$((1 * MIB))
BOOT_OFF=$((BIOS_OFF + BIOS_MB * MIB))
A_OFF=$((BOOT_OFF + BOOT_MB * MIB))
B_OFF=$((A_OFF + SLOT_MB * MIB))
DATA_OFF=$((B_OFF + SLOT_MB * MIB))
DISK_MB=$(( (DATA_OFF / MIB) + DATA_MB + 1 ))
DISK="$W/disk.img"
LOGS="$W/logs"

T_START=$(date +%s)
say() { printf 'vm-test: %s\n' "$*"; }
die() { printf 'vm-test: ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
ms2s() { printf '%d.%01d' $(( $1 / 1000 )) $(( ($1 % 1000) / 100 )); }

# ---------------------------------------------------------------- cleanup
QEMU_PID="" NGINX_PID="" LOOPDEV="" MNT="$W/mnt" POLICY_RC_D="" PASSED=0
SUMMARY_DONE=0
cleanup() {
    local rc=$?
    set +e
    if [ "$rc" -ne 0 ] && [ "$SUMMARY_DONE" = 0 ] && [ "$MODE" = full ]; then
        echo "$PASSED passed, $((6 - PASSED)) failed"
    fi
    if [ -n "$QEMU_PID" ]; then kill -9 "$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null; fi
    if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; fi
    if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT"; fi
    if [ -n "$LOOPDEV" ]; then losetup -d "$LOOPDEV" 2>/dev/null; fi
    if [ -n "$POLICY_RC_D" ]; then rm -f "$POLICY_RC_D"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted earlier run (only ours: by path).
stale_cleanup() {
    if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || true; fi
    if [ -f "$DISK" ]; then
        losetup -j "$DISK" 2>/dev/null | cut -d: -f1 | while read -r l; do losetup -d "$l" || true; done
    fi
    if [ -f "$W/qemu.pid" ]; then
        local q; q="$(cat "$W/qemu.pid" 2>/dev/null || true)"
        if [ -n "$q" ] && grep -qF "$DISK" "/proc/$q/cmdline" 2>/dev/null; then kill -9 "$q" || true; fi
        rm -f "$W/qemu.pid"
    fi
    if [ -f "$W/nginx/nginx.pid" ]; then
        local p; p="$(cat "$W/nginx/nginx.pid" 2>/dev/null || true)"
        if [ -n "$p" ] && grep -qF "$W/nginx/nginx.conf" "/proc/$p/cmdline" 2>/dev/null; then kill "$p" || true; fi
        rm -f "$W/nginx/nginx.pid"
    fi
}

# ---------------------------------------------------------------- host tools
APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -q >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
}
ensure_packages() {
    [ "$(id -u)" = 0 ] || die "must run as root (apt-get, loop devices, mount)"
    local pkgs=(qemu-system-x86 grub-pc-bin grub2-common fdisk busybox-static nginx kmod cpio
                e2fsprogs zstd gzip util-linux)
    [ -n "$BIN" ] || pkgs+=(musl-tools)
    local missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt_update_once
        say "installing ${missing[*]}"
        # Package scripts must not start the distribution's nginx on port 80.
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            POLICY_RC_D=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' > "$POLICY_RC_D"; chmod +x "$POLICY_RC_D"
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
        if [ -n "$POLICY_RC_D" ]; then rm -f "$POLICY_RC_D"; POLICY_RC_D=""; fi
    fi
    local t
    for t in qemu-system-x86_64 grub-install grub-editenv sfdisk mkfs.ext4 debugfs nginx depmod modprobe cpio; do
        command -v "$t" >/dev/null || die "$t not found after installing packages"
    done
}

# Debian's kernel, unpacked into the work dir (never installed on the host:
# the host's /boot and bootloader stay untouched).
KROOT="$W/cache/kernel" KVER=""
ensure_kernel() {
    if [ ! -f "$KROOT/.done" ]; then
        rm -rf "$KROOT"; mkdir -p "$KROOT" "$W/cache/deb"
        local pkg
        pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
        if [ -z "$pkg" ]; then
            apt_update_once
            pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
        fi
        [ -n "$pkg" ] || die "cannot resolve linux-image-amd64"
        say "downloading $pkg (unpacked into $KROOT, not installed)"
        rm -f "$W/cache/deb/"*.deb
        ( cd "$W/cache/deb" && apt-get download -q "$pkg" >/dev/null 2>&1 ) \
            || { apt_update_once; ( cd "$W/cache/deb" && apt-get download -q "$pkg" >/dev/null 2>&1 ); } \
            || die "apt-get download $pkg failed"
        dpkg-deb -x "$W/cache/deb/"*.deb "$KROOT/root"
        KVER="$(ls "$KROOT/root/lib/modules")"
        depmod -b "$KROOT/root" "$KVER"
        cp "$KROOT/root/boot/vmlinuz-$KVER" "$KROOT/vmlinuz"
        rm -f "$W/cache/deb/"*.deb
        touch "$KROOT/.done"
    fi
    KVER="$(ls "$KROOT/root/lib/modules")"
}

ensure_binary() {
    if [ "$MODE" = selftest ]; then
        # The harness self-test never runs abupdate; a stub fills its place.
        BIN="$W/build/abupdate-stub"
        mkdir -p "$W/build"
        printf '#!/bin/sh\necho "abupdate stub: $*"\nexit 0\n' > "$BIN"; chmod +x "$BIN"
        return
    fi
    if [ -z "$BIN" ]; then
        command -v cargo >/dev/null || die "cargo not found (install Rust, or set ABUPDATE_BIN)"
        if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
            say "rustup target add x86_64-unknown-linux-musl"
            rustup target add x86_64-unknown-linux-musl >/dev/null
        fi
        say "cargo build --release --target x86_64-unknown-linux-musl"
        ( cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl 2>&1 | tail -n 3 ) \
            || die "cargo build failed"
        BIN="$REPO/target/x86_64-unknown-linux-musl/release/abupdate"
    fi
    if [ -z "$BIN_FP" ]; then
        # Scenario 7's releases: the same code with failpoints compiled in
        # (inert unless ABUPDATE_FAILPOINT is set), in its own target dir so
        # the release binary above is never one with failpoints.
        say "cargo build --release --target x86_64-unknown-linux-musl --features failpoints"
        ( cd "$REPO" && cargo build --release --target x86_64-unknown-linux-musl --features failpoints \
            --target-dir "$REPO/target/vm-failpoints" 2>&1 | tail -n 3 ) || die "cargo build (failpoints) failed"
        BIN_FP="$REPO/target/vm-failpoints/x86_64-unknown-linux-musl/release/abupdate"
    fi
    [ -x "$BIN_FP" ] || die "abupdate failpoints binary $BIN_FP missing"
    [ -x "$BIN" ] || die "abupdate binary $BIN missing"
    local deps; deps="$(LC_ALL=C ldd "$BIN" 2>&1 || true)"
    if grep -q '=>' <<<"$deps"; then die "$BIN is dynamically linked; the slots have no libc"; fi
}

# ---------------------------------------------------------------- builds
MODULES=(virtio_pci virtio_blk ext4 virtio_net qemu_fw_cfg)
build_initramfs() {
    local d="$W/build/initramfs"
    rm -rf "$d"; mkdir -p "$d"/{bin,dev,proc,sys,newroot,lib/modules}
    cp /bin/busybox "$d/bin/busybox"
    local a
    for a in sh mount insmod sleep grep sed cat tr switch_root findfs mkdir echo; do ln -s busybox "$d/bin/$a"; done
    mknod -m 600 "$d/dev/console" c 5 1
    : > "$d/modules.list"
    local m ko
    for m in "${MODULES[@]}"; do
        modprobe -d "$KROOT/root" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$d/lib/modules/"
        basename "$ko" >> "$d/modules.list"
    done
    install -m 0755 "$REPO/scripts/vm/initramfs-init" "$d/init"
    ( cd "$d" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 ) > "$W/build/initrd.img"
}

gen_keys() {
    mkdir -p "$W/keys"
    if [ ! -s "$W/keys/test.key" ] || [ ! -s "$W/keys/test.pub" ]; then
        rm -f "$W/keys/test.key" "$W/keys/test.pub"
        "$BIN" keygen --secret "$W/keys/test.key" --public "$W/keys/test.pub" >/dev/null \
            || die "abupdate keygen failed"
    fi
}

guest_config() {
    cat <<EOF
# abupdate config of the VM test slots (scripts/vm-test.sh)
[update]
url = "http://10.0.2.2:$PORT/release.json"
compatible = "$COMPATIBLE"
state_dir = "/data/abupdate"
keys_dirs = ["/etc/abupdate/keys"]

[system]
cmdline = "/proc/cmdline"
os_release = "/etc/os-release"
machine_id = "/data/machine-id"
reboot = ["/sbin/abupdate-reboot"]

[bootloader]
kind = "grub"
grubenv = "/boot/grub/grubenv"

[slots.A]
rootfs = "/dev/vda3"

[slots.B]
rootfs = "/dev/vda4"

[health]
dir = "/etc/abupdate/health.d"
timeout = "8s"
EOF
}

# build_rootfs VERSION FLAVOR -> $W/build/rootfs-VERSION.img
# FLAVOR: good | health-fails | panics
build_rootfs() {
    local v="$1" flavor="$2" s="$W/build/stage-$1" a
    rm -rf "$s"
    mkdir -p "$s"/{bin,sbin,etc,proc,sys,dev,run,tmp,boot,data,root,usr/bin,usr/sbin,usr/share/abtest}
    cp /bin/busybox "$s/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || [ -e "$s/bin/$a" ] || ln -s busybox "$s/bin/$a"
    done
    mkdir -p "$s/etc/abupdate"
    guest_config > "$s/etc/abupdate/config.toml"
    "$REPO/scripts/install.sh" "$s" "${ROOTFS_BIN:-$BIN}" >/dev/null
    cp "$W/keys/test.pub" "$s/etc/abupdate/keys/test.pub"
    cat > "$s/etc/os-release" <<EOF
NAME="abupdate VM test"
ID=abupdate-vmtest
VERSION_ID=$v
IMAGE_VERSION=$v
EOF
    echo "abupdate-vmtest" > "$s/etc/hostname"
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$s/etc/passwd"
    printf 'root:x:0:\n' > "$s/etc/group"
    install -m 0755 "$REPO/scripts/vm/slot-init" "$s/sbin/init"
    install -m 0755 "$REPO/scripts/vm/abupdate-reboot" "$s/sbin/abupdate-reboot"
    cat > "$s/etc/abupdate/health.d/10-data-mounted" <<'EOF'
#!/bin/sh
# The persistent data partition must be mounted.
grep -q ' /data ' /proc/mounts
EOF
    cat > "$s/etc/abupdate/health.d/20-network" <<'EOF'
#!/bin/sh
# The uplink must be configured.
ip -4 addr show dev eth0 | grep -q 'inet '
EOF
    case "$flavor" in
        good) ;;
        health-fails)
            cat > "$s/etc/abupdate/health.d/50-release-broken" <<EOF
#!/bin/sh
echo "health check: release $v is broken on purpose" >&2
exit 1
EOF
            ;;
        panics) mkdir -p "$s/etc/abtest"; touch "$s/etc/abtest/panic" ;;
        *) die "unknown flavor $flavor" ;;
    esac
    chmod 0755 "$s"/etc/abupdate/health.d/*
    # Distinct, incompressible content per version: installs move real data
    # (and the power-cut check can tell old bytes from new ones).
    head -c $((FILLER_MB * MIB)) /dev/urandom > "$s/usr/share/abtest/filler.bin"
    local img="$W/build/rootfs-$v.img"
    rm -f "$img"; truncate -s "${IMG_MB}M" "$img"
    mkfs.ext4 -q -F -b 4096 -L "rootfs-$v" -d "$s" "$img" >/dev/null || die "mkfs.ext4 for rootfs $v failed"
}

pack_release() { # VERSION
    local v="$1" out="$W/releases/$1"
    rm -rf "$out"; mkdir -p "$W/releases"
    "$BIN" pack --secret "$W/keys/test.key" --compatible "$COMPATIBLE" --version "$v" \
        --image "rootfs=$W/build/rootfs-$v.img" --out "$out" > "$W/build/pack-$v.log" 2>&1 \
        || { cat "$W/build/pack-$v.log" >&2; die "abupdate pack $v failed"; }
    [ -s "$out/release.json" ] && [ -s "$out/release.json.minisig" ] || die "pack $v: no release.json(.minisig) in $out"
}

publish() { # VERSION: what the update server offers from now on
    rm -rf "$W/www"; mkdir -p "$W/www"
    cp -a "$W/releases/$1/." "$W/www/"
    say "server now offers release $1"
}

build_disk() {
    rm -f "$DISK"; truncate -s "${DISK_MB}M" "$DISK"
    local s=$((MIB / 512))
    sfdisk -q "$DISK" <<EOF || die "sfdisk failed"
label: gpt
start=$((BIOS_OFF / 512)), size=$((BIOS_MB * s)), type=21686148-6449-6E6F-744E-656564454649, name="bios"
start=$((BOOT_OFF / 512)), size=$((BOOT_MB * s)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="boot"
start=$((A_OFF / 512)), size=$((SLOT_MB * s)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="rootfs-a"
start=$((B_OFF / 512)), size=$((SLOT_MB * s)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="rootfs-b"
start=$((DATA_OFF / 512)), size=$((DATA_MB * s)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data"
EOF
    # /boot: kernel, shared initramfs, the GRUB script we ship, the board file,
    # and grubenv made by grub-editenv (1024 bytes, not sparse; no inline_data).
    local b="$W/build/bootfs"
    rm -rf "$b"; mkdir -p "$b/grub"
    cp "$KROOT/vmlinuz" "$b/vmlinuz"
    cp "$W/build/initrd.img" "$b/initrd.img"
    cp "$REPO/scripts/grub/grub.cfg" "$b/grub/grub.cfg"
    cat > "$b/grub/abupdate-board.cfg" <<'EOF'
# VM test board: serial console, reboot on panic (qemu -no-reboot then exits).
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set ab_cmdline="ro console=ttyS0,115200 panic=1 quiet"
EOF
    grub-editenv "$b/grub/grubenv" create
    grub-editenv "$b/grub/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
    mkfs.ext4 -q -F -b 4096 -O ^inline_data -L boot -d "$b" -E offset="$BOOT_OFF" "$DISK" "${BOOT_MB}M" >/dev/null \
        || die "mkfs /boot failed"
    mkdir -p "$W/build/datafs/abupdate"
    mkfs.ext4 -q -F -b 4096 -L data -d "$W/build/datafs" -E offset="$DATA_OFF" "$DISK" "${DATA_MB}M" >/dev/null \
        || die "mkfs /data failed"
    # Factory state: release 1 in slot A, slot B empty.
    dd if="$W/build/rootfs-1.0.img" of="$DISK" bs=1M seek=$((A_OFF / MIB)) conv=notrunc status=none
    # GRUB into the MBR gap + BIOS boot partition, modules into /boot/grub.
    # Without udev nobody creates /dev/loopNpM: wait for the kernel's partition
    # scan in sysfs (ask again with partx if it does not come) and make our own
    # device node under the work dir.
    LOOPDEV="$(losetup --show -f -P "$DISK")"
    local n="${LOOPDEV#/dev/}" i ma mi
    for i in $(seq 30); do [ -e "/sys/block/$n/${n}p2/dev" ] && break; sleep 0.1; done
    [ -e "/sys/block/$n/${n}p2/dev" ] || partx -a "$LOOPDEV" 2>/dev/null || true
    for i in $(seq 30); do [ -e "/sys/block/$n/${n}p2/dev" ] && break; sleep 0.1; done
    [ -e "/sys/block/$n/${n}p2/dev" ] || die "no partitions on $LOOPDEV (loop partition scan unsupported?)"
    IFS=: read -r ma mi < "/sys/block/$n/${n}p2/dev"
    mkdir -p "$W/dev" "$MNT"
    rm -f "$W/dev/bootpart"; mknod "$W/dev/bootpart" b "$ma" "$mi"
    mount "$W/dev/bootpart" "$MNT"
    grub-install --target=i386-pc --boot-directory="$MNT" --modules="part_gpt ext2" \
        --no-floppy "$LOOPDEV" > "$W/build/grub-install.log" 2>&1 \
        || { cat "$W/build/grub-install.log" >&2; die "grub-install failed"; }
    cmp -s "$MNT/grub/grubenv" "$b/grub/grubenv" || die "grub-install changed grubenv"
    umount "$MNT"
    rm -f "$W/dev/bootpart"
    losetup -d "$LOOPDEV"; LOOPDEV=""
}

# ---------------------------------------------------------------- nginx
PORT=""
pick_port() {
    local p
    for p in $(seq 18080 18180); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORT=$p; return; fi
    done
    die "no free TCP port in 18080-18180"
}
start_nginx() {
    local n="$W/nginx"
    mkdir -p "$n/tmp" "$W/www"
    : > "$n/access.log"
    cat > "$n/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 64; }
http {
    access_log $n/access.log;
    client_body_temp_path $n/tmp/body;
    proxy_temp_path $n/tmp/proxy;
    fastcgi_temp_path $n/tmp/fastcgi;
    uwsgi_temp_path $n/tmp/uwsgi;
    scgi_temp_path $n/tmp/scgi;
    types { application/json json; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$PORT;
        root $W/www;
    }
}
EOF
    nginx -e "$n/error.log" -p "$n" -c "$n/nginx.conf" &
    NGINX_PID=$!
    local i
    for i in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then say "nginx serving $W/www on 127.0.0.1:$PORT (guest: 10.0.2.2:$PORT)"; return; fi
        kill -0 "$NGINX_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$n/error.log" >&2 || true
    die "nginx did not start"
}

# ---------------------------------------------------------------- qemu
ACCEL=""
qemu_args() { # MODE LOG SNAPSHOT
    QARGS=(qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot
        -machine pc -m 512 -smp 1 -pidfile "$W/qemu.pid")
    if [ "$ACCEL" = kvm ]; then QARGS+=(-accel kvm -cpu host); else QARGS+=(-accel tcg -cpu max); fi
    QARGS+=(-serial "file:$2"
        -drive "file=$DISK,format=raw,if=virtio,cache=writeback,throttling.bps-write=$THROTTLE"
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=
        -fw_cfg "name=opt/abtest/mode,string=$1")
    if [ "$3" = 1 ]; then QARGS+=(-snapshot); fi
}

BOOTNO=0 BOOT_MS=() LOG="" ENDED="" LAST_MS=0 PRE_ENV=""
# boot_vm NAME MODE [KILL_REGEX KILL_DELAY_MS [SNAPSHOT]]
# Runs one boot to its end (guest reboot/power-off ends qemu), or kills qemu
# (SIGKILL: a power cut) KILL_DELAY_MS after KILL_REGEX shows up in the serial log.
boot_vm() {
    local name="$1" mode="$2" kre="${3:-}" kdelay="${4:-0}" snap="${5:-0}"
    BOOTNO=$((BOOTNO + 1))
    mkdir -p "$LOGS"
    LOG="$LOGS/$(printf '%02d' "$BOOTNO")-$name.log"
    : > "$LOG"
    PRE_ENV="$(host_env_dump | tr -d '\0')"
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
    tr -d '\r' < "$LOG" > "$LOG.txt"
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
    echo "$ACCEL" > "$cache"
    say "accelerator: $ACCEL"
}

# ---------------------------------------------------------------- reading the disk
host_env_dump() { # grubenv as GRUB sees it (no journal replay)
    debugfs -R "cat /grub/grubenv" "$DISK?offset=$BOOT_OFF" 2>/dev/null || true
}
env_snapshot() {
    host_env_dump > "$W/grubenv.now"
    ENV_NOW="$(grep -E '^(ORDER|[AB]_(OK|TRY|LEFT))=' "$W/grubenv.now" | tr '\n' ' ')"
}
env_val() { sed -n "s/^$1=//p" "$W/grubenv.now"; }
state_json() { debugfs -R "cat /abupdate/state.json" "$DISK?offset=$DATA_OFF" 2>/dev/null || true; }
# state.json as the guest's next mount sees it: after a power cut the newest
# metadata may sit in the ext4 journal, which debugfs does not replay; replay
# it (and only it) on a copy of the data partition.
state_json_replayed() {
    local part="$W/data-replayed.img"
    dd if="$DISK" of="$part" bs=1M skip=$((DATA_OFF / MIB)) count="$DATA_MB" status=none
    e2fsck -E journal_only -p "$part" >/dev/null 2>&1 || true
    debugfs -R "cat /abupdate/state.json" "$part" 2>/dev/null || true
}

# In-place rewrite of grubenv on the host (one 1024-byte write at the file's
# block, like abupdate does): grub-editenv ARGS applied to a copy.
host_env_edit() {
    local tmp="$W/grubenv.edit" blk
    host_env_dump > "$tmp"
    [ "$(stat -c %s "$tmp")" = 1024 ] || die "grubenv on disk is not 1024 bytes"
    grub-editenv "$tmp" "$@"
    blk="$(debugfs -R "bmap /grub/grubenv 0" "$DISK?offset=$BOOT_OFF" 2>/dev/null)"
    [[ "$blk" =~ ^[0-9]+$ ]] || die "cannot locate grubenv's block"
    dd if="$tmp" of="$DISK" bs=1024 seek=$(( (BOOT_OFF + blk * 4096) / 1024 )) count=1 conv=notrunc status=none
}

# Percentage of the slot's bytes (1 MiB chunks that differ between the old and
# the new image) that already hold the new image.
written_pct() { # SLOT_OFF OLD_IMG NEW_IMG
    local off=$(($1 / MIB)) i n=0 done=0 o nw c
    for i in $(seq 0 $((IMG_MB - 1))); do
        o="$(dd if="$2" bs=1M skip="$i" count=1 status=none | md5sum)"
        nw="$(dd if="$3" bs=1M skip="$i" count=1 status=none | md5sum)"
        [ "$o" != "$nw" ] || continue
        n=$((n + 1))
        c="$(dd if="$DISK" bs=1M skip=$((off + i)) count=1 status=none | md5sum)"
        [ "$c" != "$nw" ] || done=$((done + 1))
    done
    [ "$n" -gt 0 ] || { echo 100; return; }
    echo $((done * 100 / n))
}
slot_holds() { # SLOT_OFF IMG: the slot's first IMG_MB MiB equal the image
    cmp -s -n $((IMG_MB * MIB)) <(dd if="$DISK" bs=1M skip=$(($1 / MIB)) count="$IMG_MB" status=none) "$2"
}

# ---------------------------------------------------------------- assertions
ERRS=0
bad() { say "  FAIL: $*"; ERRS=$((ERRS + 1)); }
ok() { say "  ok: $*"; }
expect_log() { # REGEX DESC
    if grep -qE "$1" "$LOG.txt"; then ok "$2"; else bad "$2 (no /$1/ in $(basename "$LOG"))"; show_log; fi
}
expect_no_log() { # REGEX DESC
    if grep -qE "$1" "$LOG.txt"; then bad "$2 (found: $(grep -E "$1" "$LOG.txt" | head -n 1))"; show_log; else ok "$2"; fi
}
SHOWN=""
show_log() {
    [ "$SHOWN" = "$LOG" ] && return; SHOWN="$LOG"
    say "  --- last lines of $(basename "$LOG"):"
    grep -vE '^\s*$' "$LOG.txt" | tail -n 25 | sed 's/^/    | /'
}
expect_ended() { # exit|killed
    if [ "$ENDED" = "$1" ]; then ok "qemu run ended by $1"; else bad "qemu run ended by $ENDED, expected $1"; show_log; fi
}
expect_env() { # VAR=VALUE ...: grubenv on disk after the boot
    env_snapshot
    local kv k v got fails=0
    for kv in "$@"; do
        k="${kv%%=*}" v="${kv#*=}"
        got="$(env_val "$k")"
        if [ "$got" != "$v" ]; then bad "grubenv $k is '$got', expected '$v'"; fails=1; fi
    done
    [ "$fails" = 1 ] || ok "grubenv: $*"
}
# The slot GRUB boots next: the first of ORDER with X_OK=1 (and its try free).
expect_primary() { # SLOT
    env_snapshot
    local s first=""
    for s in $(env_val ORDER); do
        if [ "$(env_val "${s}_OK")" = 1 ] && [ "$(env_val "${s}_TRY")" = 0 ]; then first="$s"; break; fi
    done
    if [ "$first" = "$1" ]; then ok "GRUB boots $1 next (ORDER=$(env_val ORDER), first OK slot with TRY=0)"
    else bad "GRUB would boot '${first:-none}' next, expected $1 ($ENV_NOW)"; fi
}
expect_env_valid() {
    host_env_dump > "$W/grubenv.check"
    if [ "$(stat -c %s "$W/grubenv.check")" = 1024 ] && grub-editenv "$W/grubenv.check" list >/dev/null 2>&1 \
        && head -n 1 "$W/grubenv.check" | grep -q '^# GRUB Environment Block'; then
        ok "grubenv is a valid 1024-byte env block (grub-editenv list)"
    else
        bad "grubenv on disk is not a valid env block"; od -c "$W/grubenv.check" | head -n 8
    fi
}
# GRUB booted SLOT with the env that was on disk before the boot, set its TRY
# flag before starting it (the guest sees X_TRY=1), and the slot's init reported
# VERSION.
expect_boot() { # SLOT VERSION [HOW [panics]]
    local slot="$1" ver="$2" how="${3:-normal}" panics="${4:-}" line k v want
    expect_log "abupdate-grub: booting slot $slot \($how\)" "GRUB chose slot $slot ($how)"
    line="$(grep 'abupdate-grub: env ' "$LOG.txt" | head -n 3 | tr '\n' ' ' || true)"
    if [ -n "$line" ]; then
        local mism=""
        for k in ORDER A_OK A_TRY B_OK B_TRY A_LEFT B_LEFT; do
            v="$(sed -n "s/.* $k=\[\([^]]*\)\].*/\1/p" <<<"$line")"
            want="$(sed -n "s/^$k=//p" <<<"$PRE_ENV")"
            case "$k" in ORDER) want="${want:-A B}" ;; *_OK|*_TRY) want="${want:-0}" ;; esac
            [ "$v" = "$want" ] || mism+=" $k: GRUB=[$v] disk=[$want]"
        done
        if [ -z "$mism" ]; then ok "GRUB saw exactly the env on disk before the boot"; else bad "GRUB's env differs from the disk:$mism"; fi
    else
        bad "no 'abupdate-grub: env' line"; show_log
    fi
    if [ -n "$ver" ]; then
        expect_log "ABTEST: boot slot=$slot version=$ver " "slot $slot runs release $ver"
        if [ -z "$panics" ]; then
            expect_log "ABTEST: grubenv-at-boot .*${slot}_TRY=1( |$)" "${slot}_TRY=1 set by GRUB before booting $slot"
        fi
    fi
}
healthy_boot_checks() { # SLOT VERSION: a boot with nothing to install
    expect_boot "$1" "$2"
    expect_log 'ABTEST: health rc=0' "abupdate health exit 0"
    expect_log 'ABTEST: update rc=0' "abupdate update exit 0 (nothing to install)"
    expect_no_log 'ABTEST: reboot requested' "no reboot requested"
    expect_ended exit
}
install_boot_checks() { # SLOT VERSION: a healthy boot that installs and reboots
    expect_boot "$1" "$2"
    expect_log 'ABTEST: health rc=0' "abupdate health exit 0"
    expect_log 'ABTEST: update start' "abupdate update started"
    expect_log 'ABTEST: reboot requested' "update ran the reboot command"
    expect_no_log 'ABTEST: update rc=' "update did not return (it rebooted)"
    expect_ended exit
}
guest_uptime() { # MARKER-REGEX -> uptime seconds printed with it
    grep -m1 -E "$1" "$LOG.txt" | sed -n 's/.*uptime=\([0-9.]*\).*/\1/p'
}
http_gets() { # PATH-REGEX: GETs of it in nginx's access log so far
    grep -cE "\"GET /$1 " "$W/nginx/access.log" || true
}

# ---------------------------------------------------------------- scenarios
FAILED=0 STOP=0
scenario() { # N TITLE FUNC
    local n="$1" title="$2" fn="$3" b0=$BOOTNO ms0=${#BOOT_MS[@]}
    if [ "$STOP" = 1 ]; then
        say "FAIL scenario $n: $title (not run: an earlier scenario failed)"
        FAILED=$((FAILED + 1)); return
    fi
    say "=== scenario $n: $title"
    ERRS=0
    "$fn" || bad "scenario function returned non-zero"
    local secs="" i
    for ((i = ms0; i < ${#BOOT_MS[@]}; i++)); do secs+="${secs:+, }$(ms2s "${BOOT_MS[$i]}")"; done
    if [ "$ERRS" = 0 ]; then
        say "PASS scenario $n: $title (boots $((b0 + 1))-$BOOTNO: ${secs} s)"
        PASSED=$((PASSED + 1))
    else
        say "FAIL scenario $n: $title ($ERRS failed checks; logs in $LOGS)"
        FAILED=$((FAILED + 1))
        [ "$KEEP_GOING" = 1 ] || STOP=1
    fi
}

preflight() {
    say "=== preflight: throw-away boot (-snapshot) of the factory image, no abupdate"
    boot_vm preflight probe "" 0 1
    grep -q 'ABTEST: end' "$LOG.txt" || { show_log; die "preflight boot failed (see $LOG)"; }
    grep -q 'ABTEST: probe http ok' "$LOG.txt" || { show_log; die "guest cannot reach nginx at 10.0.2.2:$PORT"; }
    say "  preflight ok: GRUB -> kernel -> initramfs -> slot A init -> HTTP to the host in $(ms2s "$LAST_MS") s"
}

s1() {
    publish 1.0
    boot_vm s1-v1 normal
    healthy_boot_checks A 1.0
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=0
}

INSTALL_MS=""
note_install_time() { # guest-side duration update start -> reboot requested
    local a b
    a="$(guest_uptime 'ABTEST: update start')"; b="$(guest_uptime 'ABTEST: reboot requested')"
    if [ -n "$a" ] && [ -n "$b" ]; then
        INSTALL_MS="$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%d", (b - a) * 1000 }')"
        say "  install took $(ms2s "$INSTALL_MS") s in the guest (update start -> reboot)"
    fi
}

s2() {
    publish 2.0
    boot_vm s2-install-v2 normal
    install_boot_checks A 1.0
    note_install_time
    expect_env ORDER="B A" B_OK=1 B_TRY=0 A_OK=1 A_TRY=0
    slot_holds "$B_OFF" "$W/build/rootfs-2.0.img" && ok "slot B holds release 2.0 byte for byte" \
        || bad "slot B does not hold release 2.0"

    boot_vm s2-trial-v2 normal
    healthy_boot_checks B 2.0
    expect_env ORDER="B A" B_OK=1 B_TRY=0

    boot_vm s2-next-boot normal
    healthy_boot_checks B 2.0
    expect_env ORDER="B A" B_OK=1 B_TRY=0
}

s3() {
    publish 3.0
    boot_vm s3-install-v3 normal
    install_boot_checks B 2.0
    note_install_time
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1

    boot_vm s3-trial-v3 normal
    expect_boot A 3.0
    expect_log 'ABTEST: health start' "health ran"
    expect_log 'release 3.0 is broken on purpose' "the failing health check ran"
    expect_no_log 'ABTEST: health rc=0' "health did not pass"
    expect_log 'ABTEST: reboot requested' "health rolled back and ran the reboot command"
    expect_no_log 'ABTEST: update start' "no update attempted after a failed verdict"
    expect_ended exit
    expect_env ORDER="B A" A_OK=0 A_TRY=0 B_OK=1

    local gets; gets="$(http_gets 'rootfs-3\.0[^ ]*')"
    boot_vm s3-back-on-v2 normal
    healthy_boot_checks B 2.0
    expect_no_log 'writing rootfs 3\.0' "v3 not written again"
    expect_env ORDER="B A" A_OK=0 B_OK=1 B_TRY=0
    if grep -q '3\.0' <<<"$(state_json)"; then ok "state.json records release 3.0"; else bad "state.json does not mention 3.0"; fi
    boot_vm s3-later-boot normal
    healthy_boot_checks B 2.0
    expect_env ORDER="B A" A_OK=0 B_OK=1 B_TRY=0
    if [ "$(http_gets 'rootfs-3\.0[^ ]*')" = "$gets" ]; then ok "v3's payload was not downloaded again on 2 later boots"
    else bad "v3's payload was downloaded again"; fi
}

s4() {
    publish 4.0
    boot_vm s4-install-v4 normal
    install_boot_checks B 2.0
    note_install_time
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1

    boot_vm s4-trial-v4 normal
    expect_boot A 4.0 normal panics
    expect_log 'ABTEST: init panics on purpose' "v4's init never comes up"
    expect_log 'Kernel panic' "kernel panicked"
    expect_no_log 'ABTEST: health' "no health verdict from v4"
    expect_ended exit
    expect_env ORDER="A B" A_OK=1 A_TRY=1

    boot_vm s4-fallback normal
    expect_boot B 2.0 normal
    expect_log 'ABTEST: health rc=0' "v2's health passed"
    expect_log 'ABTEST: update rc=0' "update: nothing to install (v4 failed here)"
    expect_no_log 'ABTEST: reboot requested' "no reboot requested"
    expect_env A_OK=0 B_OK=1 B_TRY=0
    expect_primary B
    if grep -q '4\.0' <<<"$(state_json)"; then ok "state.json records release 4.0 as failed"; else bad "state.json does not mention 4.0"; fi
}

s5() {
    publish 5.0
    local ms="${INSTALL_MS:-6000}" i pct frac delay mid=0
    [ "$ms" -ge 1500 ] || ms=1500
    for frac in 15 40 65; do
        delay=$((ms * frac / 100))
        boot_vm "s5-cut-$frac" normal 'abupdate: writing rootfs 5\.0' "$delay"
        expect_boot B 2.0
        expect_log 'ABTEST: health rc=0' "health passed before the cut"
        expect_ended killed
        expect_no_log 'ABTEST: reboot requested' "cut landed before the reboot"
        expect_env_valid
        expect_env B_OK=1 A_OK=0
        expect_primary B
        pct="$(written_pct "$A_OFF" "$W/build/rootfs-4.0.img" "$W/build/rootfs-5.0.img")"
        say "  power cut $(ms2s "$delay") s into the write: $pct% of slot A's new bytes were on disk"
        if [ "$pct" -gt 0 ] && [ "$pct" -lt 100 ]; then mid=$((mid + 1)); fi
    done
    if [ "$mid" -gt 0 ]; then ok "$mid of 3 power cuts landed mid-write"; else bad "no power cut landed mid-write (install takes $(ms2s "$ms") s; adjust ABUPDATE_VM_THROTTLE)"; fi

    boot_vm s5-cut-at-reboot cut-at-reboot
    expect_boot B 2.0
    expect_log 'ABTEST: reboot requested mode=cut-at-reboot' "install finished; reboot = poweroff -f -n (no sync)"
    expect_ended exit
    expect_env_valid
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1
    slot_holds "$A_OFF" "$W/build/rootfs-5.0.img" && ok "slot A holds release 5.0 byte for byte despite the cut" \
        || bad "slot A does not hold release 5.0 after the cut at reboot"

    boot_vm s5-trial-v5 normal
    healthy_boot_checks A 5.0
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1
}

s6() {
    local i
    for i in 1 2 3; do
        boot_vm "s6-healthy-$i" normal
        healthy_boot_checks A 5.0
        expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1 B_TRY=0
    done
    # What re-blessing buys: a later trial of the other slot that never comes
    # up sends GRUB straight back to A (A_TRY=0), with no "new round" that
    # would give the failed slot another try.
    publish 6.0
    boot_vm s6-install-v6 normal
    install_boot_checks A 5.0
    expect_env ORDER="B A" B_OK=1 B_TRY=0 A_OK=1 A_TRY=0
    boot_vm s6-trial-v6 normal
    expect_boot B 6.0 normal panics
    expect_log 'Kernel panic' "v6 never comes up"
    expect_ended exit
    expect_env ORDER="B A" A_OK=1 A_TRY=0 B_OK=1 B_TRY=1
    boot_vm s6-back-to-A normal
    healthy_boot_checks A 5.0
    expect_env A_OK=1 A_TRY=0 B_OK=0
    expect_primary A
    if grep -q '6\.0' <<<"$(state_json)"; then ok "state.json records release 6.0 as failed"; else bad "state.json does not mention 6.0"; fi

    # The contrast, forged on the host: had A not re-blessed itself (A_TRY
    # still 1) when B's trial failed, no slot would qualify and the GRUB
    # script would start a new round (reset both TRY flags), which boots the
    # failed B once more.
    say "  contrast (env forged on the host): A not re-blessed (A_TRY=1) and B's trial failed (B_TRY=1)"
    host_env_edit set ORDER="B A" A_OK=1 A_TRY=1 B_OK=1 B_TRY=1
    boot_vm s6-without-rebless probe
    expect_boot B 6.0 new-round panics
    expect_log 'Kernel panic' "without re-blessing, the failed slot B is booted again"
    expect_env A_TRY=0 B_TRY=1
}

# The slot GRUB boots next: the first in ORDER with OK=1 and TRY=0.
primary_slot() {
    env_snapshot
    local s
    for s in $(env_val ORDER); do
        if [ "$(env_val "${s}_OK")" = 1 ] && [ "$(env_val "${s}_TRY")" = 0 ]; then echo "$s"; return; fi
    done
}

# Power cuts at named durable steps: the booted release (7.0) carries a
# failpoints build; the guest aborts abupdate at the step and powers off at
# once without sync (`poweroff -f -n`), so whatever abupdate had not made
# durable is lost with the guest's page cache. Each cut starts from the same
# disk (B runs 7.0, the server offers 8.0); after it the host checks the env
# GRUB will read and what the slot it will boot holds, then a normal boot
# must recover: install 8.0 from scratch, or try the fully written 8.0.
CUT_POINTS=(state-written:1 env-written:1 target-marked-bad state-written:2 segment-written:5 fsync read-back env-written:2 activated state-written:3)
s7() {
    publish 7.0
    boot_vm s7-install-v7 normal
    install_boot_checks A 5.0
    boot_vm s7-trial-v7 normal
    healthy_boot_checks B 7.0
    expect_env ORDER="B A" B_OK=1 B_TRY=0
    publish 8.0
    cp "$DISK" "$W/disk-before-cuts.img"
    local point primary
    for point in "${CUT_POINTS[@]}"; do
        cp "$W/disk-before-cuts.img" "$DISK"
        boot_vm "s7-cut-$point" "cut-at:$point"
        expect_boot B 7.0
        expect_log "failpoint ${point%%:*} hit" "abupdate stopped at $point"
        expect_log 'ABTEST: power cut' "power cut right after it (no sync)"
        expect_no_log 'ABTEST: reboot requested' "no reboot before the cut"
        expect_env_valid
        if state_json_replayed | python3 -c 'import json, sys; json.load(sys.stdin)' 2>/dev/null; then
            ok "state.json parses once the journal is replayed (as the next mount does)"
        else
            bad "state.json does not parse after journal replay"
        fi
        primary="$(primary_slot)"
        case "$primary" in
            B) ok "GRUB boots B (7.0, the booted release) next" ;;
            A) if slot_holds "$A_OFF" "$W/build/rootfs-8.0.img"; then ok "GRUB tries A next, and A holds 8.0 byte for byte"
               else bad "GRUB would try A, which does not hold a complete 8.0"; fi ;;
            *) bad "no slot GRUB would boot ($ENV_NOW)" ;;
        esac
        boot_vm "s7-after-$point" normal
        if [ "$primary" = A ]; then
            expect_boot A 8.0
            expect_log 'ABTEST: health rc=0' "the trial of 8.0 is healthy and committed"
        else
            install_boot_checks B 7.0
            slot_holds "$A_OFF" "$W/build/rootfs-8.0.img" && ok "the next boot installed 8.0 into A byte for byte" \
                || bad "slot A does not hold 8.0 after the recovery boot"
        fi
    done
}

# ---------------------------------------------------------------- GRUB self-test
grub_selftest() {
    ERRS=0
    boot_vm g1-factory probe
    expect_boot A 1.0
    expect_log 'ABTEST: probe http ok' "guest reached nginx"
    expect_env ORDER="A B" A_OK=1 A_TRY=1 B_OK=0 B_TRY=0

    say "  A was tried and never blessed, B is good: GRUB must take B"
    dd if="$W/build/rootfs-1.0.img" of="$DISK" bs=1M seek=$((B_OFF / MIB)) conv=notrunc status=none
    host_env_edit set B_OK=1 B_TRY=0
    boot_vm g2-fallback probe
    expect_boot B 1.0 normal
    expect_env ORDER="A B" A_OK=1 A_TRY=1 B_OK=1 B_TRY=1

    say "  both tried, nobody blessed: new round, first OK slot of ORDER, other one's TRY cleared"
    host_env_edit set ORDER="B A"
    boot_vm g3-new-round probe
    expect_boot B 1.0 new-round
    expect_env ORDER="B A" A_OK=1 A_TRY=0 B_OK=1 B_TRY=1

    say "  budget mode: B_LEFT=2 counts down 2 -> 1 -> 0, then GRUB moves to A"
    host_env_edit set B_LEFT=2 B_TRY=0
    boot_vm g4-budget-2 probe
    expect_boot B 1.0
    expect_env B_LEFT=1 B_TRY=1
    boot_vm g5-budget-1 probe
    expect_boot B 1.0
    expect_env B_LEFT=0 B_TRY=1
    boot_vm g6-budget-0 probe
    expect_boot A 1.0
    expect_env B_LEFT=0 A_TRY=1

    say "  nothing OK at all: first slot of ORDER, flags untouched"
    host_env_edit set A_OK=0 B_OK=0
    host_env_edit unset B_LEFT
    boot_vm g7-nothing-ok probe
    expect_boot B 1.0 no-ok-slot
    expect_env ORDER="B A" A_OK=0 B_OK=0 A_TRY=1 B_TRY=1

    say "  damaged values read as GRUB's -eq reads them: A_OK=yes is not OK, B_TRY=x is 0 (untried)"
    host_env_edit set A_OK=yes A_TRY=0 B_OK=1 B_TRY=x ORDER="A B"
    boot_vm g8-garbage probe
    expect_boot B 1.0 normal
    expect_env A_OK=yes B_TRY=1

    say "  unreadable grubenv (block zeroed): warning, defaults, first slot of ORDER"
    local blk; blk="$(debugfs -R "bmap /grub/grubenv 0" "$DISK?offset=$BOOT_OFF" 2>/dev/null)"
    dd if=/dev/zero of="$DISK" bs=1024 seek=$(( (BOOT_OFF + blk * 4096) / 1024 )) count=1 conv=notrunc status=none
    boot_vm g9-env-unreadable probe
    expect_log 'abupdate-grub: WARNING: cannot read grubenv' "GRUB warned about the env"
    expect_log 'abupdate-grub: booting slot A \(no-ok-slot\)' "GRUB booted the first slot of the default ORDER"
    expect_log 'ABTEST: boot slot=A version=1\.0 ' "slot A came up"
    [ "$ERRS" = 0 ]
}

# ---------------------------------------------------------------- main
main() {
    stale_cleanup
    ensure_packages
    ensure_kernel
    ensure_binary
    say "abupdate binary: $BIN"
    say "kernel: $KVER; work dir: $W"
    rm -rf "$LOGS"; mkdir -p "$LOGS" "$W/build"
    build_initramfs
    pick_port
    if [ "$MODE" = selftest ]; then
        mkdir -p "$W/keys"; : > "$W/keys/test.pub"
        build_rootfs 1.0 good
    else
        gen_keys
        local v
        say "building slot images and releases 1.0-8.0"
        build_rootfs 1.0 good
        build_rootfs 2.0 good
        build_rootfs 3.0 health-fails
        build_rootfs 4.0 panics
        build_rootfs 5.0 good
        build_rootfs 6.0 panics
        ROOTFS_BIN="$BIN_FP" build_rootfs 7.0 good
        ROOTFS_BIN="$BIN_FP" build_rootfs 8.0 good
        for v in 1.0 2.0 3.0 4.0 5.0 6.0 7.0 8.0; do pack_release "$v"; done
    fi
    build_disk
    say "disk image built: $DISK (${DISK_MB} MiB, GPT: bios, boot, rootfs-a, rootfs-b, data)"
    start_nginx
    if [ "$MODE" = selftest ]; then
        mkdir -p "$W/www"; echo '{}' > "$W/www/release.json"
    else
        publish 1.0
    fi
    choose_accel
    preflight
    BOOT_MS=()   # the per-boot statistics cover the test boots only

    if [ "$MODE" = selftest ]; then
        say "=== GRUB script self-test (probe boots, env edited on the host in place)"
        if grub_selftest; then PASSED=1; say "PASS grub self-test"; else FAILED=1; say "FAIL grub self-test"; fi
    else
        scenario 1 "v1 in slot A boots; health commits it" s1
        scenario 2 "update to v2 into slot B, trial boot, commit, B boots again" s2
        scenario 3 "v3 fails its health check: rollback to v2, never installed again" s3
        scenario 4 "v4 never comes up: GRUB falls back to v2, v4 recorded failed" s4
        scenario 5 "power cuts mid-install and at the reboot: always a good slot, install completes" s5
        scenario 6 "TRY set on every boot, good slot re-blessed every healthy boot" s6
        scenario 7 "power cut (no sync) at each durable step of an install: valid env, a good slot, recovery" s7
    fi

    local total=0 n=${#BOOT_MS[@]} mn=999999999 mx=0 ms
    for ms in "${BOOT_MS[@]}"; do
        total=$((total + ms)); [ "$ms" -lt "$mn" ] && mn=$ms; [ "$ms" -gt "$mx" ] && mx=$ms
    done
    if [ "$n" -gt 0 ]; then
        say "boots: $n ($ACCEL), seconds per boot: min $(ms2s "$mn"), avg $(ms2s $((total / n))), max $(ms2s "$mx"); total run $(( $(date +%s) - T_START )) s"
    fi
    SUMMARY_DONE=1
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ]
}

main "$@"
