// SPDX-License-Identifier: GPL-2.0
/*
 * kvm-hlt: run a tiny real-mode guest under KVM and check what it did.
 *
 * The guest adds two registers, writes the sum as an ASCII digit to port
 * 0x3f8 and halts.  Exit status 0 only if KVM delivered exactly that port
 * write and then KVM_EXIT_HLT; a diagnostic line on stdout either way.
 */
#include <err.h>
#include <signal.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kvm-guest.h"

static volatile sig_atomic_t exits;

static void on_alarm(int sig)
{
	static const char msg[] = "no KVM exit for 30 s: KVM_RUN hung\n";

	(void)sig;
	write(STDOUT_FILENO, msg, sizeof(msg) - 1);
	_exit(2);
}

static const uint8_t guest_code[] = {
	0xba, 0xf8, 0x03,	/* mov $0x3f8, %dx */
	0x00, 0xd8,		/* add %bl, %al */
	0x04, '0',		/* add $'0', %al */
	0xee,			/* out %al, (%dx) */
	0xf4,			/* hlt */
};

int main(void)
{
	const struct kvm_regs regs = { .rip = CODE_GPA, .rax = 2, .rbx = 2, .rflags = 0x2 };
	struct kvm_run *run;
	int kvm, vcpu, run_size, outputs = 0;
	char output = 0;

	/* A stuck KVM_RUN is interrupted by the signal: a failure, not a hang. */
	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGALRM, on_alarm);
	alarm(30);
	kvm = kvm_open(&run_size);
	vcpu = kvm_real_mode_vcpu(kvm_vm_with_code(kvm, guest_code, sizeof(guest_code)),
				  run_size, &regs, &run);

	for (;;) {
		printf("KVM_RUN %d\n", ++exits);
		if (ioctl(vcpu, KVM_RUN, NULL) < 0)
			err(1, "KVM_RUN");
		printf("KVM exit reason %u\n", run->exit_reason);
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.direction != KVM_EXIT_IO_OUT || run->io.port != 0x3f8 ||
			    run->io.size != 1 || run->io.count != 1)
				errx(1, "unexpected port I/O at 0x%x", run->io.port);
			output = *((char *)run + run->io.data_offset);
			outputs++;
			break;
		case KVM_EXIT_HLT:
			if (outputs != 1 || output != '4')
				errx(1, "guest halted after %d writes, last '%c' (want one '4')",
				     outputs, output);
			printf("guest wrote '%c' and halted\n", output);
			return 0;
		default:
			errx(1, "unexpected exit reason %u", run->exit_reason);
		}
	}
}
