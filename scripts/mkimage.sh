#!/usr/bin/env bash
# Build an ext4 image from a directory so that two builds of the same tree
# are byte-identical — without that, every delta method bloats (a default
# `mkfs.ext4 -d` of the same tree twice differs in thousands of blocks:
# random UUID, hash seed, timestamps, uninitialised free space).
#
#   scripts/mkimage.sh TREE OUT.img SIZE_MIB [EPOCH]
#
# EPOCH (default: $SOURCE_DATE_EPOCH, else 1700000000) becomes every file's
# timestamp and the filesystem's creation time. e2fsprogs 1.47.0 has no
# SOURCE_DATE_EPOCH support: E2FSPROGS_FAKE_TIME fixes its clock, and the
# staging copy's timestamps are clamped by hand.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 TREE OUT.img SIZE_MIB [EPOCH]" >&2; exit 2; }
tree=$1 out=$2 size_mib=$3
epoch=${4:-${SOURCE_DATE_EPOCH:-1700000000}}
[ -d "$tree" ] || { echo "$0: $tree: not a directory" >&2; exit 2; }

# Fixed identities: derived from nothing but the epoch, so a new epoch gives
# a new (still reproducible) filesystem.
uuid=$(printf '%08x-0000-4000-8000-%012x' "$epoch" "$epoch")
seed=$(printf '%08x-1111-4111-8111-%012x' "$epoch" "$epoch")

stage=$(mktemp -d "${TMPDIR:-/tmp}/mkimage.XXXXXX")
trap 'rm -rf "$stage" "$stage.ctime"' EXIT
cp -a "$tree"/. "$stage"/
find "$stage" -exec touch -h -d "@$epoch" {} +

rm -f "$out"
# A fresh sparse file reads as zeros: free space is zero, and stays so
# because mkfs writes only metadata and file data.
truncate -s "${size_mib}M" "$out"
E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -q -F -b 4096 -L rootfs -U "$uuid" \
    -E "hash_seed=$seed,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard" \
    -d "$stage" "$out"

# mkfs copies each file's ctime, which no tool can set on the staging copy:
# rewrite it in the image.
(cd "$stage" && find . -mindepth 1 -printf '%P\0') |
    while IFS= read -r -d '' path; do
        printf 'sif "/%s" ctime @%s\n' "$path" "$epoch"
    done > "$stage.ctime"
printf 'sif / ctime @%s\n' "$epoch" >> "$stage.ctime"
E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$stage.ctime" "$out" >/dev/null 2>&1
rm -f "$stage.ctime"
