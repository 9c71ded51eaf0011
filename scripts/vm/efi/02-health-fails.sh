# v3's health check fails: A's entry stays out of BootOrder, B (v2) boots
# again, and v3 is never installed again.
TITLE="v3 fails its health check: A's entry never in BootOrder, back on v2, never installed again"
AFTER=01-update
RELEASES="3.0:health-fails"

scenario() {
    publish 3.0
    boot_vm install-v3 normal
    install_boot_checks B 2.0
    # A marked bad (its entry left BootOrder) before its first byte changed,
    # then BootNext = A for the trial.
    expect_efi ORDER="B" NEXT=A

    boot_vm trial-v3 normal
    expect_boot A 3.0
    expect_log 'ABTEST: health start' "health ran"
    expect_log 'release 3.0 is broken on purpose' "the failing health check ran"
    expect_no_log 'ABTEST: health rc=0' "health did not pass"
    expect_log 'ABTEST: reboot requested' "health rolled back and ran the reboot command"
    expect_no_log 'ABTEST: update start' "no update attempted after a failed verdict"
    expect_ended exit
    # Nothing to write: BootNext was used up by the firmware, and B is first.
    expect_efi ORDER="B" NEXT=none
    expect_efi_next B

    local gets; gets="$(http_gets 'rootfs-3\.0[^ ]*')"
    boot_vm back-on-v2 normal
    healthy_boot_checks B 2.0
    expect_no_log 'writing rootfs 3\.0' "v3 not written again"
    expect_efi ORDER="B" NEXT=none
    expect_retired_status A 3.0
    expect_failed_release 3.0
    if [ "$(http_gets 'rootfs-3\.0[^ ]*')" = "$gets" ]; then ok "v3's payload was not downloaded again"
    else bad "v3's payload was downloaded again"; fi
}
