# Sourced by scripts/vm-test.sh: what the host needs before anything is
# built: Debian packages, Debian's kernel (unpacked, never installed: the
# host's own /boot and bootloader stay untouched) and the static abupdate.
#
# In:  SUITE (abupdate | grub-selftest), FIRMWARE, GUEST, W, REPO, BIN, BIN_FP
#      (may be empty).
# Out: KROOT, KVER, BIN, BIN_FP, FWVARS (virt-fw-vars, ovmf only).

APT_UPDATED=0 POLICY_RC_D=""
# Another apt run (a teammate's, unattended-upgrades) holds the dpkg lock for
# a while: wait for it instead of failing the whole test.
APT_OPTS=(-o DPkg::Lock::Timeout=300)
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get "${APT_OPTS[@]}" update -q >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
}
host_cleanup() { if [ -n "$POLICY_RC_D" ]; then rm -f "$POLICY_RC_D"; fi; }
on_exit host_cleanup

ensure_packages() {
    [ "$(id -u)" = 0 ] || die "must run as root (apt-get, loop devices, mount)"
    local pkgs=(qemu-system-x86 grub-pc-bin grub2-common fdisk busybox-static nginx kmod cpio
                e2fsprogs zstd gzip util-linux jq)
    [ -n "$BIN" ] || pkgs+=(musl-tools)
    # UEFI: the firmware, the ESP built without mounting (this host kernel may
    # have no vfat), systemd-boot's EFI binary, a venv for virt-firmware.
    [ "$FIRMWARE" = ovmf ] && pkgs+=(ovmf dosfstools mtools systemd-boot-efi python3-venv)
    [ "$GUEST" = systemd ] && pkgs+=(debootstrap systemd)
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
        DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends \
            "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
        host_cleanup; POLICY_RC_D=""
    fi
    local t
    for t in qemu-system-x86_64 grub-install grub-editenv sfdisk mkfs.ext4 debugfs e2fsck nginx depmod \
             modprobe cpio jq; do
        command -v "$t" >/dev/null || die "$t not found after installing packages"
    done
    if [ "$FIRMWARE" = ovmf ]; then
        for t in mkfs.vfat fsck.vfat mcopy mdir mdel python3; do
            command -v "$t" >/dev/null || die "$t not found after installing packages"
        done
        ensure_virt_firmware
    fi
    if [ "$GUEST" = systemd ]; then
        for t in debootstrap journalctl; do
            command -v "$t" >/dev/null || die "$t not found after installing packages"
        done
    fi
}

# virt-fw-vars (virt-firmware, PyPI; not packaged in Debian 12) reads and
# writes the edk2 variable store of an OVMF_VARS file: a venv under the work
# dir, made once, pinned.
VIRT_FIRMWARE_VERSION=26.10
FWVARS=""
ensure_virt_firmware() {
    local venv="$W/cache/virt-firmware-$VIRT_FIRMWARE_VERSION"
    if [ ! -x "$venv/bin/virt-fw-vars" ]; then
        say "python3 -m venv $venv; pip install virt-firmware==$VIRT_FIRMWARE_VERSION"
        rm -rf "$venv"
        python3 -m venv "$venv" || die "python3 -m venv $venv failed"
        "$venv/bin/pip" install -q "virt-firmware==$VIRT_FIRMWARE_VERSION" >/dev/null \
            || die "pip install virt-firmware==$VIRT_FIRMWARE_VERSION failed"
    fi
    FWVARS="$venv/bin/virt-fw-vars"
}

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
    if [ "$SUITE" = grub-selftest ]; then
        # The GRUB self-test never runs abupdate; a stub fills its place.
        BIN="$W/cache/abupdate-stub" BIN_FP=""
        mkdir -p "$W/cache"
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
    local b deps
    for b in "$BIN" "$BIN_FP"; do
        deps="$(LC_ALL=C ldd "$b" 2>&1 || true)"
        if grep -q '=>' <<<"$deps"; then die "$b is dynamically linked; the slots have no libc"; fi
    done
}
