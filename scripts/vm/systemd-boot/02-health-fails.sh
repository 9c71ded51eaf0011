# v3's health check fails: A's trial entry is marked bad (+0), systemd-boot
# boots B (v2) again, and v3 is never installed again.  On the systemd guest
# boot-complete.target is never reached on the failed boot, so
# systemd-bless-boot.service never marks A's entry good.
TITLE="v3 fails its health check: A's entry +0, back on v2, never installed again"
AFTER=01-update
RELEASES="3.0:health-fails"
GUESTS="busybox systemd"

scenario() {
    publish 3.0
    boot_vm install-v3 normal
    install_boot_checks B 2.0
    expect_entries abupdate-2-b.conf abupdate-3-a+2.conf
    expect_sdboot_next A

    boot_vm trial-v3 normal
    expect_boot A 3.0
    expect_log 'ABTEST: health start' "health ran"
    expect_log 'release 3.0 is broken on purpose' "the failing health check ran"
    expect_no_log 'ABTEST: health rc=0' "health did not pass"
    expect_log 'ABTEST: reboot requested' "health rolled back and ran the reboot command"
    expect_no_log 'ABTEST: update start' "no update attempted after a failed verdict"
    expect_ended exit
    expect_entries abupdate-2-b.conf abupdate-3-a+0-1.conf
    expect_sdboot_next B
    expect_esp_clean
    if [ "$GUEST" = systemd ]; then
        expect_journal 'release 3\.0 is broken on purpose' "the failed check is in the journal" \
            -u abupdate-health.service -b -0
        if guest_journal -o cat -u systemd-bless-boot.service -b -0 | grep -q .; then
            bad "systemd-bless-boot.service ran on the failed boot: $(guest_journal -o cat -u systemd-bless-boot.service -b -0 | head -n 2 | tr '\n' ' ')"
        else
            ok "journal: systemd-bless-boot.service never ran on the failed boot"
        fi
    fi

    local gets; gets="$(http_gets 'rootfs-3\.0[^ ]*')"
    boot_vm back-on-v2 normal
    healthy_boot_checks B 2.0
    expect_entries abupdate-2-b.conf abupdate-3-a+0-1.conf
    expect_retired_status A 3.0
    expect_failed_release 3.0
    if [ "$(http_gets 'rootfs-3\.0[^ ]*')" = "$gets" ]; then ok "v3's payload was not downloaded again"
    else bad "v3's payload was downloaded again"; fi
}
