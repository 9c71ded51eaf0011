# abupdate A/B slot selection for U-Boot, with RAUC's variables.
#
# Build:  mkimage -A arm -T script -C none -n "abupdate boot" -d boot.cmd boot.scr
# (use -A arm64 on 64-bit boards). Needs CONFIG_CMD_SETEXPR, CONFIG_HUSH_PARSER
# and a writable environment (saveenv), ideally redundant
# (CONFIG_SYS_REDUNDAND_ENVIRONMENT) so a power cut during saveenv is harmless.
#
# Contract with abupdate (src/boot/uboot.rs) and RAUC:
#   BOOT_ORDER    slots in the order they are tried; "A B" when unset
#   BOOT_A_LEFT   boot attempts left for A, hexadecimal as setexpr writes
#   BOOT_B_LEFT   the same for B; 3 when unset
# Each boot takes one attempt from the first slot in BOOT_ORDER that has any
# left, and saves that before the kernel starts, so a slot that never comes
# up runs out of attempts and the next slot in BOOT_ORDER boots. Userspace
# resets the counter when the slot is healthy (mark good), removes a slot
# from BOOT_ORDER when it is bad, and puts a new slot first to try it. When no
# slot has attempts left, both counters go back to 3 and the board restarts
# (as RAUC's script does): the first slot in BOOT_ORDER boots again.
#
# The kernel learns its slot from "abupdate.slot=X rauc.slot=X" on the
# command line.
#
# Board settings (put them in the default environment; these are examples):
#   abupdate_load_A / abupdate_load_B   "interface dev:part" holding the kernel
#   abupdate_root_A / abupdate_root_B   root= for the kernel
#   abupdate_boot                        commands that load and start the
#                                        kernel from ${abupdate_load}
#   default_bootargs                     other kernel arguments

test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

test -n "${abupdate_load_A}" || setenv abupdate_load_A "mmc 0:2"
test -n "${abupdate_load_B}" || setenv abupdate_load_B "mmc 0:3"
test -n "${abupdate_root_A}" || setenv abupdate_root_A "/dev/mmcblk0p2"
test -n "${abupdate_root_B}" || setenv abupdate_root_B "/dev/mmcblk0p3"
test -n "${abupdate_boot}" || setenv abupdate_boot 'load ${abupdate_load} ${kernel_addr_r} /boot/zImage && load ${abupdate_load} ${fdt_addr_r} /boot/${fdtfile} && bootz ${kernel_addr_r} - ${fdt_addr_r}'

setenv abupdate_slot
# The quoted list is split into words by U-Boot's hush, as in RAUC's script.
for BOOT_SLOT in "${BOOT_ORDER}"; do
  if test -z "${abupdate_slot}"; then
    if test "x${BOOT_SLOT}" = "xA"; then
      # 0x: test reads decimal otherwise, and the counter is hexadecimal.
      if test 0x${BOOT_A_LEFT} -gt 0; then
        echo "abupdate: booting slot A, ${BOOT_A_LEFT} attempts left"
        setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
        setenv abupdate_slot A
        setenv abupdate_load "${abupdate_load_A}"
        setenv abupdate_root "${abupdate_root_A}"
      fi
    elif test "x${BOOT_SLOT}" = "xB"; then
      if test 0x${BOOT_B_LEFT} -gt 0; then
        echo "abupdate: booting slot B, ${BOOT_B_LEFT} attempts left"
        setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
        setenv abupdate_slot B
        setenv abupdate_load "${abupdate_load_B}"
        setenv abupdate_root "${abupdate_root_B}"
      fi
    fi
  fi
done

if test -n "${abupdate_slot}"; then
  # Save the spent attempt before anything can hang.
  saveenv
else
  echo "abupdate: no slot has attempts left; resetting both to 3"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
  saveenv
  reset
fi

setenv bootargs "${default_bootargs} root=${abupdate_root} abupdate.slot=${abupdate_slot} rauc.slot=${abupdate_slot}"
run abupdate_boot
# Loading or starting the kernel failed: the attempt is already spent, so a
# restart moves on towards the next slot.
echo "abupdate: booting slot ${abupdate_slot} failed; restarting"
reset
