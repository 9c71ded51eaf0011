# The firmware dropped slot A's Boot#### entry (deleted from the NVRAM on
# the host, as firmware does after a reset of its store or a power cut):
# `update` recreates it from config (loader, partition, options) before
# BootNext names it; OVMF boots the recreated entry; health commits it.
TITLE="A's Boot#### entry dropped from NVRAM before an update: recreated from config, booted, committed"
AFTER=03-never-comes-up
RELEASES="5.0:good"

scenario() {
    local old new
    old="$(nvram_entry A)"
    nvram_delete "Boot$old"
    if [ -z "$(nvram_entry A)" ]; then ok "slot A's entry Boot$old deleted from the NVRAM"
    else bad "slot A's entry is still there after deleting Boot$old"; fi
    publish 5.0
    boot_vm install-v5 normal
    install_boot_checks B 2.0
    expect_log 'slot A: the firmware has no boot entry for it; recreating Boot[0-9A-F]{4} from config' \
        "abupdate noticed the missing entry and recreated it"
    new="$(nvram_entry A)"
    if [ -n "$new" ]; then ok "slot A has an entry again: Boot$new"; else bad "slot A has no entry after the install"; fi
    expect_efi_entry A
    expect_efi ORDER="B" NEXT=A

    boot_vm trial-v5 normal
    healthy_boot_checks A 5.0
    expect_efi ORDER="A B" NEXT=none
    expect_efi_entry A

    boot_vm next-boot normal
    healthy_boot_checks A 5.0
    expect_efi ORDER="A B" NEXT=none
}
