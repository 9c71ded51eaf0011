# Sourced by scripts/vm-test.sh: everything the guest boots from, built on
# the host without touching the host's own boot setup: the shared initramfs,
# one ext4 slot image per release (the guest userspace), the releases made by
# `abupdate pack`, and the factory disk (GPT; the firmware's boot path; an ext4
# /boot; release 1.0 in slot A; an empty data partition) with, for UEFI, its
# NVRAM.
#
# Three parameters choose the variant (scripts/vm/README.md):
#   FIRMWARE  bios: GRUB i386-pc in the MBR gap + a BIOS boot partition; /boot
#                   holds Debian's kernel, the shipped grub.cfg and a grubenv
#             ovmf: partition 1 is an ESP (vfat, built with mtools: never
#                   mounted on the host) and the NVRAM is a copy of OVMF_VARS
#                   (factory.vars) whose Boot#### entries virt-fw-vars writes
#   BOOT      grub | efi (a Boot#### entry per slot: Debian's kernel is its own
#             EFI loader, the slot's command line in the load options) |
#             systemd-boot (systemd-boot on the ESP, a BLS entry per slot)
#   GUEST     busybox: busybox-static + the static abupdate + scripts/vm/guest/busybox
#             systemd: Debian (debootstrap, cached) with systemd as PID 1, the
#                   shipped units installed by scripts/install.sh, and
#                   scripts/vm/guest/systemd
# The build lands in $BUILD and is reused by later runs while its fingerprint
# (the hash of every input, the nginx port baked into the guest config
# included) is unchanged; the scenario checkpoints live there too.
#
# In: W, REPO, SUITE, FIRMWARE, BOOT, GUEST, BIN, BIN_FP, KROOT, KVER, PORT,
# RELEASES, FWVARS, OVMF_VARS.

# The partition numbers are the guest config's (/dev/vda3, /dev/vda4) for
# every firmware: partition 1 is the BIOS boot partition or the ESP.  The
# GUIDs are fixed, so the Boot#### entries (HD(1,GPT,<ESP's GUID>,…)) and
# the guest config are the same in every build.
PART_TYPE_BIOS=21686148-6449-6E6F-744E-656564454649
PART_TYPE_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
PART_TYPE_LINUX=0FC63DAF-8483-4772-8E79-3D69D8477DE4
DISK_GUID=6A0E2B3C-1D4F-4A5B-8C6D-7E8F90A1B2C3
P1_GUID=3F1B1A5E-5C2D-4E4B-9A7F-0123456789AB
# The state file on the data partition (mounted at /data by the busybox
# guest, at /var by the systemd guest, whose state_dir is the shipped
# /var/lib/abupdate).
case "$GUEST" in
    systemd) STATE_REL=/lib/abupdate/state.json DATA_MNT=/var ;;
    *) STATE_REL=/abupdate/state.json DATA_MNT=/data ;;
esac
# The kernel command line of every slot; root=, the slot's name and (efi,
# where the kernel's own EFI stub loads it) the initrd's path are added.
SLOT_CMDLINE="ro console=ttyS0,115200 panic=1 quiet no_timer_check net.ifnames=0"
slot_part() { case "$1" in A) echo 3 ;; B) echo 4 ;; *) die "no slot '$1'" ;; esac; }
slot_lower() { tr AB ab <<<"$1"; }
slot_cmdline() { # SLOT
    local l; l="$(slot_lower "$1")"
    case "$BOOT" in
        efi) echo "root=/dev/vda$(slot_part "$1") $SLOT_CMDLINE initrd=\\EFI\\abupdate-$l\\initrd.img abupdate.slot=$1" ;;
        *) echo "root=/dev/vda$(slot_part "$1") $SLOT_CMDLINE abupdate.slot=$1" ;;
    esac
}
SDBOOT_EFI=/usr/lib/systemd/boot/efi/systemd-bootx64.efi

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
        echo "suite=$SUITE firmware=$FIRMWARE boot=$BOOT guest=$GUEST kernel=$KVER port=$PORT"
        sha256sum "$BIN" ${BIN_FP:+"$BIN_FP"} "$KROOT/vmlinuz" | cut -d' ' -f1
        if [ "$FIRMWARE" = ovmf ]; then sha256sum "$OVMF_VARS" "$SDBOOT_EFI" | cut -d' ' -f1; fi
        if [ "$GUEST" = systemd ]; then debian_key; fi
        ( cd "$REPO" && find scripts/vm/guest scripts/vm/lib/disk.sh scripts/vm/lib/common.sh scripts/install.sh \
            scripts/vm/lib/nvram.py scripts/grub systemd -type f | LC_ALL=C sort | xargs sha256sum )
        command -v busybox mkfs.ext4 grub-install | xargs -r sha256sum | cut -d' ' -f1
    } | sha256sum | cut -c1-32
}

# ensure_build: $BUILD holds initrd.img, rootfs-V.img and releases/V for every
# release of RELEASES ("V:FLAVOR[:failpoints] ..."), keys/, factory.img and
# (ovmf) factory.vars.  A build whose inputs are unchanged is reused and only
# gets the releases it lacks (each one's spec is kept in release-V.spec).
ensure_build() {
    local want r v flavor bin todo=()
    want="$(build_fingerprint)"
    if [ "${ABUPDATE_VM_REBUILD:-0}" != 1 ] && [ -s "$BUILD/fingerprint" ] \
        && [ "$(cat "$BUILD/fingerprint")" = "$want" ]; then
        for r in $RELEASES; do
            [ "$(cat "$BUILD/release-${r%%:*}.spec" 2>/dev/null)" = "$r" ] || todo+=("$r")
        done
        if [ ${#todo[@]} -eq 0 ]; then say "reusing the build in $BUILD (inputs unchanged)"; return; fi
        say "reusing the build in $BUILD; adding the releases ${todo[*]}"
    else
        rm -rf "$BUILD"; mkdir -p "$BUILD/releases" "$BUILD/keys"
        say "building initramfs, slot images, releases ($RELEASES) and the factory disk in $BUILD"
        build_initramfs
        gen_keys
        read -r -a todo <<<"$RELEASES"
    fi
    for r in "${todo[@]}"; do
        IFS=: read -r v flavor bin <<<"$r"
        case "$bin" in "") bin="$BIN" ;; failpoints) bin="$BIN_FP" ;; *) die "release $r: unknown binary '$bin'" ;; esac
        rm -f "$BUILD/release-$v.spec"
        build_rootfs "$GUEST" "$v" "$flavor" "$bin"
        [ "$SUITE" = grub-selftest ] || pack_release "$v"
        echo "$r" > "$BUILD/release-$v.spec"
    done
    # The factory disk holds 1.0: made again when 1.0 was.
    if [ ! -s "$BUILD/fingerprint" ] || [ "$(cat "$BUILD/fingerprint")" != "$want" ] \
        || in_list "${RELEASES%% *}" "${todo[@]}"; then
        build_disk "$FIRMWARE" "$BUILD/factory.img"
        echo "$want" > "$BUILD/fingerprint"
    fi
}

# The factory disk (and, for UEFI, its NVRAM) becomes the guest's.
FACTORY_VARS=""
factory_restore() {
    cp --sparse=always "$BUILD/factory.img" "$DISK"
    if [ "$FIRMWARE" = ovmf ]; then cp "$BUILD/factory.vars" "$VARS"; FACTORY_VARS=1; fi
}

MODULES=(virtio_pci virtio_blk ext4 virtio_net qemu_fw_cfg)
# UEFI: the variables (efivarfs) and the ESP (vfat and its code pages),
# loaded by the initramfs; they stay for the slot's userspace, which has no
# modules of its own.
if [ "$FIRMWARE" = ovmf ]; then MODULES+=(efivarfs vfat nls_cp437 nls_ascii nls_utf8); fi
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
    local state_dir=/data/abupdate machine_id=/data/machine-id reboot=/sbin/abupdate-reboot timeout=8s units=""
    if [ "$GUEST" = systemd ]; then
        # The shipped defaults: the data partition is /var; systemd's machine
        # id; health also asks systemd whether the network came up.
        state_dir=/var/lib/abupdate machine_id=/etc/machine-id reboot=/usr/lib/abtest/reboot timeout=120s
        units='units = ["systemd-networkd.service"]'
    fi
    cat <<EOF
# abupdate config of the VM test slots (scripts/vm/lib/disk.sh)
[update]
url = "http://10.0.2.2:$PORT/release.json"
compatible = "$COMPATIBLE"
state_dir = "$state_dir"
keys_dirs = ["/etc/abupdate/keys"]

[system]
cmdline = "/proc/cmdline"
os_release = "/etc/os-release"
machine_id = "$machine_id"
reboot = ["$reboot"]

EOF
    local s l
    case "$BOOT" in
        grub) printf '[bootloader]\nkind = "grub"\ngrubenv = "/boot/grub/grubenv"\n' ;;
        efi)
            # Entries found by their description (RAUC's bootname) and
            # recreated from loader + partition + options when the firmware
            # dropped them (TOML literal strings: the backslashes are the
            # firmware's).
            printf '[bootloader]\nkind = "efi"\n'
            for s in A B; do
                l="$(slot_lower "$s")"
                printf "\n[bootloader.efi.%s]\ndescription = 'abupdate %s'\n" "$s" "$s"
                printf "loader = '\\\\EFI\\\\abupdate-%s\\\\vmlinuz.efi'\n" "$l"
                printf "partition = 'PARTUUID=%s'\n" "$(tr A-F a-f <<<"$P1_GUID")"
                printf "options = '%s'\n" "$(slot_cmdline "$s")"
            done ;;
        systemd-boot)
            # Two tries per trial: a trial that never comes up counts down
            # +2 -> +1-1 -> +0-2, then systemd-boot falls back.
            printf '[bootloader]\nkind = "systemd-boot"\nesp = "/boot/efi"\nentry_prefix = "abupdate"\ntries = 2\n'
            for s in A B; do
                l="$(slot_lower "$s")"
                printf '\n[bootloader.systemd-boot.%s]\ntitle = "abupdate %s"\nlinux = "/abupdate/%s/vmlinuz"\n' "$s" "$s" "$l"
                printf 'initrd = ["/abupdate/%s/initrd.img"]\noptions = "root=/dev/vda%s %s"\n' \
                    "$l" "$(slot_part "$s")" "$SLOT_CMDLINE"
            done ;;
        *) die "BOOT=$BOOT: no such bootloader (see scripts/vm/README.md)" ;;
    esac
    cat <<EOF

[slots.A]
rootfs = "/dev/vda3"

[slots.B]
rootfs = "/dev/vda4"

[health]
dir = "/etc/abupdate/health.d"
timeout = "$timeout"
$units
EOF
}

# build_rootfs GUEST VERSION FLAVOR ABUPDATE -> $BUILD/rootfs-VERSION.img
# FLAVOR: good | health-fails (a health check fails) | panics (init exits)
#         | crashes-after-commit (init exits after health; on probation)
build_rootfs() {
    local guest="$1" v="$2" flavor="$3" bin="$4" s="$BUILD/stage-$2"
    rm -rf "$s"
    case "$guest" in
        busybox) stage_busybox "$s" "$v" "$bin" ;;
        systemd) stage_systemd "$s" "$v" "$bin" ;;
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

os_release() { # VERSION
    cat <<EOF
NAME="abupdate VM test"
PRETTY_NAME="abupdate VM test $1"
ID=abupdate-vmtest
VERSION_ID=$1
IMAGE_VERSION=$1
EOF
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
    os_release "$v" > "$s/etc/os-release"
    echo "abupdate-vmtest" > "$s/etc/hostname"
    printf 'root:x:0:0:root:/root:/bin/sh\n' > "$s/etc/passwd"
    printf 'root:x:0:\n' > "$s/etc/group"
    install -m 0755 "$REPO/scripts/vm/guest/busybox/slot-init" "$s/sbin/init"
    install -m 0755 "$REPO/scripts/vm/guest/busybox/abupdate-reboot" "$s/sbin/abupdate-reboot"
    install -D -m 0755 "$REPO/scripts/vm/guest/boot-state" "$s/usr/lib/abtest/boot-state"
}

# ---------------------------------------------------------------- systemd guest
# Debian bookworm, minbase plus what a systemd host needs here, made once by
# debootstrap into $W/cache/debian-SUITE-KEY (KEY: the suite, mirror, package
# list and trim), trimmed, and copied per release.
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${ABUPDATE_VM_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_PACKAGES=systemd,systemd-sysv,systemd-boot,udev,iproute2
debian_key() { echo "$DEBIAN_SUITE $DEBIAN_MIRROR $DEBIAN_PACKAGES trim-1" | sha256sum | cut -c1-16; }
DEBIAN_ROOT=""
ensure_debian() {
    DEBIAN_ROOT="$W/cache/debian-$DEBIAN_SUITE-$(debian_key)"
    [ -f "$DEBIAN_ROOT.done" ] && return
    local t0; t0=$(date +%s)
    rm -rf "$DEBIAN_ROOT" "$DEBIAN_ROOT.log"
    say "debootstrap --variant=minbase --include=$DEBIAN_PACKAGES $DEBIAN_SUITE (cached: $DEBIAN_ROOT)"
    debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" "$DEBIAN_SUITE" "$DEBIAN_ROOT" "$DEBIAN_MIRROR" \
        > "$DEBIAN_ROOT.log" 2>&1 || { tail -n 20 "$DEBIAN_ROOT.log" >&2; die "debootstrap failed (log: $DEBIAN_ROOT.log)"; }
    # What a read-only slot never uses: docs, package caches and lists, the
    # hardware database (udev works without it).
    rm -rf "$DEBIAN_ROOT"/usr/share/{doc,man,locale,info,lintian,bash-completion,zsh} \
        "$DEBIAN_ROOT"/var/cache/* "$DEBIAN_ROOT"/var/lib/apt/lists/* \
        "$DEBIAN_ROOT"/usr/lib/udev/hwdb.bin "$DEBIAN_ROOT"/usr/lib/udev/hwdb.d
    touch "$DEBIAN_ROOT.done"
    say "  debootstrap took $(( $(date +%s) - t0 )) s; $(du -sh "$DEBIAN_ROOT" | cut -f1)"
}

# The systemd guest: Debian with systemd as PID 1, abupdate and its units
# installed by scripts/install.sh exactly as shipped.  What the test adds
# (scripts/vm/guest/systemd): PID 1's wrapper (the boot marker; the panics
# flavor), an observer unit printing the ABTEST markers, the reboot command's
# wrapper (a marker, then `systemctl reboot`), a drop-in that makes
# abupdate.timer fire soon after boot instead of hourly; and the host's
# plumbing: fstab (the data partition is /var, the ESP /boot/efi), the
# network, the journal (persistent on /var, and on the serial console).
stage_systemd() { # DIR VERSION ABUPDATE
    local s="$1" v="$2" g="$REPO/scripts/vm/guest/systemd"
    ensure_debian
    cp -a "$DEBIAN_ROOT" "$s"
    mkdir -p "$s/etc/abupdate" "$s/boot/efi"
    guest_config > "$s/etc/abupdate/config.toml"
    "$REPO/scripts/install.sh" "$s" "$3" >/dev/null
    cp "$BUILD/keys/test.pub" "$s/etc/abupdate/keys/test.pub"
    rm -f "$s/etc/os-release"
    os_release "$v" > "$s/etc/os-release"
    echo "abupdate-vmtest" > "$s/etc/hostname"
    rm -f "$s/sbin/init"
    install -m 0755 "$g/init" "$s/sbin/init"
    install -D -m 0755 "$g/observe" "$s/usr/lib/abtest/observe"
    install -D -m 0755 "$g/reboot" "$s/usr/lib/abtest/reboot"
    install -D -m 0755 "$REPO/scripts/vm/guest/boot-state" "$s/usr/lib/abtest/boot-state"
    install -m 0644 "$g/abtest.service" "$s/etc/systemd/system/abtest.service"
    install -D -m 0644 "$g/abupdate.timer.conf" "$s/etc/systemd/system/abupdate.timer.d/abtest.conf"
    install -D -m 0644 "$g/journald.conf" "$s/etc/systemd/journald.conf.d/abtest.conf"
    install -D -m 0644 "$g/eth0.network" "$s/etc/systemd/network/10-eth0.network"
    install -m 0644 "$g/fstab" "$s/etc/fstab"
    systemctl --root="$s" --quiet enable abtest.service systemd-networkd.service >/dev/null 2>&1 \
        || die "systemctl --root=$s enable failed"
    # The ESP is in fstab (/boot/efi, where abupdate's config has it): the
    # generator that would also automount it on /boot or /efi is not wanted.
    mkdir -p "$s/etc/systemd/system-generators"
    ln -sfn /dev/null "$s/etc/systemd/system-generators/systemd-gpt-auto-generator"
    # Not on this test host: logins, logind (no D-Bus here), package timers.
    systemctl --root="$s" --quiet mask serial-getty@ttyS0.service getty@tty1.service systemd-logind.service \
        e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
        fstrim.timer >/dev/null 2>&1 || die "systemctl --root=$s mask failed"
}

# What makes a release good or bad, the same for every guest: health checks
# in /etc/abupdate/health.d, and /etc/abtest/panic for an init that never
# comes up.
stage_flavor() { # DIR VERSION FLAVOR
    local s="$1" v="$2"
    mkdir -p "$s/etc/abupdate/health.d"
    cat > "$s/etc/abupdate/health.d/10-data-mounted" <<EOF
#!/bin/sh
# The persistent data partition must be mounted.
grep -q ' $DATA_MNT ' /proc/mounts
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
        crashes-after-commit)
            # Healthy at its verdict, then PID 1 exits on every boot (a crash
            # hours later, compressed); on a 24 h probation ([health] is the
            # config's last table).
            mkdir -p "$s/etc/abtest"; touch "$s/etc/abtest/crash-after-health"
            printf 'probation = "24h"\n' >> "$s/etc/abupdate/config.toml"
            ;;
        *) die "unknown flavor $3" ;;
    esac
    chmod 0755 "$s"/etc/abupdate/health.d/*
}

pack_release() { # VERSION -> $BUILD/releases/VERSION
    local v="$1" out="$BUILD/releases/$1"
    rm -rf "$out"
    # --level 3: the slot images are mostly random filler; zstd's default 19
    # spends a minute per release on a loaded host for nothing.
    "$BIN" pack --secret "$BUILD/keys/test.key" --compatible "$COMPATIBLE" --version "$v" --level 3 \
        --image "rootfs=$BUILD/rootfs-$v.img" --out "$out" > "$BUILD/pack-$v.log" 2>&1 \
        || { cat "$BUILD/pack-$v.log" >&2; die "abupdate pack $v failed"; }
    [ -s "$out/release.json" ] && [ -s "$out/release.json.minisig" ] || die "pack $v: no release.json(.minisig) in $out"
}

# build_disk FIRMWARE OUT: the factory disk: release 1.0 in slot A, B empty
# and bad in the bootloader's terms: grubenv ORDER="A B" A_OK=1 A_TRY=0 B_OK=0
# B_TRY=0 (grub); BootOrder = A's entry only, B's entry present (efi);
# abupdate-1-a.conf and abupdate-0-b+0.conf (systemd-boot).
build_disk() {
    local firmware="$1" disk="$2" s=$((MIB / 512)) p1_type
    case "$firmware" in
        bios) p1_type="$PART_TYPE_BIOS" ;;
        ovmf) p1_type="$PART_TYPE_ESP" ;;
        *) die "FIRMWARE=$firmware: no such firmware variant (see scripts/vm/README.md)" ;;
    esac
    rm -f "$disk"; truncate -s "${DISK_MB}M" "$disk"
    sfdisk -q "$disk" <<EOF || die "sfdisk failed"
label: gpt
label-id: $DISK_GUID
start=$((P1_OFF / 512)), size=$((P1_MB * s)), type=$p1_type, uuid=$P1_GUID, name="$P1_NAME"
start=$((BOOT_OFF / 512)), size=$((BOOT_MB * s)), type=$PART_TYPE_LINUX, name="boot"
start=$((A_OFF / 512)), size=$((SLOT_MB * s)), type=$PART_TYPE_LINUX, name="rootfs-a"
start=$((B_OFF / 512)), size=$((SLOT_MB * s)), type=$PART_TYPE_LINUX, name="rootfs-b"
start=$((DATA_OFF / 512)), size=$((DATA_MB * s)), type=$PART_TYPE_LINUX, name="data"
EOF
    # /boot (bios): kernel, shared initramfs, the GRUB script we ship, the
    # board file, and grubenv made by grub-editenv (1024 bytes, not sparse;
    # no inline_data).  ovmf: empty but for the ESP's mount point.
    local b="$BUILD/bootfs"
    rm -rf "$b"; mkdir -p "$b"
    if [ "$firmware" = bios ]; then
        mkdir -p "$b/grub"
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
    else
        mkdir -p "$b/efi"
    fi
    mkfs.ext4 -q -F -b 4096 -O ^inline_data -L boot -d "$b" -E offset="$BOOT_OFF" "$disk" "${BOOT_MB}M" >/dev/null \
        || die "mkfs /boot failed"
    local dfs="$BUILD/datafs"
    rm -rf "$dfs"; mkdir -p "$dfs"
    [ "$GUEST" = systemd ] || mkdir -p "$dfs/abupdate"
    mkfs.ext4 -q -F -b 4096 -L data -d "$dfs" -E offset="$DATA_OFF" "$disk" "${DATA_MB}M" >/dev/null \
        || die "mkfs /data failed"
    rm -rf "$dfs"
    # Factory state: release 1.0 in slot A, slot B empty.
    dd if="$BUILD/rootfs-1.0.img" of="$disk" bs=1M seek=$((A_OFF / MIB)) conv=notrunc status=none
    case "$firmware" in
        bios) install_bootloader "$firmware" "$disk" "$b/grub/grubenv" ;;
        ovmf) build_esp "$BUILD/esp.img"
              dd if="$BUILD/esp.img" of="$disk" bs=1M seek=$((P1_OFF / MIB)) conv=notrunc status=none
              rm -f "$BUILD/esp.img"
              build_nvram "$disk" "$BUILD/factory.vars" ;;
    esac
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

# ---------------------------------------------------------------- UEFI
# The ESP as a vfat image, filled with mtools (no mount):
#   efi           \EFI\abupdate-{a,b}\vmlinuz.efi + initrd.img: each slot's
#                 Boot#### entry starts Debian's kernel (its EFI stub), whose
#                 load options are the command line (initrd= included)
#   systemd-boot  \EFI\systemd\systemd-bootx64.efi (also the removable path
#                 \EFI\BOOT\BOOTX64.EFI), loader/loader.conf (no timeout, a
#                 default that matches both slots, as abupdate requires),
#                 loader/entries, /abupdate/{a,b}/vmlinuz + initrd.img
export MTOOLS_SKIP_CHECK=1
esp_put() { # IMG SRC DEST-PATH (parents made)
    local img="$1" src="$2" dest="$3" dir="" part
    IFS=/ read -r -a parts <<<"${dest#/}"
    for part in "${parts[@]:0:${#parts[@]}-1}"; do
        dir+="/$part"
        mmd -D s -i "$img" "::$dir" 2>/dev/null || true
    done
    mcopy -o -i "$img" "$src" "::$dest" || die "mcopy $src to ::$dest failed"
}
# The BLS type #1 entry of SLOT, as abupdate writes one from its config.
sdboot_entry() { # SLOT
    local l; l="$(slot_lower "$1")"
    printf 'title abupdate %s\nlinux /abupdate/%s/vmlinuz\ninitrd /abupdate/%s/initrd.img\noptions %s\n' \
        "$1" "$l" "$l" "$(slot_cmdline "$1")"
}
build_esp() { # OUT
    local img="$1" t="$BUILD/esp-files" s l sdboot="$SDBOOT_EFI"
    # The systemd guest's own systemd-boot (its systemd-boot-update.service
    # would otherwise "update" a different version on the ESP at boot).
    [ "$GUEST" != systemd ] || sdboot="$DEBIAN_ROOT/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
    rm -rf "$img" "$t"; mkdir -p "$t"
    mkfs.vfat -C -n ESP "$img" $((P1_MB * 1024)) >/dev/null || die "mkfs.vfat failed"
    case "$BOOT" in
        efi)
            for s in A B; do
                l="$(slot_lower "$s")"
                esp_put "$img" "$KROOT/vmlinuz" "/EFI/abupdate-$l/vmlinuz.efi"
                esp_put "$img" "$BUILD/initrd.img" "/EFI/abupdate-$l/initrd.img"
            done ;;
        systemd-boot)
            esp_put "$img" "$sdboot" /EFI/systemd/systemd-bootx64.efi
            esp_put "$img" "$sdboot" /EFI/BOOT/BOOTX64.EFI
            printf 'timeout 0\ndefault abupdate-*\neditor no\nauto-entries no\nauto-firmware no\n' > "$t/loader.conf"
            esp_put "$img" "$t/loader.conf" /loader/loader.conf
            sdboot_entry A > "$t/a.conf"; sdboot_entry B > "$t/b.conf"
            esp_put "$img" "$t/a.conf" /loader/entries/abupdate-1-a.conf
            esp_put "$img" "$t/b.conf" "/loader/entries/abupdate-0-b+0.conf"
            for s in a b; do
                esp_put "$img" "$KROOT/vmlinuz" "/abupdate/$s/vmlinuz"
                esp_put "$img" "$BUILD/initrd.img" "/abupdate/$s/initrd.img"
            done ;;
        *) die "BOOT=$BOOT does not boot on UEFI here" ;;
    esac
    rm -rf "$t"
}
# The factory NVRAM: OVMF's empty variable store plus our Boot#### entries
# (HD() from the disk's GPT), written by virt-fw-vars.  efi: "abupdate A"
# (Boot0010, the only one in BootOrder) and "abupdate B" (Boot0011: present,
# not in BootOrder = bad, as the empty slot is); systemd-boot: one entry,
# "Linux Boot Manager".  The firmware appends its own entries on first boot.
build_nvram() { # DISK OUT
    local json="$BUILD/factory-vars.json"
    case "$BOOT" in
        efi) python3 "$REPO/scripts/vm/lib/nvram.py" entries "$1" \
                 --entry 0010 "abupdate A" '\EFI\abupdate-a\vmlinuz.efi' 1 "$(slot_cmdline A)" \
                 --entry 0011 "abupdate B" '\EFI\abupdate-b\vmlinuz.efi' 1 "$(slot_cmdline B)" \
                 --order 0010 > "$json" ;;
        systemd-boot) python3 "$REPO/scripts/vm/lib/nvram.py" entries "$1" \
                 --entry 0010 "Linux Boot Manager" '\EFI\systemd\systemd-bootx64.efi' 1 \
                 --order 0010 > "$json" ;;
    esac || die "nvram.py entries failed"
    cp "$OVMF_VARS" "$2"
    "$FWVARS" --inplace "$2" --set-json "$json" > "$BUILD/factory-vars.log" 2>&1 \
        || { cat "$BUILD/factory-vars.log" >&2; die "virt-fw-vars --set-json failed"; }
}
