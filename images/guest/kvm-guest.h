/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What kvm-hlt and kvm-workload share: a VM whose only memory is one page
 * of real-mode code at guest-physical CODE_GPA, and vCPUs starting there.
 * Every failure ends the program with a message (err(3)).
 */
#ifndef KVM_GUEST_H
#define KVM_GUEST_H

#include <err.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#define CODE_GPA	0x1000

/* /dev/kvm, its API version checked; *run_size: the size of a vCPU's kvm_run. */
static int kvm_open(int *run_size)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (kvm < 0)
		err(1, "/dev/kvm");
	if (ioctl(kvm, KVM_GET_API_VERSION, NULL) != KVM_API_VERSION)
		errx(1, "unexpected KVM API version");
	*run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, NULL);
	if (*run_size <= 0)
		err(1, "KVM_GET_VCPU_MMAP_SIZE");
	return kvm;
}

/* A new VM with @code (at most a page) at CODE_GPA. */
static int kvm_vm_with_code(int kvm, const void *code, size_t size)
{
	struct kvm_userspace_memory_region region;
	uint8_t *mem;
	int vm;

	vm = ioctl(kvm, KVM_CREATE_VM, 0UL);
	if (vm < 0)
		err(1, "KVM_CREATE_VM");
	mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		err(1, "mmap guest memory");
	memcpy(mem, code, size);
	region = (struct kvm_userspace_memory_region) {
		.slot = 0, .guest_phys_addr = CODE_GPA, .memory_size = 0x1000,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		err(1, "KVM_SET_USER_MEMORY_REGION");
	return vm;
}

/*
 * A vCPU of @vm in real mode, CS and DS based at 0, with @regs (rip, flags
 * and whatever the code expects); its kvm_run is mapped into *run.
 */
static int kvm_real_mode_vcpu(int vm, int run_size, const struct kvm_regs *regs,
			      struct kvm_run **run)
{
	struct kvm_sregs sregs;
	int vcpu;

	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0UL);
	if (vcpu < 0)
		err(1, "KVM_CREATE_VCPU");
	*run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (*run == MAP_FAILED)
		err(1, "mmap kvm_run");
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		err(1, "KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	sregs.ds.base = 0;
	sregs.ds.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		err(1, "KVM_SET_SREGS");
	if (ioctl(vcpu, KVM_SET_REGS, regs) < 0)
		err(1, "KVM_SET_REGS");
	return vcpu;
}

#endif /* KVM_GUEST_H */
