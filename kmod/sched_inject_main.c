// SPDX-License-Identifier: GPL-2.0
/*
 * sched_inject: force real schedules into chosen kernel code.
 *
 * A per-CPU hrtimer fires every period_us.  When it interrupts the target
 * task in kernel mode, at an instruction inside an allowed range, and every
 * check (sched_inject_timer.c) says the interrupted code may sleep, the
 * callback changes the saved instruction pointer, and only it, so that the
 * interrupt returns into inj_trampoline.  The trampoline preserves every
 * register and the flags, calls inj_tramp_body() to msleep(), and resumes
 * at the interrupted instruction.  The interrupted address is kept per
 * task, never per CPU: the task may wake up anywhere: the callback claims a
 * pending record and sends the task to the trampoline's entry stub of the
 * same number.  Injection points (sched_inject_points.c) do the same from
 * a kprobe's pre-handler at a chosen instruction.
 *
 * Why each check: see the skip reasons (enum inj_skip in sched_inject.h)
 * and docs/design.md.
 * Interface: debugfs sched_inject/ (the project's docs/injector.md documents it).
 *
 * This file: the module parameters, the state the other files share, and
 * load and unload.  The rest of sched_inject.ko:
 *   sched_inject_timer.c       the hrtimer callback and its checks (hard
 *                              irq), the per-CPU timers and CPU hotplug
 *   sched_inject_tramp.S       the trampoline the interrupt returns into
 *   sched_inject_tramp_body.c  its C half: the sleep, in the injected task
 *   sched_inject_ranges.c      allowed ranges: validation, publication,
 *                              the module notifier
 *   sched_inject_target.c      the target task, process or command name
 *   sched_inject_points.c      injection points: kprobes that divert the
 *                              target at chosen instructions (int3 context)
 *   sched_inject_debugfs.c     every file of debugfs sched_inject/
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/wait.h>

#include "sched_inject.h"
#include "sched_inject_tramp.h"

unsigned int inj_period_us = 20000;
module_param_named(period_us, inj_period_us, uint, 0444);
MODULE_PARM_DESC(period_us, "timer period in microseconds (1000..1000000, default 20000)");

unsigned int inj_sleep_ms = 2;
module_param_named(sleep_ms, inj_sleep_ms, uint, 0444);
MODULE_PARM_DESC(sleep_ms, "msleep() per injection in milliseconds (1..100, default 2)");

/*
 * A selftest reaches a KVM function thousands of times, and each sleep lasts
 * a tick or more: at points, a task earns an injection per interval and
 * saves up to burst of them (sched_inject_points.c).
 */
unsigned int inj_min_interval_us = 10000;
module_param_named(min_interval_us, inj_min_interval_us, uint, 0444);
MODULE_PARM_DESC(min_interval_us,
		 "at points, a task earns one injection per interval it runs (0..1000000, 0: no limit, default 10000)");

unsigned int inj_burst = 10;
module_param_named(burst, inj_burst, uint, 0444);
MODULE_PARM_DESC(burst, "at points, the injections a task may save up, and starts with (1..1000, default 10)");

bool inj_count_only;
module_param_named(count_only, inj_count_only, bool, 0444);
MODULE_PARM_DESC(count_only, "evaluate every check and count, never inject");

bool inj_unsafe_wide_ranges;
module_param_named(unsafe_wide_ranges, inj_unsafe_wide_ranges, bool, 0444);
MODULE_PARM_DESC(unsafe_wide_ranges,
		 "allow ranges wider than one function without CONFIG_PREEMPT_COUNT, where spinlock and RCU sections are invisible");

struct inj_knob inj_knob_period = { &inj_period_us, INJ_PERIOD_MIN_US, INJ_PERIOD_MAX_US,
				    "period_us" };
struct inj_knob inj_knob_sleep = { &inj_sleep_ms, 1, INJ_SLEEP_MAX_MS, "sleep_ms" };
struct inj_knob inj_knob_min_interval = { &inj_min_interval_us, 0, INJ_MIN_INTERVAL_MAX_US,
					  "min_interval_us" };
struct inj_knob inj_knob_burst = { &inj_burst, 1, INJ_BURST_MAX, "burst" };

int inj_knob_check(const struct inj_knob *knob, unsigned int value)
{
	if (value < knob->min || value > knob->max) {
		pr_err("%s: %u is outside %u..%u\n", knob->name, value, knob->min, knob->max);
		return -EINVAL;
	}
	return 0;
}

DEFINE_PER_CPU(struct inj_stats, inj_stats);

struct inj_pending inj_pending[INJ_MAX_PENDING];
struct inj_range_set __rcu *inj_ranges;
struct inj_target __rcu *inj_target;

struct inj_range_stats inj_range_stats[INJ_MAX_RANGES];

/* Configuration; scalars are read with READ_ONCE() by the callbacks. */
DEFINE_MUTEX(inj_lock);
bool inj_enabled;
bool inj_stopping;

/* Tasks between a redirect and the end of inj_tramp_body(). */
atomic_t inj_inflight = ATOMIC_INIT(0);
DECLARE_WAIT_QUEUE_HEAD(inj_inflight_wq);

/* Process-context statistics of the sleeps themselves. */
DEFINE_SPINLOCK(inj_sleep_lock);
u64 inj_sleep_ns_min, inj_sleep_ns_max, inj_sleep_ns_sum, inj_sleep_count;
unsigned long inj_sleep_jiffies_min;
u64 inj_dispatch_ns_max;
atomic64_t inj_tramp_entries, inj_tramp_exits, inj_migrations;
atomic64_t inj_sleep_retries, inj_sleeps_without_switch;

/* The last location injected into (or, counting only, that would have been). */
unsigned long inj_last_ip;
int inj_last_cpu;
/* The last in-range location refused because preempt_count was raised. */
unsigned long inj_last_preempt_skip_ip;

/* ---------------------------------------------------------- load, unload */

/* Each entry stub is push $0; push $N; jmp: check the layout the C side assumes. */
static bool inj_stubs_as_expected(void)
{
	const u8 *stub = (const u8 *)inj_trampoline;
	unsigned int i;

	for (i = 0; i < INJ_STUBS; i++, stub += INJ_STUB_SIZE)
		if (stub[0] != 0x6a || stub[1] != 0 || stub[2] != 0x6a || stub[3] != i ||
		    stub[4] != 0xe9)
			return false;
	return true;
}

static int __init sched_inject_init(void)
{
	int ret;

	if (!inj_stubs_as_expected()) {
		pr_err("trampoline stubs are not laid out as %d bytes each\n", INJ_STUB_SIZE);
		return -ENOEXEC;
	}

	if (IS_ENABLED(CONFIG_PREEMPTION) && !IS_ENABLED(CONFIG_TASKS_RCU)) {
		/* Unload could not wait for a task preempted in the trampoline's tail. */
		pr_err("needs CONFIG_TASKS_RCU on a preemptible kernel\n");
		return -EOPNOTSUPP;
	}
	if (!IS_ENABLED(CONFIG_KPROBES)) {
		pr_err("needs CONFIG_KPROBES to validate ranges\n");
		return -EOPNOTSUPP;
	}
	if (inj_knob_check(&inj_knob_period, inj_period_us) ||
	    inj_knob_check(&inj_knob_sleep, inj_sleep_ms) ||
	    inj_knob_check(&inj_knob_min_interval, inj_min_interval_us) ||
	    inj_knob_check(&inj_knob_burst, inj_burst))
		return -EINVAL;

	ret = register_module_notifier(&inj_module_nb);
	if (ret)
		return ret;
	inj_debugfs_create();
	pr_info("loaded: period %u us, sleep %u ms, min_interval %u us, burst %u%s\n",
		inj_period_us, inj_sleep_ms, inj_min_interval_us, inj_burst,
		inj_count_only ? ", counting only" : "");
	return 0;
}

static void __exit sched_inject_exit(void)
{
	struct inj_range_set *set;
	struct inj_target *target;
	int inflight;

	/* No new writes; those in progress finish first. */
	inj_debugfs_remove();
	WRITE_ONCE(inj_stopping, true);
	mutex_lock(&inj_lock);
	inj_disable_locked();
	mutex_unlock(&inj_lock);
	/* No point's handler runs once this returns. */
	inj_clear_points();
	/* Tasks sleeping in, or about to enter, the trampoline. */
	inflight = atomic_read(&inj_inflight);
	if (inflight)
		pr_info("unload waits for %d injected task(s) to resume\n", inflight);
	wait_event(inj_inflight_wq, !atomic_read(&inj_inflight));
	/*
	 * The last of them may still be in inj_tramp_body()'s epilogue or the
	 * trampoline's pops.  It cannot be preempted there without PREEMPTION,
	 * so one grace period sees it out; with PREEMPTION, RCU-tasks does.
	 */
	if (IS_ENABLED(CONFIG_TASKS_RCU))
		synchronize_rcu_tasks();
	else
		synchronize_rcu();
	unregister_module_notifier(&inj_module_nb);

	set = rcu_dereference_protected(inj_ranges, 1);
	kfree(set);
	target = rcu_dereference_protected(inj_target, 1);
	if (target) {
		put_pid(target->pid);
		kfree(target);
	}
	pr_info("unloaded\n");
}

module_init(sched_inject_init);
module_exit(sched_inject_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Inject real schedules into chosen kernel code from a timer interrupt");
