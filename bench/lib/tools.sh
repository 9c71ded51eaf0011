# Sourced by bench/run.sh: setting up each tool and one install with it.
# Every install_* function writes the release into the slot $SLOT_B (a loop
# device) and returns when the tool has finished; the caller times it and then
# makes the slot durable (fsync of the device) inside the timed window, so a
# tool that leaves the data in the page cache is not credited for it.

SERVICE_PIDS=()
RAM_SLOT=/dev/shm/abupdate-bench-b.img   # the RAM-backed slot of `ram_bench`
detach_all() { # every loop device backed by a bench slot file
    local f
    for f in "$W"/slots/*.img "$RAM_SLOT"; do
        [ -e "$f" ] || continue
        losetup -j "$f" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null || true
    done
    rm -f "$RAM_SLOT"
}
# Free page reporting (virtio-balloon): a guest that hands the pages it frees
# back to its host pays a host fault the next time it touches each of them.
# A tool that writes through fresh page cache (RAUC: 1 GiB a run) then costs
# up to 60% more CPU in some runs than in others; one that reuses its own
# buffers (abupdate's O_DIRECT) does not. Where the kernel lets freed pages
# wait before they are reported (`min_free_ms`), the bench holds them a minute
# during its run (long enough that RAUC stops swinging), so every tool is
# measured at its best; the old value is put back on exit. It is also kept in
# $W/min_free_ms.was while held, so that after a run killed with SIGKILL (no
# EXIT trap) the next run puts back the machine's value, not the bench's.
# HOLD_FREED_PAGES=off measures the machine as it is.
REPORTING=/sys/module/page_reporting/parameters
REPORTING_WAS=
hold_freed_pages() {
    [ -w "$REPORTING/min_free_ms" ] || return 0
    local was_file=$W/min_free_ms.was
    if [ -s "$was_file" ]; then
        REPORTING_WAS=$(cat "$was_file")
        log "a killed run left freed pages held: min_free_ms goes back to $REPORTING_WAS on exit"
    else
        REPORTING_WAS=$(cat "$REPORTING/min_free_ms")
        mkdir -p "$W" && echo "$REPORTING_WAS" > "$was_file"
    fi
    if [ "${HOLD_FREED_PAGES:-on}" = off ]; then
        release_freed_pages
        return 0
    fi
    echo 60000 > "$REPORTING/min_free_ms" || { release_freed_pages; log "could not hold freed pages ($REPORTING/min_free_ms)"; }
}
release_freed_pages() {
    [ -z "$REPORTING_WAS" ] || echo "$REPORTING_WAS" > "$REPORTING/min_free_ms" || true
    REPORTING_WAS=
    rm -f "$W/min_free_ms.was"
}
# Whether a virtio balloon here reports free pages (VIRTIO_BALLOON_F_REPORTING,
# feature bit 5: the sixth character of `features`), knob or not.
reporting_balloon() {
    local d
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device" 2>/dev/null)" = 0x0005 ] && [ "$(cut -c6 "$d/features" 2>/dev/null)" = 1 ] && return 0
    done
    return 1
}
# reported_kib: what the guest has handed back to its host so far ("-" without reporting).
reported_kib() { cat "$REPORTING/reported_kib" 2>/dev/null || echo -; }
cleanup() {
    release_freed_pages
    for p in "${SERVICE_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    [ -f "$W/nginx/nginx.pid" ] && kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null || true
    detach_all
    return 0
}

# attach FILE MIB → prints the loop device (a sparse backing file of MIB MiB).
attach() {
    local f=$1 mib=$2
    [ -f "$f" ] && [ "$(stat -c %s "$f")" = $((mib << 20)) ] || { rm -f "$f"; truncate -s "${mib}M" "$f"; }
    losetup -f --show --direct-io="${LOOP_DIO:-off}" "$f"
}

slots_setup() {
    detach_all
    SLOT_A=$(attach "$W/slots/a.img" 64)
    SLOT_B=$(attach "$W/slots/b.img" "$1")
    # The SWUpdate bundles name a fixed device path; it points at slot B.
    ln -sfn "$SLOT_B" "$W/slots/slot-b"
    log "slots: A=$SLOT_A (booted), B=$SLOT_B (target, ${1} MiB)"
    abu_setup
    rauc_setup
}

# ---------------------------------------------------------------- abupdate
abu_setup() {
    local d=$W/abu
    mkdir -p "$d/keys"
    cp "$W/keys/release.pub" "$d/keys/"
    echo "abupdate.slot=A" > "$d/cmdline"
    echo "0123456789abcdef0123456789abcdef" > "$d/machine-id"
    echo "00000000-0000-0000-0000-000000000001" > "$d/boot_id"
    printf '#!/bin/sh\nexit 0\n' > "$d/reboot.sh"; chmod +x "$d/reboot.sh"
    abu_config "$d" "${1:-}"
}

# abu_config DIR [URL]: config for the bench host in DIR.
abu_config() {
    local d=$1 url=${2:-}
    cat > "$d/config.toml" <<TOML
[update]
${url:+url = \"$url\"}
compatible = "bench-x86_64"
state_dir = "$d/state"
keys_dirs = ["$d/keys"]
max_window_log = 27
[system]
cmdline = "$d/cmdline"
os_release = "$d/os-release"
machine_id = "$d/machine-id"
boot_id = "$d/boot_id"
reboot = ["$d/reboot.sh"]
[bootloader]
kind = "grub"
grubenv = "$d/grubenv"
[slots.A]
rootfs = "$SLOT_A"
[slots.B]
rootfs = "$SLOT_B"
TOML
}

# A fresh host state before every run: booted A at 1.0, no transaction.
abu_reset() {
    local d=$W/abu
    rm -rf "$d/state"; mkdir -p "$d/state"
    printf 'ID=bench\nIMAGE_VERSION=%s\n' "${1:-1.0}" > "$d/os-release"
    rm -f "$d/grubenv"
    grub-editenv "$d/grubenv" create
    grub-editenv "$d/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
}


# ---------------------------------------------------------------- RAUC
# The zstd level of RAUC's zstd bundle: mksquashfs's default for `-comp zstd`
# (`mksquashfs -h`: "-Xcompression-level ... (default 15)"), given explicitly so
# that this is the one place it is set. The bench packs abupdate's payload at
# it too, for a row that compares the two like for like.
RAUC_LEVEL=15
rauc_prepare() {
    local d=$W/rauc
    mkdir -p "$d"
    if [ ! -s "$d/ca.pem" ]; then
        log "RAUC/SWUpdate signing PKI"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.pem" \
            -days 3650 -subj "/CN=bench CA" -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout "$d/signer.key" -out "$d/signer.csr" \
            -subj "/CN=bench signer" 2>/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection,codeSigning\n' > "$d/ext.cnf"
        openssl x509 -req -in "$d/signer.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
            -days 3650 -extfile "$d/ext.cnf" -out "$d/signer.pem" 2>/dev/null
    fi
    local comp
    for comp in zstd gzip; do
        [ -s "$d/bundle-$comp.raucb" ] && continue
        log "RAUC plain bundle, squashfs $comp"
        rm -rf "$d/content"; mkdir -p "$d/content"
        ln "$W/img/rootfs.ext4" "$d/content/rootfs.ext4" 2>/dev/null || cp "$W/img/rootfs.ext4" "$d/content/"
        cat > "$d/content/manifest.raucm" <<EOF
[update]
compatible=bench-x86_64
version=2.0

[bundle]
format=plain

[image.rootfs]
filename=rootfs.ext4
EOF
        local args="-comp $comp -Xcompression-level $RAUC_LEVEL"
        [ "$comp" = gzip ] && args=""   # mksquashfs's default, and so RAUC's
        rauc --cert "$d/signer.pem" --key "$d/signer.key" --keyring "$d/ca.pem" \
            bundle ${args:+--mksquashfs-args="$args"} "$d/content" "$d/bundle-$comp.raucb" >/dev/null
        rm -rf "$d/content"
    done
}

rauc_setup() {
    local d=$W/rauc
    mkdir -p "$d/mnt"
    cat > "$d/backend.sh" <<'EOF'
#!/bin/sh
# RAUC custom bootloader backend: state in a file next to this script.
f=$(dirname "$0")/boot.state
[ -f "$f" ] || printf 'primary=A\nA=good\nB=good\n' > "$f"
case $1 in
get-primary) sed -n 's/^primary=//p' "$f" ;;
set-primary) sed -i "s/^primary=.*/primary=$2/" "$f" ;;
get-state) sed -n "s/^$2=//p" "$f" ;;
set-state) sed -i "s/^$2=.*/$2=$3/" "$f" ;;
get-current) echo A ;;
*) exit 1 ;;
esac
EOF
    chmod +x "$d/backend.sh"
    cat > "$d/system.conf" <<EOF
[system]
compatible=bench-x86_64
bootloader=custom
mountprefix=$d/mnt
statusfile=$d/status.raucs

[handlers]
bootloader-custom-backend=$d/backend.sh

[keyring]
path=$d/ca.pem

[slot.rootfs.0]
device=$SLOT_A
type=ext4
bootname=A

[slot.rootfs.1]
device=$SLOT_B
type=ext4
bootname=B
EOF
    cat > "$d/dbus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$d/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
    rm -f "$d/bus"
    dbus-daemon --config-file="$d/dbus.conf" --fork --print-pid > "$d/dbus.pid"
    SERVICE_PIDS+=("$(cat "$d/dbus.pid")")
    export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$d/bus"
}

RAUC_PID=
# A fresh RAUC service per run, so its VmHWM is this install's.
rauc_start() {
    local d=$W/rauc
    rm -f "$d/status.raucs" "$d/boot.state"
    rauc --conf="$d/system.conf" service --override-boot-slot=A > "$d/service.log" 2>&1 &
    RAUC_PID=$!
    SERVICE_PIDS+=("$RAUC_PID")
    local i
    for i in $(seq 100); do
        rauc --conf="$d/system.conf" status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$d/service.log" >&2
    die "rauc service did not come up"
}
rauc_stop() {
    kill "$RAUC_PID" 2>/dev/null || true
    wait "$RAUC_PID" 2>/dev/null || true
}
install_rauc() {
    rauc --conf="$W/rauc/system.conf" install "$W/rauc/bundle-$1.raucb" > "$W/logs/rauc-install.log" 2>&1 \
        || { cat "$W/logs/rauc-install.log" "$W/rauc/service.log" >&2; return 1; }
}

# ---------------------------------------------------------------- SWUpdate
swu_prepare() {
    local d=$W/swu pki=$W/rauc
    mkdir -p "$d"
    local kind
    for kind in raw zstd; do
        # The zstd .swu carries the w27 payload: made again when that is re-packed.
        [ -s "$d/$kind.swu" ] && grep -q hardware-compatibility "$d/$kind.swu.desc" 2>/dev/null \
            && { [ "$kind" = raw ] || [ "$d/$kind.swu" -nt "$(payload_of "$W/rel/rootfs-w27")" ]; } && continue
        log "SWUpdate .swu ($kind, CMS-signed, raw handler)"
        rm -rf "$d/c"; mkdir -p "$d/c"
        local file sha extra=""
        if [ "$kind" = raw ]; then
            file=rootfs.ext4
            ln "$W/img/rootfs.ext4" "$d/c/$file" 2>/dev/null || cp "$W/img/rootfs.ext4" "$d/c/$file"
        else
            file=rootfs.ext4.zst
            ln "$(payload_of "$W/rel/rootfs-w27")" "$d/c/$file" 2>/dev/null || cp "$(payload_of "$W/rel/rootfs-w27")" "$d/c/$file"
            extra='compressed = "zstd";'
        fi
        sha=$(sha256sum "$d/c/$file" | cut -d' ' -f1)
        cat > "$d/c/sw-description" <<EOF
software =
{
    version = "2.0";
    description = "abupdate bench";
    hardware-compatibility: [ "1.0" ];
    images: (
        {
            filename = "$file";
            device = "$W/slots/slot-b";
            type = "raw";
            sha256 = "$sha";
            $extra
        }
    );
}
EOF
        openssl cms -sign -in "$d/c/sw-description" -out "$d/c/sw-description.sig" \
            -signer "$pki/signer.pem" -inkey "$pki/signer.key" -outform DER -nosmimecap -binary
        cp "$d/c/sw-description" "$d/$kind.swu.desc"
        (cd "$d/c" && printf '%s\n' sw-description sw-description.sig "$file" \
            | cpio -o -H crc --quiet -L) > "$d/$kind.swu"
        rm -rf "$d/c"
    done
}

# ---------------------------------------------------------------- casync
casync_prepare() {
    local d=$W/casync
    [ -s "$d/rootfs.caibx" ] && return
    log "casync store (zstd chunks) of the image"
    rm -rf "$d"; mkdir -p "$d"
    casync make --compression=zstd --store="$d/store.castr" "$d/rootfs.caibx" "$W/img/rootfs.ext4" >/dev/null
}
