# Power cuts during the entry renames on the real vfat ESP: of an install
# (mark the target bad, make it the trial) and of the commit.  The running
# release (6.0) and the offered one (7.0) are failpoints builds: the guest
# aborts abupdate right after its Nth rename (entry-renamed:N: renamed and
# the directory synced) or at a named step, and powers off at once without
# sync.  Every cut starts from the same disk.  After each: fsck.vfat finds
# the ESP clean, bootctl's default is a good slot (B, 6.0) or the new slot
# holding 7.0 byte for byte, and the next boots recover.
TITLE="power cut at each entry rename of an install and of the commit: clean ESP, a good slot boots, recovery"
AFTER=04-entry-dropped
RELEASES="6.0:good:failpoints 7.0:good:failpoints"

UPDATE_CUTS=(entry-renamed:1 target-marked-bad entry-renamed:2 activated)
HEALTH_CUTS=(health-verdict entry-renamed:1)

after_cut_checks() {
    expect_state_replayed "parses (as the next mount sees it)" 'type == "object" and .format == 1'
    expect_esp_clean
    NEXT_SLOT="$(bootctl_default)"
    case "$NEXT_SLOT" in
        B) ok "bootctl: B (6.0, good) boots next ($(esp_entries | tr '\n' ' '))" ;;
        A) expect_slot_holds A 7.0 "bootctl: A boots next ($(esp_entries | tr '\n' ' ')), and A holds 7.0 byte for byte" ;;
        *) bad "bootctl: no slot boots next ($(esp_entries | tr '\n' ' '))" ;;
    esac
}

# After a cut of the install, the next boot either tries the complete 7.0 in
# A and commits it, or installs 7.0 again from B.
update_recovered() {
    if [ "$NEXT_SLOT" = A ]; then
        expect_boot A 7.0
        expect_log 'ABTEST: health rc=0' "the trial of 7.0 is healthy and committed"
        # After a cut between the activation and the "staged" state
        # write too: the commit names the release from the transaction.
        expect_healthy_status A 7.0
        expect_status "nothing pending" '.transaction == null'
    else
        install_boot_checks B 6.0
        expect_slot_holds A 7.0 "the next boot installed 7.0 into A byte for byte"
        expect_sdboot_next A
    fi
}
# Either the commit's rename made it (A's entry without a counter), or A's
# entry has a try left (+1-1): systemd-boot tries it again and its health
# commits it.
health_recovered() {
    healthy_boot_checks A 7.0
    expect_sdboot_next A
}

scenario() {
    publish 6.0
    boot_vm install-v6 normal
    install_boot_checks A 5.0
    boot_vm trial-v6 normal
    healthy_boot_checks B 6.0
    publish 7.0
    cuts_save
    cut_each update B 6.0 after_cut_checks update_recovered "${UPDATE_CUTS[@]}"

    cuts_restore
    boot_vm install-v7 normal
    install_boot_checks B 6.0
    cuts_save
    cut_each health A 7.0 after_cut_checks health_recovered "${HEALTH_CUTS[@]}"
    cuts_drop
}
