/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Internal to sched_inject.ko: what its .c files share.  The limits, the
 * skip reasons every timer fire is counted under, the structures of the
 * ranges, the target and the pending records, the state defined in
 * sched_inject_main.c, and the functions one file calls in another.
 */
#ifndef _SCHED_INJECT_H
#define _SCHED_INJECT_H

#include <linux/atomic.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/percpu.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait.h>

#include "sched_inject_tramp.h"

#define INJ_MAX_RANGES		20
#define INJ_MAX_POINTS		32
#define INJ_MAX_PENDING		INJ_STUBS
#define INJ_PERIOD_MIN_US	1000
#define INJ_PERIOD_MAX_US	1000000
#define INJ_SLEEP_MAX_MS	100
#define INJ_MIN_INTERVAL_MAX_US	1000000
#define INJ_BURST_MAX		1000
/* Extra one-tick sleeps for an injected sleep that did not switch. */
#define INJ_SLEEP_RETRIES_MAX	3
/* msleep() and schedule() need room below the interrupted stack pointer. */
#define INJ_MIN_FREE_STACK	(THREAD_SIZE / 4)
/* A "range" over more than this is a mistake, whatever the kernel. */
#define INJ_MAX_RANGE_BYTES	(16UL << 20)

/*
 * Why a timer fire, or a point's hit, did not inject.  Every fire counts
 * exactly one outcome; so does every hit of a point (too_soon is its own).
 */
enum inj_skip {
	INJ_SKIP_NO_REGS,		/* not called from an interrupt frame */
	INJ_SKIP_WRONG_CPU,		/* a pinned timer ran elsewhere (hotplug) */
	INJ_SKIP_USER_MODE,		/* interrupted user space */
	INJ_SKIP_NOT_TARGET,		/* interrupted another task */
	INJ_SKIP_EXITING,		/* the target is exiting */
	INJ_SKIP_PREEMPT_COUNT,		/* preemption, softirq, nested irq or NMI */
	INJ_SKIP_RT_SOFTIRQ,		/* PREEMPT_RT: softirq count is per task */
	INJ_SKIP_RCU_DEPTH,		/* PREEMPT_RCU reader */
	INJ_SKIP_IRQS_DISABLED,		/* IF=0 in the interrupted context */
	INJ_SKIP_FLAGS_AC,		/* inside a STAC region */
	INJ_SKIP_FLAGS_DF_TF_NT,	/* flags the C ABI or a debugger own */
	INJ_SKIP_TASK_STATE,		/* between set_current_state() and schedule() */
	INJ_SKIP_PAGEFAULT_DISABLED,	/* pagefault_disable() section */
	INJ_SKIP_FPU_IN_USE,		/* kernel_fpu_begin() or fpregs_lock() */
	INJ_SKIP_STACK,			/* not on the task stack, or too little left */
	INJ_SKIP_FRED_STACK_LEVEL,	/* FRED event at a higher stack level */
	INJ_SKIP_RIP_NOT_ALLOWED,	/* outside every allowed range */
	INJ_SKIP_ALREADY_PENDING,	/* the task has not resumed from the last one */
	INJ_SKIP_NO_SLOT,		/* too many tasks in the trampoline at once */
	INJ_SKIP_TOO_SOON,		/* a point: over the task's budget, or spreading it */
	INJ_SKIP_STOPPING,		/* the module is going away */
	INJ_SKIP_NR,
};

/* Which part of preempt_count was set when INJ_SKIP_PREEMPT_COUNT was counted. */
enum inj_pc_field { INJ_PC_PREEMPT, INJ_PC_SOFTIRQ, INJ_PC_HARDIRQ, INJ_PC_NMI, INJ_PC_NR };

/* Counted in hardirq context, per CPU; summed when read. */
struct inj_stats {
	u64 fires;
	u64 injections;
	u64 would_inject;
	u64 skips[INJ_SKIP_NR];
	u64 preempt_fields[INJ_PC_NR];
};

/* An allowed address range, validated when written. */
struct inj_range {
	unsigned long start;
	unsigned long end;		/* exclusive */
	char owner[MODULE_NAME_LEN];	/* "vmlinux" or the module's name */
	char symbol[KSYM_SYMBOL_LEN];	/* of start, for humans */
};

/* Readers are timer callbacks: the set is replaced whole under RCU. */
struct inj_range_set {
	struct rcu_head rcu;	/* first: kfree_rcu() needs a small offset */
	unsigned int nr;
	struct inj_range ranges[INJ_MAX_RANGES];
};

enum inj_target_kind { INJ_TARGET_NONE, INJ_TARGET_PID, INJ_TARGET_TGID, INJ_TARGET_COMM };

struct inj_target {
	enum inj_target_kind kind;
	struct pid *pid;		/* PID and TGID kinds; a reference is held */
	char comm[TASK_COMM_LEN];	/* COMM kind */
};

/*
 * The interrupted address of a task sent into the trampoline.  Claimed by
 * the timer callback or a point's pre-handler (cmpxchg of .task) before it
 * redirects the interrupt or int3 to the entry stub of the same index,
 * released by inj_tramp_body() after the sleep.
 */
struct inj_pending {
	struct task_struct *task;
	unsigned long orig_ip;
	u64 fired_ns;
	int cpu;
	bool from_point;	/* a point's injection, not the timer's */
};

/*
 * Per range: samples of the target inside it that were eligible (injected,
 * or counted in count-only mode) and those skipped, by reason, so a test
 * can tell which function a sample landed in and why it was refused.
 */
struct inj_range_stats {
	atomic64_t hits;
	atomic64_t skips[INJ_SKIP_NR];
};

/*
 * An injection point: a kprobe on one instruction (a function's entry,
 * usually) where the target task is sent into the trampoline when it gets
 * there, with what each of its hits came to.
 */
struct inj_point {
	struct kprobe kp;
	char symbol[KSYM_SYMBOL_LEN];	/* of the probed address, for humans */
	atomic64_t hits;		/* eligible: injected, or counted */
	atomic64_t injections;
	atomic64_t would_inject;	/* count-only mode */
	atomic64_t resumes;		/* the one passing hit after each injection */
	atomic64_t skips[INJ_SKIP_NR];
};

/* A number setting with bounds, checked on every write. */
struct inj_knob {
	unsigned int *value;
	unsigned int min, max;
	const char *name;
};

/* ------------------------------------------ state, in sched_inject_main.c */

/* The module parameters; the callbacks read them with READ_ONCE(). */
extern unsigned int inj_period_us;
extern unsigned int inj_sleep_ms;
extern unsigned int inj_min_interval_us;
extern unsigned int inj_burst;
extern bool inj_count_only;
extern bool inj_unsafe_wide_ranges;

/* Their bounds: at load and on every write of the debugfs file. */
extern struct inj_knob inj_knob_period;
extern struct inj_knob inj_knob_sleep;
extern struct inj_knob inj_knob_min_interval;
extern struct inj_knob inj_knob_burst;

DECLARE_PER_CPU(struct inj_stats, inj_stats);

extern struct inj_pending inj_pending[INJ_MAX_PENDING];
extern struct inj_range_set __rcu *inj_ranges;
extern struct inj_target __rcu *inj_target;
extern struct inj_range_stats inj_range_stats[INJ_MAX_RANGES];

/* Configuration; scalars are read with READ_ONCE() by the callbacks. */
extern struct mutex inj_lock;
extern bool inj_enabled;
extern bool inj_stopping;

/* Tasks between a redirect and the end of inj_tramp_body(). */
extern atomic_t inj_inflight;
extern struct wait_queue_head inj_inflight_wq;

/* Process-context statistics of the sleeps themselves. */
extern spinlock_t inj_sleep_lock;
extern u64 inj_sleep_ns_min, inj_sleep_ns_max, inj_sleep_ns_sum, inj_sleep_count;
extern unsigned long inj_sleep_jiffies_min;
extern u64 inj_dispatch_ns_max;
extern atomic64_t inj_tramp_entries, inj_tramp_exits, inj_migrations;
/* Sleeps taken again because msleep() returned without a switch, and gave up. */
extern atomic64_t inj_sleep_retries, inj_sleeps_without_switch;

/* The points (under inj_lock), and the injections of every point since a reset. */
extern struct inj_point *inj_points[INJ_MAX_POINTS];
extern unsigned int inj_nr_points;
extern atomic64_t inj_point_injections;

/* The last location injected into (or, counting only, that would have been). */
extern unsigned long inj_last_ip;
extern int inj_last_cpu;
/* The last in-range location refused because preempt_count was raised. */
extern unsigned long inj_last_preempt_skip_ip;

/* ---------------------------------------------------------------- functions */

/* sched_inject_main.c */
int inj_knob_check(const struct inj_knob *knob, unsigned int value);

/* sched_inject_timer.c: start and stop the per-CPU timers, inj_lock held. */
int inj_enable_locked(void);
void inj_disable_locked(void);
/* The checks and the claim both paths share (in hard-irq or int3 context). */
bool inj_is_target(struct task_struct *task);
enum inj_skip inj_check_context(struct pt_regs *regs, int rcu_depth, bool from_int3);
bool inj_is_pending(struct task_struct *task);
int inj_claim_pending(struct task_struct *task);

/* sched_inject_points.c */
int inj_add_point(const char *name);
void inj_clear_points(void);
void inj_drop_module_points(struct module *mod);
/* The current task, sent into the trampoline by a point, is back from its sleep. */
void inj_note_resumed(u64 fired_ns);

/* sched_inject_ranges.c */
int inj_add_range(unsigned long start, unsigned long end);
void inj_publish_ranges(struct inj_range_set *set);
void inj_reset_range_stats(void);
extern struct notifier_block inj_module_nb;

/* sched_inject_target.c */
int inj_set_target(const char *spec);

/* sched_inject_debugfs.c */
void inj_debugfs_create(void);
void inj_debugfs_remove(void);

#endif /* _SCHED_INJECT_H */
