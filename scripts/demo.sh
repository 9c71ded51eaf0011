#!/usr/bin/env bash
# The main job end to end, on an embedded default, in about 20 seconds:
# make a signing key, build two ext4 releases and pack them (2.0 with a delta
# from 1.0), serve them from a real nginx, then on a "host" whose slots are
# loop devices (files when loop devices are not available): boot v1, update
# to v2 over HTTP (by delta: Range requests against the booted slot),
# "reboot" (the demo plays GRUB's part on the grubenv that abupdate wrote),
# commit on a healthy trial, and print the status.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/demo
scripts/deps.sh
cargo build --release --quiet
abupdate=$root/target/release/abupdate

cleanup() {
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    for l in "${loops[@]:-}"; do [ -n "$l" ] && losetup -d "$l" 2>/dev/null || true; done
}
loops=()
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"/{keys,state,health.d,releases,tree}
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "signing key"
"$abupdate" keygen --secret release.key --public keys/release.pub

# Two releases that share most of their bytes, as consecutive releases do:
# the same 8 MiB of "system" files, a new 1 MiB file in each. Reproducible
# images (scripts/mkimage.sh), so unchanged files keep their bytes.
head -c 8M /dev/urandom > base.bin
make_image() { # VERSION → v$VERSION.ext4
    rm -rf tree; mkdir -p tree/etc tree/bin tree/usr/share
    printf 'ID=demo\nIMAGE_VERSION=%s\n' "$1" > tree/etc/os-release
    cp /bin/busybox tree/bin/ 2>/dev/null || cp /bin/sh tree/bin/
    cp base.bin tree/usr/share/system.bin
    head -c 1M /dev/urandom > tree/bin/payload-"$1"
    "$root/scripts/mkimage.sh" tree "v$1.ext4" 24 >/dev/null
}
step "releases 1.0 and 2.0 (reproducible ext4 images, zstd, signed; 2.0 with a delta from 1.0)"
make_image 1.0; make_image 2.0
"$abupdate" pack --secret release.key --compatible demo-x86_64 --version 2.0 \
    --image rootfs=v2.0.ext4 --out releases --level 9 --segment-size 4 --delta-from rootfs=v1.0.ext4
ls -l releases

step "a real HTTP server (nginx) serving the release"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mkdir -p nginx/logs
cat > nginx/nginx.conf <<NGINX
daemon off; pid $work/nginx.pid; error_log $work/nginx/error.log;
events {}
http { access_log $work/nginx/access.log; types {}
  server { listen 127.0.0.1:$port; root $work/releases; } }
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" & sleep 0.5

step "the host: two slots, grubenv, config"
for s in a b; do truncate -s 32M "slot-$s.img"; done
slot_a=$work/slot-a.img; slot_b=$work/slot-b.img
if losetup -f >/dev/null 2>&1; then
    slot_a=$(losetup -f --show slot-a.img); loops+=("$slot_a")
    slot_b=$(losetup -f --show slot-b.img); loops+=("$slot_b")
fi
dd if=v1.0.ext4 of="$slot_a" bs=4M conv=fsync status=none
grub-editenv grubenv create
grub-editenv grubenv set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
cat > reboot.sh <<'R'
#!/bin/sh
echo "(reboot requested)"
R
chmod +x reboot.sh
printf '#!/bin/sh\ntest -s /dev/null -o -e /\n' > health.d/10-root-is-there; chmod +x health.d/*
cat > config.toml <<TOML
[update]
url = "http://127.0.0.1:$port/release.json"
compatible = "demo-x86_64"
state_dir = "$work/state"
keys_dirs = ["$work/keys"]
[system]
cmdline = "$work/cmdline"
os_release = "$work/os-release"
machine_id = "$work/machine-id"
boot_id = "$work/boot_id"
reboot = ["$work/reboot.sh"]
[bootloader]
kind = "grub"
grubenv = "$work/grubenv"
[slots.A]
rootfs = "$slot_a"
[slots.B]
rootfs = "$slot_b"
[health]
dir = "$work/health.d"
timeout = "10s"
TOML
cat config.toml
echo "0123456789abcdef0123456789abcdef" > machine-id

# Play GRUB: first slot in ORDER with OK=1 and TRY=0, set its TRY, boot it.
boot() {
    eval "$(grub-editenv grubenv list | sed 's/^\([A-Z_]*\)=\(.*\)$/\1="\2"/')"
    for s in $ORDER; do
        ok=${s}_OK; try=${s}_TRY
        if [ "${!ok}" = 1 ] && [ "${!try}" = 0 ]; then chosen=$s; break; fi
    done
    grub-editenv grubenv set "${chosen}_TRY=1"
    dev=$slot_a; [ "$chosen" = B ] && dev=$slot_b
    echo "abupdate.slot=$chosen" > cmdline
    debugfs -R "cat /etc/os-release" "$dev" 2>/dev/null > os-release
    cat /proc/sys/kernel/random/uuid > boot_id
    echo "GRUB booted slot $chosen ($(grep IMAGE_VERSION os-release))"
}

step "boot 1: slot A, v1.0; the health service re-blesses it"
boot
"$abupdate" --config config.toml health

step "the timer: check, then update (the delta from v1.0 over HTTP Range requests, write slot B, verify, activate, reboot)"
set +e; "$abupdate" --config config.toml check; echo "check exit code: $?"; set -e
"$abupdate" --config config.toml update
grub-editenv grubenv list

step "boot 2: GRUB tries slot B; health passes; v2.0 committed"
boot
"$abupdate" --config config.toml health
grub-editenv grubenv list

step "status"
"$abupdate" --config config.toml status
echo
echo "nginx served: $(awk '{print $7, $9, $10}' nginx/access.log | tr '\n' ';')"
