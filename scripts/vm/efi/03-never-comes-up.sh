# v4 never comes up (its init panics): OVMF deleted BootNext as it started
# A's entry, so the reset after the panic boots BootOrder's first, B (v2),
# whose health records v4 as failed.
TITLE="v4 never comes up: BootNext used up, the firmware returns to BootOrder (v2), v4 recorded failed"
AFTER=02-health-fails
RELEASES="4.0:panics"

scenario() {
    publish 4.0
    boot_vm install-v4 normal
    install_boot_checks B 2.0
    expect_efi ORDER="B" NEXT=A

    boot_vm trial-v4 normal
    expect_boot A 4.0 normal panics
    expect_log 'ABTEST: init panics on purpose' "v4's init never comes up"
    expect_log 'Kernel panic' "kernel panicked"
    expect_no_log 'ABTEST: health' "no health verdict from v4"
    expect_ended exit
    # One try: the firmware deleted BootNext before starting the entry.
    expect_efi ORDER="B" NEXT=none
    expect_efi_next B

    boot_vm fallback normal
    expect_boot B 2.0
    expect_log 'ABTEST: health rc=0' "v2's health passed"
    expect_healthy_status B 2.0
    expect_retired_status A 4.0
    expect_log 'ABTEST: update rc=0' "update: nothing to install (v4 failed here)"
    expect_no_log 'ABTEST: reboot requested' "no reboot requested"
    expect_efi ORDER="B" NEXT=none
    expect_failed_release 4.0
}
