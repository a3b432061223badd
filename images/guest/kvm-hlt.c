// SPDX-License-Identifier: GPL-2.0
/*
 * kvm-hlt: run a tiny real-mode guest under KVM and check what it did.
 *
 * The guest adds two registers, writes the sum as an ASCII digit to port
 * 0x3f8 and halts.  Exit status 0 only if KVM delivered exactly that port
 * write and then KVM_EXIT_HLT; a diagnostic line on stdout either way.
 */
#include <err.h>
#include <fcntl.h>
#include <signal.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

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
	struct kvm_userspace_memory_region region;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	int kvm, vm, vcpu, run_size, outputs = 0;
	char output = 0;
	uint8_t *mem;

	/* A stuck KVM_RUN is interrupted by the signal: a failure, not a hang. */
	setvbuf(stdout, NULL, _IONBF, 0);
	signal(SIGALRM, on_alarm);
	alarm(30);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		err(1, "/dev/kvm");
	if (ioctl(kvm, KVM_GET_API_VERSION, NULL) != KVM_API_VERSION)
		errx(1, "unexpected KVM API version");
	vm = ioctl(kvm, KVM_CREATE_VM, 0UL);
	if (vm < 0)
		err(1, "KVM_CREATE_VM");

	mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		err(1, "mmap");
	memcpy(mem, guest_code, sizeof(guest_code));
	region = (struct kvm_userspace_memory_region) {
		.slot = 0, .guest_phys_addr = 0x1000, .memory_size = 0x1000,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		err(1, "KVM_SET_USER_MEMORY_REGION");

	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0UL);
	if (vcpu < 0)
		err(1, "KVM_CREATE_VCPU");
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, NULL);
	run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		err(1, "mmap kvm_run");

	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		err(1, "KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		err(1, "KVM_SET_SREGS");
	regs = (struct kvm_regs) { .rip = 0x1000, .rax = 2, .rbx = 2, .rflags = 0x2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		err(1, "KVM_SET_REGS");

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
