/* SPDX-License-Identifier: GPL-2.0 */
/* Shared by inject_target's C and assembly halves. */
#ifndef _INJECT_TARGET_H
#define _INJECT_TARGET_H

/* Offsets into struct inj_regcheck, for the assembly. */
#define RC_STOP			0
#define RC_LIMIT		8
#define RC_MIRROR		16
#define RC_SAVED_RSP		24
#define RC_FAIL_VALUE		32
#define RC_FAIL_ITERATION	40

/* What inj_target_regcheck() returns: 0, or the check that failed. */
#define RC_OK			0
#define RC_FAIL_RAX		1	/* ... through RC_FAIL_RAX + 13 for %r14 */
#define RC_FAIL_CF		15
#define RC_FAIL_RSP		16
#define RC_FAIL_STACK_MAGIC	17
#define RC_FAIL_FLAGS		18
#define RC_FAIL_COUNTER		19

#define RC_STACK_MAGIC		0x5a17c0de

#ifndef __ASSEMBLY__
#include <linux/types.h>

struct inj_regcheck {
	u64 stop;
	u64 limit;
	u64 mirror;
	u64 saved_rsp;
	u64 fail_value;
	u64 fail_iteration;
};

extern struct inj_regcheck inj_regcheck;

unsigned long inj_target_regcheck(void);
/* The loop's bounds: labels inside inj_target_regcheck(). */
extern const char inj_target_loop_start[], inj_target_loop_end[];
void inj_target_spin_preempt(unsigned long loops);
void inj_target_spin_spinlock(unsigned long loops);
void inj_target_spin_rcu(unsigned long loops);
void inj_target_spin_bh(unsigned long loops);
void inj_target_spin_irq(unsigned long loops);
void inj_target_spin_fpu(unsigned long loops);
#endif

#endif /* _INJECT_TARGET_H */
