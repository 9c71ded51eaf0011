# v1 in slot A boots; `update` finds v2, writes slot B and renames B's entry
# to a newer generation with +2 tries: systemd-boot's default.  systemd-boot
# counts it down (+1-1) and boots it; health commits (the counter dropped);
# B boots again.  On the systemd guest the shipped units do it all:
# abupdate.timer fires update, abupdate-health.service runs before
# boot-complete.target, and systemd-bless-boot.service (pulled in on the
# counted boot) runs only after the good verdict.
TITLE="update to v2: B's entry +2 and first, counted down, health commits, B boots again"
AFTER=""
RELEASES="1.0:good 2.0:good"
GUESTS="busybox systemd"

scenario() {
    expect_entries abupdate-1-a.conf abupdate-0-b+0.conf
    expect_sdboot_next A
    publish 2.0
    boot_vm install-v2 normal
    install_boot_checks A 1.0
    note_install_time
    expect_entries abupdate-1-a.conf abupdate-2-b+2.conf
    expect_sdboot_next B
    expect_slot_holds B 2.0
    expect_esp_clean

    boot_vm trial-v2 normal
    healthy_boot_checks B 2.0
    expect_entries abupdate-1-a.conf abupdate-2-b.conf
    expect_sdboot_next B
    if [ "$GUEST" = systemd ]; then
        expect_log 'ABTEST: loader-at-boot selected=abupdate-2-b[^ ]* count-path=[^ ]*abupdate-2-b\+1-1\.conf' \
            "systemd-boot told the OS it counts this boot (LoaderBootCountPath)"
        expect_log 'ABTEST: bless-boot state=active result=success ran=after-verdict boot-complete=active' \
            "systemd-bless-boot.service ran after abupdate-health.service's good verdict"
        expect_journal 'committed 2\.0 in slot B' "abupdate-health.service committed 2.0" -u abupdate-health.service -b -0
    fi
    expect_esp_clean

    boot_vm next-boot normal
    healthy_boot_checks B 2.0
    expect_entries abupdate-1-a.conf abupdate-2-b.conf
    if [ "$GUEST" = systemd ]; then
        expect_log 'ABTEST: bless-boot state=inactive .*ran=no-run' \
            "an uncounted boot pulls in no systemd-bless-boot.service"
    fi
}
