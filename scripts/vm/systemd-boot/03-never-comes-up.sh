# v4 never comes up (its init panics): systemd-boot counts A's entry down on
# each try, +2 -> +1-1 -> +0-2 (abupdate-3-a+0-2.conf), then sorts it last and boots B (v2), whose
# health records v4 as failed.
TITLE="v4 never comes up: counted down to +0-2, systemd-boot falls back to v2, v4 recorded failed"
AFTER=02-health-fails
RELEASES="4.0:panics"
GUESTS="busybox systemd"

scenario() {
    publish 4.0
    boot_vm install-v4 normal
    install_boot_checks B 2.0
    expect_entries abupdate-2-b.conf abupdate-3-a+2.conf
    expect_sdboot_next A

    local try
    for try in 1 2; do
        boot_vm "trial-v4-$try" normal
        expect_boot A 4.0 normal panics
        expect_log 'ABTEST: init panics on purpose' "v4's init never comes up"
        expect_log 'Kernel panic' "kernel panicked"
        expect_no_log 'ABTEST: health' "no health verdict from v4"
        expect_ended exit
    done
    expect_entries abupdate-2-b.conf abupdate-3-a+0-2.conf
    expect_sdboot_next B
    expect_esp_clean

    boot_vm fallback normal
    expect_boot B 2.0
    expect_log 'ABTEST: health rc=0' "v2's health passed"
    expect_healthy_status B 2.0
    expect_retired_status A 4.0
    expect_log 'ABTEST: update rc=0' "update: nothing to install (v4 failed here)"
    expect_no_log 'ABTEST: reboot requested' "no reboot requested"
    expect_entries abupdate-2-b.conf abupdate-3-a+0-2.conf
    expect_failed_release 4.0
}
