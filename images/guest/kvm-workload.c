// SPDX-License-Identifier: GPL-2.0
/*
 * kvm-workload: several vCPU threads run a small real-mode guest that makes
 * many exits of different kinds, and check every value the guest produced.
 *
 * Each thread runs the one vCPU of its own VM, and all of them share one
 * CPU: under TCG's emulated SVM, two CPUs in guest mode at once left a
 * vCPU spinning in KVM_RUN now and then (5 runs in 34 of 8 s, whether the
 * vCPUs shared a VM or not); on one CPU they switch, which is what the
 * injector is to cause anyway.  The code page is at guest-physical 0x1000;
 * each vCPU starts with its own seed in %bx.
 * Every iteration of the guest:
 *
 *   inc %bx; out %ax=%bx to port 0x10            KVM_EXIT_IO (out)
 *   mov %ax -> [0x8000]                          KVM_EXIT_MMIO (write, emulated)
 *   mov [0x8002] -> %ax                          KVM_EXIT_MMIO (read, emulated)
 *   add %bx, %ax; out %ax to port 0x11           KVM_EXIT_IO (out)
 *   hlt                                          KVM_EXIT_HLT
 *
 * 0x8000 is outside every memory slot, so both MMIO accesses go through
 * KVM's instruction emulator.  The host answers the read with bx ^ 0x5a5a;
 * the guest's second port write must be that plus bx.  Any exit out of
 * order or with a wrong value is an error.
 *
 * Usage: kvm-workload [SECONDS [VCPUS]]   (default 10 s, 2 vCPUs)
 * Prints one line per vCPU (iterations, exits, voluntary context switches
 * of its thread) and exits 0 only if every vCPU ran and nothing was wrong.
 * A vCPU without a completed iteration for 30 s is reported as hung
 * (exit status 2) instead of hanging the suite.
 */
#define _GNU_SOURCE
#include <err.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kvm-guest.h"

#define MMIO_WRITE_GPA	0x8000
#define MMIO_READ_GPA	0x8002
#define PORT_VALUE	0x10
#define PORT_SUM	0x11
#define READ_XOR	0x5a5a
#define MAX_VCPUS	8
#define HUNG_SECONDS	30

static const uint8_t guest_code[] = {
	0xba, PORT_VALUE, 0x00,	/* mov $PORT_VALUE, %dx */
	/* loop: */
	0x43,			/* inc %bx */
	0x89, 0xd8,		/* mov %bx, %ax */
	0xef,			/* out %ax, (%dx) */
	0xa3, 0x00, 0x80,	/* mov %ax, 0x8000 */
	0xa1, 0x02, 0x80,	/* mov 0x8002, %ax */
	0x01, 0xd8,		/* add %bx, %ax */
	0xe7, PORT_SUM,		/* out %ax, $PORT_SUM */
	0xf4,			/* hlt */
	0xeb, 0xef,		/* jmp loop */
};

/* The exits of one iteration, in order. */
enum step { STEP_OUT_VALUE, STEP_MMIO_WRITE, STEP_MMIO_READ, STEP_OUT_SUM, STEP_HLT, STEP_NR };

struct vcpu {
	int id;
	int fd;
	pid_t tid;
	struct kvm_run *run;
	uint16_t bx;			/* what the guest's %bx must hold now */
	enum step step;
	atomic_ulong iterations;
	unsigned long exits;
	long voluntary_switches;
	char error[256];
};

static int kvm_fd, run_size;
static atomic_bool stopping;

static uint16_t port_value(struct kvm_run *run)
{
	uint16_t value;

	memcpy(&value, (uint8_t *)run + run->io.data_offset, sizeof(value));
	return value;
}

static uint16_t mmio_value(struct kvm_run *run)
{
	uint16_t value;

	memcpy(&value, run->mmio.data, sizeof(value));
	return value;
}

static int expect_out(struct vcpu *v, uint16_t port, uint16_t want)
{
	struct kvm_run *run = v->run;

	if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT ||
	    run->io.port != port || run->io.size != 2 || run->io.count != 1)
		return snprintf(v->error, sizeof(v->error),
				"step %d: exit %u, want a 2-byte out to port 0x%x",
				v->step, run->exit_reason, port);
	if (port_value(run) != want)
		return snprintf(v->error, sizeof(v->error),
				"port 0x%x: got 0x%04x, want 0x%04x", port, port_value(run), want);
	return 0;
}

static int expect_mmio(struct vcpu *v, uint64_t gpa, int is_write)
{
	struct kvm_run *run = v->run;

	if (run->exit_reason != KVM_EXIT_MMIO || run->mmio.phys_addr != gpa ||
	    run->mmio.len != 2 || run->mmio.is_write != is_write)
		return snprintf(v->error, sizeof(v->error),
				"step %d: exit %u, want a 2-byte MMIO %s at 0x%llx",
				v->step, run->exit_reason, is_write ? "write" : "read",
				(unsigned long long)gpa);
	return 0;
}

/* Check one exit against the step the guest is at; nonzero on a mismatch. */
static int check_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint16_t answer = v->bx ^ READ_XOR;

	if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
		return snprintf(v->error, sizeof(v->error),
				"step %d: KVM internal error, suberror %u, data %llx %llx %llx %llx",
				v->step, run->internal.suberror,
				(unsigned long long)run->internal.data[0],
				(unsigned long long)run->internal.data[1],
				(unsigned long long)run->internal.data[2],
				(unsigned long long)run->internal.data[3]);

	switch (v->step) {
	case STEP_OUT_VALUE:
		v->bx++;
		return expect_out(v, PORT_VALUE, v->bx);
	case STEP_MMIO_WRITE:
		if (expect_mmio(v, MMIO_WRITE_GPA, 1))
			return 1;
		if (mmio_value(run) != v->bx)
			return snprintf(v->error, sizeof(v->error),
					"MMIO write: got 0x%04x, want 0x%04x",
					mmio_value(run), v->bx);
		return 0;
	case STEP_MMIO_READ:
		if (expect_mmio(v, MMIO_READ_GPA, 0))
			return 1;
		memcpy(run->mmio.data, &answer, sizeof(answer));
		return 0;
	case STEP_OUT_SUM:
		return expect_out(v, PORT_SUM, (uint16_t)(answer + v->bx));
	case STEP_HLT:
		if (run->exit_reason != KVM_EXIT_HLT)
			return snprintf(v->error, sizeof(v->error),
					"step %d: exit %u, want HLT", v->step, run->exit_reason);
		return 0;
	default:
		return snprintf(v->error, sizeof(v->error), "bad step %d", v->step);
	}
}

static void setup_vcpu(struct vcpu *v)
{
	struct kvm_regs regs;

	v->bx = (uint16_t)(v->id << 12);
	regs = (struct kvm_regs) { .rip = CODE_GPA, .rbx = v->bx, .rflags = 0x2 };
	v->fd = kvm_real_mode_vcpu(kvm_vm_with_code(kvm_fd, guest_code, sizeof(guest_code)),
				   run_size, &regs, &v->run);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct rusage usage;

	v->tid = gettid();
	while (!atomic_load(&stopping) && !v->error[0]) {
		if (ioctl(v->fd, KVM_RUN, NULL) < 0) {
			snprintf(v->error, sizeof(v->error), "KVM_RUN: %m");
			break;
		}
		v->exits++;
		if (check_exit(v))
			break;
		if (++v->step == STEP_NR) {
			v->step = STEP_OUT_VALUE;
			atomic_fetch_add(&v->iterations, 1);
		}
	}
	getrusage(RUSAGE_THREAD, &usage);
	v->voluntary_switches = usage.ru_nvcsw;
	return NULL;
}

/* The first line of /proc/self/task/TID/NAME into @line, "?" if unreadable. */
static void read_task_file(pid_t tid, const char *name, char *line, int size)
{
	char path[64];
	FILE *file;

	snprintf(path, sizeof(path), "/proc/self/task/%d/%s", tid, name);
	file = fopen(path, "r");
	if (!file || !fgets(line, size, file))
		snprintf(line, size, "?");
	if (file)
		fclose(file);
	line[strcspn(line, "\n")] = 0;
}

/* What a hung vCPU thread is doing, for the report. */
static void describe_hang(struct vcpu *v)
{
	char wchan[64], stat[256];

	read_task_file(v->tid, "wchan", wchan, sizeof(wchan));
	read_task_file(v->tid, "stat", stat, sizeof(stat));
	printf("kvm-workload: vcpu %d (thread %d) hung at step %d after %lu iterations, %lu exits: wchan %s, stat %s\n",
	       v->id, v->tid, v->step, atomic_load(&v->iterations), v->exits, wchan, stat);
}

/* Sleep until the deadline; a vCPU without progress for HUNG_SECONDS ends the run. */
static void watch(struct vcpu *vcpus, int nr, int seconds)
{
	unsigned long seen[MAX_VCPUS] = { 0 };
	int still[MAX_VCPUS] = { 0 };
	int elapsed, i;

	for (elapsed = 0; elapsed < seconds; elapsed++) {
		sleep(1);
		for (i = 0; i < nr; i++) {
			unsigned long now = atomic_load(&vcpus[i].iterations);

			still[i] = now == seen[i] && !vcpus[i].error[0] ? still[i] + 1 : 0;
			seen[i] = now;
			if (still[i] >= HUNG_SECONDS) {
				printf("kvm-workload: vcpu %d: no completed iteration for %d s: KVM_RUN hung\n",
				       i, HUNG_SECONDS);
				describe_hang(&vcpus[i]);
				_exit(2);
			}
		}
	}
}

int main(int argc, char **argv)
{
	struct vcpu vcpus[MAX_VCPUS] = { 0 };
	pthread_t threads[MAX_VCPUS];
	struct timespec deadline;
	cpu_set_t cpu;
	unsigned long iterations = 0, exits = 0;
	long switches = 0;
	int seconds = argc > 1 ? atoi(argv[1]) : 10;
	int nr = argc > 2 ? atoi(argv[2]) : 2;
	int i, failed = 0;

	if (argc > 3 || seconds < 1 || nr < 1 || nr > MAX_VCPUS)
		errx(1, "usage: kvm-workload [SECONDS [VCPUS (1..%d)]]", MAX_VCPUS);
	setvbuf(stdout, NULL, _IOLBF, 0);
	kvm_fd = kvm_open(&run_size);
	for (i = 0; i < nr; i++) {
		vcpus[i].id = i;
		setup_vcpu(&vcpus[i]);
	}
	printf("kvm-workload: pid %d, %d vCPUs on CPU %d for %d s\n", getpid(), nr,
	       sched_getcpu(), seconds);
	CPU_ZERO(&cpu);
	CPU_SET(sched_getcpu(), &cpu);
	if (sched_setaffinity(0, sizeof(cpu), &cpu))
		err(1, "sched_setaffinity");
	for (i = 0; i < nr; i++)	/* threads inherit the affinity */
		if (pthread_create(&threads[i], NULL, vcpu_thread, &vcpus[i]))
			errx(1, "pthread_create");
	watch(vcpus, nr, seconds);
	atomic_store(&stopping, true);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += HUNG_SECONDS;
	for (i = 0; i < nr; i++) {
		struct vcpu *v = &vcpus[i];
		unsigned long done;

		if (pthread_timedjoin_np(threads[i], NULL, &deadline)) {
			printf("kvm-workload: vcpu %d did not return from KVM_RUN within %d s: hung\n",
			       i, HUNG_SECONDS);
			describe_hang(v);
			_exit(2);
		}
		done = atomic_load(&v->iterations);
		printf("kvm-workload: vcpu %d iterations %lu exits %lu voluntary_switches %ld%s%s\n",
		       i, done, v->exits, v->voluntary_switches,
		       v->error[0] ? " error: " : "", v->error);
		failed |= v->error[0] || !done;
		iterations += done;
		exits += v->exits;
		switches += v->voluntary_switches;
	}
	printf("kvm-workload: total iterations %lu exits %lu voluntary_switches %ld: %s\n",
	       iterations, exits, switches, failed ? "FAILED" : "all values correct");
	return failed;
}
