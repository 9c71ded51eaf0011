# A power cut at each durable step of an install.  The booted release (7.0)
# carries a build with failpoints compiled in; the guest aborts `abupdate
# update` at the step and powers off at once without sync, so whatever
# abupdate had not made durable is lost with the guest's page cache.  Every
# cut starts from the same disk (B runs 7.0, the server offers 8.0).  After
# each: grub-editenv reads a valid env, state.json parses once the journal is
# replayed, the slot GRUB boots next is the running release or holds the new
# one byte for byte, and the next normal boot recovers (installs 8.0 from
# scratch, or tries and commits the complete 8.0).
TITLE="power cut (no sync) at each durable step of an install: valid env, a good slot, recovery"
AFTER=06-rebless
RELEASES="7.0:good:failpoints 8.0:good:failpoints"

CUT_POINTS=(state-written:1 env-written:1 target-marked-bad state-written:2 chunk-written:40 fsync read-back
            env-written:2 activated state-written:3)

scenario() {
    publish 7.0
    boot_vm install-v7 normal
    install_boot_checks A 5.0
    boot_vm trial-v7 normal
    healthy_boot_checks B 7.0
    expect_env ORDER="B A" B_OK=1 B_TRY=0
    publish 8.0
    cp --sparse=always "$DISK" "$W/disk-before-cuts.img"
    local point primary
    for point in "${CUT_POINTS[@]}"; do
        cp --sparse=always "$W/disk-before-cuts.img" "$DISK"
        boot_vm "cut-$point" "cut-at:$point"
        expect_boot B 7.0
        expect_log "failpoint ${point%%:*} hit" "abupdate stopped at $point"
        expect_log 'ABTEST: power cut' "power cut right after it (no sync)"
        expect_no_log 'ABTEST: reboot requested' "no reboot before the cut"
        expect_env_valid
        expect_state_replayed "parses (as the next mount sees it)" 'type == "object" and .format == 1'
        primary="$(primary_slot)"
        case "$primary" in
            B) ok "GRUB boots B (7.0, the booted release) next" ;;
            A) expect_slot_holds A 8.0 "GRUB tries A next, and A holds 8.0 byte for byte" ;;
            *) bad "no slot GRUB would boot ($(env_vars))" ;;
        esac
        boot_vm "after-$point" normal
        if [ "$primary" = A ]; then
            expect_boot A 8.0
            expect_log 'ABTEST: health rc=0' "the trial of 8.0 is healthy and committed"
            # After a cut between the activation and the "staged" state write
            # too: the commit names the release from the transaction.
            expect_healthy_status A 8.0
            expect_status "nothing pending" '.transaction == null'
        else
            install_boot_checks B 7.0
            expect_slot_holds A 8.0 "the next boot installed 8.0 into A byte for byte"
        fi
    done
    rm -f "$W/disk-before-cuts.img"
}
