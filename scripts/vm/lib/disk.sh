# Sourced by scripts/vm-test.sh: everything the guest boots from, built on
# the host without touching the host's own boot setup: the shared initramfs,
# one ext4 slot image per release (the guest userspace), the releases made by
# `abupdate pack`, and the factory disk (GPT; the firmware's boot path; an ext4
# /boot with Debian's kernel, the shipped grub.cfg and a grubenv; release 1.0
# in slot A; an empty /data).
#
# Two parameters choose the variant, so the next ones slot in beside the
# current ones (scripts/vm/README.md):
#   FIRMWARE  bios: GRUB i386-pc in the MBR gap + a BIOS boot partition
#   GUEST     busybox: busybox-static + the static abupdate + scripts/vm/guest/busybox
# The build lands in $BUILD and is reused by later runs while its fingerprint
# (the hash of every input, the nginx port baked into the guest config
# included) is unchanged; the scenario checkpoints live there too.
#
# In: W, REPO, SUITE, BIN, BIN_FP, KROOT, KVER, PORT, RELEASES.

# The partition numbers are the guest config's (/dev/vda3, /dev/vda4) for
# every firmware: partition 1 is the BIOS boot partition or, later, the ESP.
PART_TYPE_BIOS=21686148-6449-6E6F-744E-656564454649
PART_TYPE_LINUX=0FC63DAF-8483-4772-8E79-3D69D8477DE4

LOOPDEV="" MNT="$W/mnt"
disk_cleanup() {
    if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT"; fi
    if [ -n "$LOOPDEV" ]; then losetup -d "$LOOPDEV" 2>/dev/null; fi
}
on_exit disk_cleanup

# Leftovers of an interrupted earlier run (only ours: by path).
disk_stale_cleanup() { # IMAGE...
    if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || true; fi
    local f
    for f in "$@"; do
        [ -f "$f" ] || continue
        losetup -j "$f" 2>/dev/null | cut -d: -f1 | while read -r l; do losetup -d "$l" || true; done
    done
}

# The inputs of a build, hashed: a change to any of them rebuilds everything.
build_fingerprint() {
    {
        echo "suite=$SUITE firmware=$FIRMWARE guest=$GUEST kernel=$KVER port=$PORT releases=$RELEASES"
        sha256sum "$BIN" ${BIN_FP:+"$BIN_FP"} "$KROOT/vmlinuz" | cut -d' ' -f1
        ( cd "$REPO" && find scripts/vm/guest scripts/vm/lib/disk.sh scripts/vm/lib/common.sh scripts/install.sh \
            scripts/grub systemd -type f | LC_ALL=C sort | xargs sha256sum )
        command -v busybox mkfs.ext4 grub-install | xargs -r sha256sum | cut -d' ' -f1
    } | sha256sum | cut -c1-32
}

# ensure_build: $BUILD holds initrd.img, rootfs-V.img and releases/V for every
# release of RELEASES ("V:FLAVOR[:failpoints] ..."), keys/ and factory.img.
ensure_build() {
    local want; want="$(build_fingerprint)"
    if [ "${ABUPDATE_VM_REBUILD:-0}" != 1 ] && [ -s "$BUILD/fingerprint" ] \
        && [ "$(cat "$BUILD/fingerprint")" = "$want" ]; then
        say "reusing the build in $BUILD (inputs unchanged)"
        return
    fi
    rm -rf "$BUILD"; mkdir -p "$BUILD/releases" "$BUILD/keys"
    say "building initramfs, slot images, releases ($RELEASES) and the factory disk in $BUILD"
    build_initramfs
    gen_keys
    local r v flavor bin
    for r in $RELEASES; do
        IFS=: read -r v flavor bin <<<"$r"
        case "$bin" in "") bin="$BIN" ;; failpoints) bin="$BIN_FP" ;; *) die "release $r: unknown binary '$bin'" ;; esac
        build_rootfs "$GUEST" "$v" "$flavor" "$bin"
        [ "$SUITE" = grub-selftest ] || pack_release "$v"
    done
    build_disk "$FIRMWARE" "$BUILD/factory.img"
    echo "$want" > "$BUILD/fingerprint"
}

MODULES=(virtio_pci virtio_blk ext4 virtio_net qemu_fw_cfg)
build_initramfs() {
    local d="$BUILD/initramfs" a m ko
    rm -rf "$d"; mkdir -p "$d"/{bin,dev,proc,sys,newroot,lib/modules}
    cp /bin/busybox "$d/bin/busybox"
    for a in sh mount insmod sleep grep sed cat tr switch_root findfs mkdir echo; do ln -s busybox "$d/bin/$a"; done
    mknod -m 600 "$d/dev/console" c 5 1
    : > "$d/modules.list"
    for m in "${MODULES[@]}"; do
        modprobe -d "$KROOT/root" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$d/lib/modules/"
        basename "$ko" >> "$d/modules.list"
    done
    install -m 0755 "$REPO/scripts/vm/guest/initramfs-init" "$d/init"
    ( cd "$d" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 ) > "$BUILD/initrd.img"
    rm -rf "$d"
}

gen_keys() {
    if [ "$SUITE" = grub-selftest ]; then : > "$BUILD/keys/test.pub"; return; fi
    "$BIN" keygen --secret "$BUILD/keys/test.key" --public "$BUILD/keys/test.pub" >/dev/null \
        || die "abupdate keygen failed"
}

guest_config() {
    cat <<EOF
# abupdate config of the VM test slots (scripts/vm/lib/disk.sh)
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

# build_rootfs GUEST VERSION FLAVOR ABUPDATE -> $BUILD/rootfs-VERSION.img
# FLAVOR: good | health-fails (a health check fails) | panics (init exits)
build_rootfs() {
    local guest="$1" v="$2" flavor="$3" bin="$4" s="$BUILD/stage-$2"
    rm -rf "$s"
    case "$guest" in
        busybox) stage_busybox "$s" "$v" "$bin" ;;
        *) die "GUEST=$guest: no such guest userspace (see scripts/vm/README.md)" ;;
    esac
    stage_flavor "$s" "$v" "$flavor"
    # Distinct, incompressible content per version: installs move real data
    # (and the power-cut checks can tell old bytes from new ones).
    mkdir -p "$s/usr/share/abtest"
    head -c $((FILLER_MB * MIB)) /dev/urandom > "$s/usr/share/abtest/filler.bin"
    local img="$BUILD/rootfs-$v.img"
    rm -f "$img"; truncate -s "${IMG_MB}M" "$img"
    mkfs.ext4 -q -F -b 4096 -L "rootfs-$v" -d "$s" "$img" >/dev/null || die "mkfs.ext4 for rootfs $v failed"
    rm -rf "$s"
}

# The busybox guest: busybox-static, abupdate installed by scripts/install.sh,
# and an init that does what the systemd units do (scripts/vm/guest/busybox).
stage_busybox() { # DIR VERSION ABUPDATE
    local s="$1" v="$2" a
    mkdir -p "$s"/{bin,sbin,etc,proc,sys,dev,run,tmp,boot,data,root,usr/bin,usr/sbin}
    cp /bin/busybox "$s/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || [ -e "$s/bin/$a" ] || ln -s busybox "$s/bin/$a"
    done
    mkdir -p "$s/etc/abupdate"
    guest_config > "$s/etc/abupdate/config.toml"
    "$REPO/scripts/install.sh" "$s" "$3" >/dev/null
    cp "$BUILD/keys/test.pub" "$s/etc/abupdate/keys/test.pub"
    cat > "$s/etc/os-release" <<EOF
NAME="abupdate VM test"
ID=abupdate-vmtest
VERSION_ID=$v
IMAGE_VERSION=$v
EOF
    echo "abupdate-vmtest" > "$s/etc/hostname"
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$s/etc/passwd"
    printf 'root:x:0:\n' > "$s/etc/group"
    install -m 0755 "$REPO/scripts/vm/guest/busybox/slot-init" "$s/sbin/init"
    install -m 0755 "$REPO/scripts/vm/guest/busybox/abupdate-reboot" "$s/sbin/abupdate-reboot"
}

# What makes a release good or bad, the same for every guest: health checks
# in /etc/abupdate/health.d, and /etc/abtest/panic for an init that never
# comes up.
stage_flavor() { # DIR VERSION FLAVOR
    local s="$1" v="$2"
    mkdir -p "$s/etc/abupdate/health.d"
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
    case "$3" in
        good) ;;
        health-fails)
            cat > "$s/etc/abupdate/health.d/50-release-broken" <<EOF
#!/bin/sh
echo "health check: release $v is broken on purpose" >&2
exit 1
EOF
            ;;
        panics) mkdir -p "$s/etc/abtest"; touch "$s/etc/abtest/panic" ;;
        *) die "unknown flavor $3" ;;
    esac
    chmod 0755 "$s"/etc/abupdate/health.d/*
}

pack_release() { # VERSION -> $BUILD/releases/VERSION
    local v="$1" out="$BUILD/releases/$1"
    rm -rf "$out"
    "$BIN" pack --secret "$BUILD/keys/test.key" --compatible "$COMPATIBLE" --version "$v" \
        --image "rootfs=$BUILD/rootfs-$v.img" --out "$out" > "$BUILD/pack-$v.log" 2>&1 \
        || { cat "$BUILD/pack-$v.log" >&2; die "abupdate pack $v failed"; }
    [ -s "$out/release.json" ] && [ -s "$out/release.json.minisig" ] || die "pack $v: no release.json(.minisig) in $out"
}

# build_disk FIRMWARE OUT: the factory disk: release 1.0 in slot A, B empty,
# grubenv ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0.
build_disk() {
    local firmware="$1" disk="$2" s=$((MIB / 512)) p1_type
    case "$firmware" in
        bios) p1_type="$PART_TYPE_BIOS" ;;
        *) die "FIRMWARE=$firmware: no such firmware variant (see scripts/vm/README.md)" ;;
    esac
    rm -f "$disk"; truncate -s "${DISK_MB}M" "$disk"
    sfdisk -q "$disk" <<EOF || die "sfdisk failed"
label: gpt
start=$((BIOS_OFF / 512)), size=$((BIOS_MB * s)), type=$p1_type, name="bios"
start=$((BOOT_OFF / 512)), size=$((BOOT_MB * s)), type=$PART_TYPE_LINUX, name="boot"
start=$((A_OFF / 512)), size=$((SLOT_MB * s)), type=$PART_TYPE_LINUX, name="rootfs-a"
start=$((B_OFF / 512)), size=$((SLOT_MB * s)), type=$PART_TYPE_LINUX, name="rootfs-b"
start=$((DATA_OFF / 512)), size=$((DATA_MB * s)), type=$PART_TYPE_LINUX, name="data"
EOF
    # /boot: kernel, shared initramfs, the GRUB script we ship, the board file,
    # and grubenv made by grub-editenv (1024 bytes, not sparse; no inline_data).
    local b="$BUILD/bootfs"
    rm -rf "$b"; mkdir -p "$b/grub"
    cp "$KROOT/vmlinuz" "$b/vmlinuz"
    cp "$BUILD/initrd.img" "$b/initrd.img"
    cp "$REPO/scripts/grub/grub.cfg" "$b/grub/grub.cfg"
    cat > "$b/grub/abupdate-board.cfg" <<'EOF'
# VM test board: serial console, reboot on panic (qemu -no-reboot then exits).
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set ab_cmdline="ro console=ttyS0,115200 panic=1 quiet no_timer_check"
EOF
    grub-editenv "$b/grub/grubenv" create
    grub-editenv "$b/grub/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
    mkfs.ext4 -q -F -b 4096 -O ^inline_data -L boot -d "$b" -E offset="$BOOT_OFF" "$disk" "${BOOT_MB}M" >/dev/null \
        || die "mkfs /boot failed"
    local dfs="$BUILD/datafs"
    rm -rf "$dfs"; mkdir -p "$dfs/abupdate"
    mkfs.ext4 -q -F -b 4096 -L data -d "$dfs" -E offset="$DATA_OFF" "$disk" "${DATA_MB}M" >/dev/null \
        || die "mkfs /data failed"
    rm -rf "$dfs"
    # Factory state: release 1.0 in slot A, slot B empty.
    dd if="$BUILD/rootfs-1.0.img" of="$disk" bs=1M seek=$((A_OFF / MIB)) conv=notrunc status=none
    install_bootloader "$firmware" "$disk" "$b/grub/grubenv"
    rm -rf "$b"
}

# GRUB into the MBR gap + BIOS boot partition, modules into /boot/grub.
# Without udev nobody creates /dev/loopNpM: wait for the kernel's partition
# scan in sysfs (ask again with partx if it does not come) and make our own
# device node under the work dir.
install_bootloader() { # FIRMWARE DISK GRUBENV-AS-BUILT
    local disk="$2" n i ma mi
    LOOPDEV="$(losetup --show -f -P "$disk")"
    n="${LOOPDEV#/dev/}"
    for i in $(seq 30); do [ -e "/sys/block/$n/${n}p2/dev" ] && break; sleep 0.1; done
    [ -e "/sys/block/$n/${n}p2/dev" ] || partx -a "$LOOPDEV" 2>/dev/null || true
    for i in $(seq 30); do [ -e "/sys/block/$n/${n}p2/dev" ] && break; sleep 0.1; done
    [ -e "/sys/block/$n/${n}p2/dev" ] || die "no partitions on $LOOPDEV (loop partition scan unsupported?)"
    IFS=: read -r ma mi < "/sys/block/$n/${n}p2/dev"
    mkdir -p "$W/dev" "$MNT"
    rm -f "$W/dev/bootpart"; mknod "$W/dev/bootpart" b "$ma" "$mi"
    mount "$W/dev/bootpart" "$MNT"
    case "$1" in
        bios) grub-install --target=i386-pc --boot-directory="$MNT" --modules="part_gpt ext2" \
                  --no-floppy "$LOOPDEV" > "$BUILD/grub-install.log" 2>&1 \
                  || { cat "$BUILD/grub-install.log" >&2; die "grub-install failed"; } ;;
    esac
    cmp -s "$MNT/grub/grubenv" "$3" || die "grub-install changed grubenv"
    umount "$MNT"
    rm -f "$W/dev/bootpart"
    losetup -d "$LOOPDEV"; LOOPDEV=""
}
