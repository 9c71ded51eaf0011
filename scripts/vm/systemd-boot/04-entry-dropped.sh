# Slot A's entry file is gone from the ESP (deleted on the host): `update`
# writes it again from config before it makes it the trial; systemd-boot
# boots it; health commits it.
TITLE="A's loader entry deleted from the ESP before an update: written from config, booted, committed"
AFTER=03-never-comes-up
RELEASES="5.0:good"

scenario() {
    esp_delete "/loader/entries/abupdate-3-a+0-2.conf"
    expect_entries abupdate-2-b.conf
    publish 5.0
    boot_vm install-v5 normal
    install_boot_checks B 2.0
    expect_log 'slot A: no boot entry on the ESP; writing abupdate-[0-9]+-a' "abupdate wrote A's entry from config"
    local name
    name="$(esp_entries | grep -- '-a+2\.conf$' || true)"
    if [ -n "$name" ]; then ok "A's trial entry: $name"; else bad "no A entry with +2 on the ESP ($(esp_entries | tr '\n' ' '))"; fi
    if [ -n "$name" ] && mtype -i "$(esp_img)" "::/loader/entries/$name" | cmp -s - <(sdboot_entry A); then
        ok "$name says what the config says (title, linux, initrd, options with abupdate.slot=A)"
    else
        bad "$name differs from the entry the config describes: $(mtype -i "$(esp_img)" "::/loader/entries/$name" 2>&1 | tr '\n' '|')"
    fi
    expect_sdboot_next A

    boot_vm trial-v5 normal
    healthy_boot_checks A 5.0
    expect_entries abupdate-2-b.conf "${name%+2.conf}.conf"
    expect_sdboot_next A
    expect_esp_clean
}
