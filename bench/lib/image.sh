# Sourced by bench/run.sh: building the test images and their payloads.
# Everything is cached under $W/img, keyed by the parameters in the name.

# make_tree DIR MIB [SKIP_EVERY]: copy files from the machine's /usr into DIR
# (a realistic root filesystem: binaries, libraries, share), in a fixed order,
# until about MIB MiB of file data.
make_tree() {
    local dir=$1 mib=$2
    rm -rf "$dir"; mkdir -p "$dir"
    find /usr/bin /usr/sbin /usr/lib /usr/share /usr/libexec /usr/include /usr/local \
        -xdev \( -type f -size -64M -o -type l \) -printf '%s %p\n' 2>/dev/null \
        | LC_ALL=C sort -k2 \
        | awk -v cap=$((mib << 20)) '!done { t += int(($1 + 4095) / 4096) * 4096; if (t > cap) done = 1; else print substr($0, index($0, " ") + 1) }' \
        > "$dir.list" || true
    # (files that vanish or cannot be read are skipped, hence no pipefail here)
    { tar -C / --no-recursion -cf - -T <(sed 's|^/||' "$dir.list") 2>/dev/null || true; } | tar -C "$dir" -xf -
    mkdir -p "$dir/etc"
    printf 'ID=bench\nIMAGE_VERSION=%s\n' "${3:-2.0}" > "$dir/etc/os-release"
}

# mkext4 TREE OUT SIZE_MIB: a reproducible ext4 image (fixed UUID, hash seed and
# time) whose free space is zeroes (a fresh sparse file).
mkext4() {
    local tree=$1 out=$2 mib=$3
    rm -f "$out"; truncate -s "${mib}M" "$out"
    E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -b 4096 -m 0 \
        -U 5f8f7a1c-0c6e-4c36-9a55-6f1e7d0b8a11 -E hash_seed=1b1e0f3a-0c1d-4e5f-8a9b-0c1d2e3f4a5b,root_owner=0:0 \
        -L rootfs -d "$tree" "$out"
}

# image NAME SIZE_MIB: build $W/img/NAME.ext4 (about 85% full) unless cached.
image() {
    local name=$1 mib=$2 out=$W/img/$1.ext4
    [ -s "$out" ] && return
    log "building $out: ${mib} MiB ext4 from /usr"
    make_tree "$W/img/tree-$name" $((mib * 85 / 100))
    mkext4 "$W/img/tree-$name" "$out" "$mib"
    rm -rf "$W/img/tree-$name"
}

# old_image NAME: $W/img/NAME-old.ext4, "the older image the inactive slot
# holds": NAME's tree where every 20th file is changed in place (same size,
# different bytes; a typical security update of a few packages), so the layout
# is the same and `--write=changed` finds what did not change.
old_image() {
    local name=$1 mib=$2 out=$W/img/$1-old.ext4
    [ -s "$out" ] && return
    log "building $out: the older image (every 20th file differs)"
    local tree=$W/img/tree-$name-old
    make_tree "$tree" $((mib * 85 / 100)) 1.0
    (cd "$tree" && find . -type f -size +0 | LC_ALL=C sort | awk 'NR % 20 == 0' \
        | while read -r f; do
            n=$(stat -c %s "$f"); [ "$n" -gt 4096 ] && n=4096
            head -c "$n" /dev/urandom | dd of="$f" conv=notrunc status=none
          done)
    mkext4 "$tree" "$out" "$mib"
    rm -rf "$tree"
}

# release NAME LEVEL MODE VERSION: $W/rel/NAME-MODE, an abupdate release of
# $W/img/NAME.ext4 at zstd LEVEL. MODE: seg (what `pack` makes by default:
# independent 4 MiB segments, decoded in parallel), w27 (one frame, window
# 2^27, --long: releases before segments), w23 (one frame, window 2^23),
# seg-rl (segments, packed at RAUC_LEVEL for the like-for-like row).
# Cached: packed again only when LEVEL differs from the one it was packed at
# ($W/rel/NAME-MODE.level), so a run at another LEVEL never measures stale bytes.
release() {
    local name=$1 level=$2 mode=$3 version=$4 out=$W/rel/$1-$3 args=()
    local stamp=$W/rel/$1-$3.level
    [ -s "$out/release.json" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$level" ] && return
    case $mode in
        seg | seg-rl) ;;
        w*) args=(--one-frame --window-log "${mode#w}") ;;
        *) die "release: unknown mode $mode" ;;
    esac
    log "packing $out (zstd -$level, $mode)"
    rm -rf "$out"
    "$ABU" pack --secret "$W/keys/release.key" --compatible bench-x86_64 --version "$version" \
        --image rootfs="$W/img/$name.ext4" --out "$out" --level "$level" "${args[@]}" \
        --expires-days 3650
    echo "$level" > "$stamp"
}

# payload_of REL: path of the compressed payload of a release directory.
payload_of() { ls "$1"/rootfs-*.img.zst; }
