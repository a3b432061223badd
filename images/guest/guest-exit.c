// SPDX-License-Identifier: GPL-2.0
/*
 * guest-exit: end the test guest.  PID 1 has no init system to ask, and
 * tinyconfig has no ACPI, so power-off would only halt; QEMU runs with
 * -no-reboot, so a reboot makes it exit instead.
 */
#include <err.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
	sync();
	reboot(RB_AUTOBOOT);
	err(1, "reboot");
}
