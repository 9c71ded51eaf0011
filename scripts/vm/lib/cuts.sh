# Sourced by scripts/vm-test.sh: a power cut at each of a list of points,
# every cut from the same saved disk (and, for UEFI, NVRAM), so that one cut's
# leftovers never shape the next.  The guest (a failpoints build) aborts
# abupdate at the point and powers off at once without sync (its modes
# cut-at:POINT and cut-health-at:POINT).
#
# In: W, DISK, VARS, FIRMWARE.

CUTS_DISK="" CUTS_VARS=""
# The disk (and NVRAM) as it is now: where every following cut starts.
cuts_save() {
    CUTS_DISK="$W/disk-before-cuts.img" CUTS_VARS="$W/vars-before-cuts.fd"
    cp --sparse=always "$DISK" "$CUTS_DISK"
    if [ "$FIRMWARE" = ovmf ]; then cp "$VARS" "$CUTS_VARS"; fi
}
cuts_restore() {
    cp --sparse=always "$CUTS_DISK" "$DISK"
    if [ "$FIRMWARE" = ovmf ]; then cp "$CUTS_VARS" "$VARS"; fi
}
cuts_drop() { rm -f "$CUTS_DISK" "$CUTS_VARS"; }

# cut_each FLOW SLOT VERSION AFTER_CUT RECOVERED POINT...: for each POINT, from
# the saved disk, a boot of SLOT running VERSION whose FLOW (update: `abupdate
# update`, the install; health: `abupdate health`, the verdict and commit) is
# cut at POINT; then AFTER_CUT (the checks on the disk as the cut left it; it
# sets NEXT_SLOT, the slot that boots next) and a normal boot, after which
# RECOVERED checks the recovery.  Boots are named cut-POINT and after-POINT
# (update) or trial-cut-POINT and after-trial-POINT (health).
cut_each() {
    local flow="$1" slot="$2" version="$3" after_cut="$4" recovered="$5" point
    shift 5
    local mode name who marker
    case "$flow" in
        update) mode=cut-at name="" who=abupdate marker='ABTEST: power cut' ;;
        health) mode=cut-health-at name=trial- who=health marker='ABTEST: power cut after health' ;;
        *) die "cut_each: no flow '$flow' (update, health)" ;;
    esac
    for point in "$@"; do
        cuts_restore
        boot_vm "${name}cut-$point" "$mode:$point"
        expect_boot "$slot" "$version"
        expect_log "failpoint ${point%%:*} hit" "$who stopped at $point"
        expect_log "$marker" "power cut right after it (no sync)"
        "$after_cut"
        boot_vm "after-${name}$point" normal
        "$recovered"
    done
}
