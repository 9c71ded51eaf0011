# v9 passes its health check and is committed, then crashes on every boot
# (PID 1 exits after the verdict: no clean-shutdown mark). On its 24 h
# probation each restart without the mark counts; the third (more than
# probation_failures = 2) rolls it back late to v2, which slot B still holds:
# nothing was written to B since (README "Probation").
TITLE="v9 crashes after its commit: three unclean restarts on probation, rolled back late to v2"
AFTER=02-update
RELEASES="9.0:crashes-after-commit"

# One crash boot of v9 on probation: health ran from A (exit EXPECT_RC),
# then PID 1 exited and the kernel panicked.
probation_crash_checks() { # FAILURES
    expect_boot A 9.0
    expect_log 'ABTEST: health rc=0' "health exit 0 (on probation, within its limit)"
    expect_status "on probation: 9.0 in A, $1 failure(s) so far" \
        '.probation.slot == "A" and .probation.version == "9.0" and .probation.failures == ($n | tonumber)
         and .probation.passed == null' --arg n "$1"
    expect_log 'ABTEST: init panics on purpose after health' "v9 crashed after its verdict"
    expect_log 'Kernel panic' "kernel panicked"
    expect_no_log 'ABTEST: update start' "no update after the crash"
    expect_ended exit
    expect_env ORDER="A B" A_OK=1 B_OK=1
}

scenario() {
    publish 9.0
    boot_vm install-v9 normal
    install_boot_checks B 2.0
    expect_env ORDER="A B" A_OK=1 A_TRY=0 B_OK=1

    # The trial: health commits v9 and starts its probation; then the crash.
    boot_vm trial-v9 normal
    expect_log 'committed' "health committed v9"
    probation_crash_checks 0

    boot_vm crash-1 normal
    probation_crash_checks 1
    boot_vm crash-2 normal
    probation_crash_checks 2

    # The third unclean restart: rolled back late before the checks run.
    boot_vm crash-3 normal
    expect_boot A 9.0
    expect_log 'rolling back 9\.0 in slot A late: failed on probation: 3 failures' \
        "health rolls back late on the third unclean restart"
    expect_log 'ABTEST: reboot requested' "health ran the reboot command"
    expect_no_log 'ABTEST: health rc=' "health did not return (it rebooted)"
    expect_no_log 'ABTEST: init panics on purpose' "rolled back before the crash"
    expect_ended exit
    expect_env ORDER="B A" A_OK=0 B_OK=1

    # v2 boots from B, untouched; v9 is on the failed list, never fetched again.
    local gets; gets="$(http_gets 'rootfs-9\.0[^ ]*')"
    boot_vm back-on-v2 normal
    healthy_boot_checks B 2.0
    expect_retired_status A 9.0
    expect_failed_release 9.0
    expect_state "v9's failure says probation" \
        '.failed | map(select(.version == "9.0" and (.reason | test("probation")))) | length == 1'
    expect_no_log 'writing rootfs 9\.0' "v9 not written again"
    if [ "$(http_gets 'rootfs-9\.0[^ ]*')" = "$gets" ]; then ok "v9's payload was not downloaded again"
    else bad "v9's payload was downloaded again"; fi
}
