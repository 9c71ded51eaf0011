# v3's health check fails: rolled back to v2, and v3 is never installed again.
TITLE="v3 fails its health check: rollback to v2, never installed again"
AFTER=02-update
RELEASES="3.0:health-fails"

scenario() {
    publish 3.0
    boot_vm install-v3 normal
    install_boot_checks B 2.0
    note_install_time
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1

    boot_vm trial-v3 normal
    expect_boot A 3.0
    expect_log 'ABTEST: health start' "health ran"
    expect_log 'release 3.0 is broken on purpose' "the failing health check ran"
    expect_no_log 'ABTEST: health rc=0' "health did not pass"
    expect_log 'ABTEST: reboot requested' "health rolled back and ran the reboot command"
    expect_no_log 'ABTEST: update start' "no update attempted after a failed verdict"
    expect_ended exit
    expect_env ORDER="B A" A_OK=0 A_TRY=0 B_OK=1

    local gets; gets="$(http_gets 'rootfs-3\.0[^ ]*')"
    boot_vm back-on-v2 normal
    healthy_boot_checks B 2.0
    expect_no_log 'writing rootfs 3\.0' "v3 not written again"
    expect_env ORDER="B A" A_OK=0 B_OK=1 B_TRY=0
    expect_retired_status A 3.0
    expect_failed_release 3.0
    boot_vm later-boot normal
    healthy_boot_checks B 2.0
    expect_env ORDER="B A" A_OK=0 B_OK=1 B_TRY=0
    if [ "$(http_gets 'rootfs-3\.0[^ ]*')" = "$gets" ]; then ok "v3's payload was not downloaded again on 2 later boots"
    else bad "v3's payload was downloaded again"; fi
}
