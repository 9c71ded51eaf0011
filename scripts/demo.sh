#!/usr/bin/env bash
# The main job end to end, on an embedded default, in about a minute:
# make a signing key, build two ext4 releases and pack them, serve them from
# a real nginx, then on a "host" whose slots are loop devices (files when
# loop devices are not available): boot v1, update to v2 over HTTP,
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

make_image() { # VERSION → v$VERSION.ext4
    rm -rf tree; mkdir -p tree/etc tree/bin
    printf 'ID=demo\nIMAGE_VERSION=%s\n' "$1" > tree/etc/os-release
    cp /bin/busybox tree/bin/ 2>/dev/null || cp /bin/sh tree/bin/
    head -c 4M /dev/urandom > tree/bin/payload-"$1"
    rm -f "v$1.ext4"; truncate -s 24M "v$1.ext4"
    mkfs.ext4 -q -F -d tree "v$1.ext4"
}
step "releases 1.0 and 2.0 (ext4 images, zstd, signed)"
make_image 1.0; make_image 2.0
"$abupdate" pack --secret release.key --compatible demo-x86_64 --version 2.0 \
    --image rootfs=v2.0.ext4 --out releases --level 9
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

step "the timer: check, then update (download over HTTP, write slot B, verify, activate, reboot)"
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
