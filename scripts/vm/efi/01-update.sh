# v1 in slot A boots and health keeps it; `update` finds v2, writes slot B and
# makes B's Boot#### entry BootNext (one try); OVMF boots it and deletes
# BootNext; health commits: B's entry first in BootOrder; B boots again.
TITLE="update to v2: BootNext trial of B, health commits, BootOrder B first, B boots again"
AFTER=""
RELEASES="1.0:good 2.0:good"
GUESTS="busybox systemd"

scenario() {
    # The factory NVRAM: both entries, only A's in BootOrder (B is empty: bad).
    expect_efi ORDER="A" NEXT=none
    expect_efi_entry A
    expect_efi_entry B
    publish 2.0
    boot_vm install-v2 normal
    install_boot_checks A 1.0
    note_install_time
    # B stays out of BootOrder (bad) until its trial passes; BootNext names
    # it for one boot.
    expect_efi ORDER="A" NEXT=B
    expect_efi_next B
    expect_slot_holds B 2.0

    boot_vm trial-v2 normal
    healthy_boot_checks B 2.0
    expect_efi ORDER="B A" NEXT=none

    boot_vm next-boot normal
    healthy_boot_checks B 2.0
    expect_efi ORDER="B A" NEXT=none
}
