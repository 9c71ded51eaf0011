# Power cuts during the variable writes of an install and of a commit.  The
# running release (6.0) and the offered one (7.0) are failpoints builds: the
# guest aborts abupdate right after its Nth variable write (efivar-written:N;
# each is one SetVariable(), which edk2 keeps fault-tolerant) or at a named
# step, and powers off at once without sync.  Every cut starts from the same
# disk and NVRAM.  After each: the NVRAM reads back, the entry the firmware
# boots next is a good slot's (B, 6.0) or the new slot's holding 7.0 byte
# for byte, and the next boots recover.
TITLE="power cut at each EFI variable write of an install and of the commit: a good slot boots, recovery"
AFTER=04-entry-dropped
RELEASES="6.0:good:failpoints 7.0:good:failpoints"

# update from B (BootOrder A,B… before): A out of BootOrder (write 1), then
# BootNext = A (write 2); activated and staged follow.
UPDATE_CUTS=(target-marked-bad efivar-written:1 efivar-written:2 activated)
# health of the trial of 7.0 in A: the verdict, then BootOrder = A,B (write 1).
HEALTH_CUTS=(health-verdict efivar-written:1)

after_cut_checks() { # what must hold on the disk and NVRAM after any cut
    expect_state_replayed "parses (as the next mount sees it)" 'type == "object" and .format == 1'
    local list n slot
    list="$(nvram_list)"
    n="$(nvram_next_entry "$list")"; slot="$(nvram_slot_of "$n" "$list")"
    case "$slot" in
        B) ok "the firmware boots B (6.0, good) next: Boot$n ($(nvram_vars))" ;;
        A) expect_slot_holds A 7.0 "the firmware boots A next ($(nvram_vars)), and A holds 7.0 byte for byte" ;;
        *) bad "the firmware boots '${n:-nothing}' next, no slot ($(nvram_vars))" ;;
    esac
    NEXT_SLOT="$slot"
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
        expect_efi ORDER="A B" NEXT=none
    else
        install_boot_checks B 6.0
        expect_slot_holds A 7.0 "the next boot installed 7.0 into A byte for byte"
        expect_efi ORDER="B" NEXT=A
    fi
}
health_recovered() {
    if [ "$NEXT_SLOT" = A ]; then
        # The commit's BootOrder write made it: A boots, its health
        # finishes the commit.
        healthy_boot_checks A 7.0
        expect_efi ORDER="A B" NEXT=none
    else
        # Cut before the commit: BootNext was one boot, so the firmware
        # returns to B, which records 7.0 as a trial that never came up
        # (the one-shot semantics of BootNext; a good slot boots).
        expect_boot B 6.0
        expect_log 'ABTEST: health rc=0' "B's health passed"
        expect_retired_status A 7.0
        expect_failed_release 7.0
        expect_efi ORDER="B" NEXT=none
    fi
}

scenario() {
    publish 6.0
    boot_vm install-v6 normal
    install_boot_checks A 5.0
    boot_vm trial-v6 normal
    healthy_boot_checks B 6.0
    expect_efi ORDER="B A" NEXT=none
    publish 7.0
    cuts_save
    cut_each update B 6.0 after_cut_checks update_recovered "${UPDATE_CUTS[@]}"

    # The commit: from a complete install of 7.0 (BootNext = A).
    cuts_restore
    boot_vm install-v7 normal
    install_boot_checks B 6.0
    cuts_save
    cut_each health A 7.0 after_cut_checks health_recovered "${HEALTH_CUTS[@]}"
    cuts_drop
}
