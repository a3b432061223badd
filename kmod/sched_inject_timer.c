// SPDX-License-Identifier: GPL-2.0
/*
 * sched_inject: the timer side.  The per-CPU hrtimer callback, in hard-irq
 * context: the checks that decide whether the interrupted kernel
 * instruction may sleep, the claim of a pending record and the one edit to
 * the interrupt frame.  Then the timers themselves: started and stopped on
 * each CPU by CPU hotplug callbacks, whose state enable sets up and disable
 * removes.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/cpuhotplug.h>
#include <linux/hardirq.h>
#include <linux/hrtimer.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/lockdep.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task_stack.h>
#include <linux/smp.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <asm/fpu/api.h>
#include <asm/irq_regs.h>

#include "sched_inject.h"
#include "sched_inject_compat.h"
#include "sched_inject_tramp.h"

struct inj_cpu {
	struct hrtimer timer;
	int cpu;
};

static DEFINE_PER_CPU(struct inj_cpu, inj_cpus);

/* The CPU hotplug state of the timers while enabled; under inj_lock. */
static int inj_hp_state = -1;

/* ------------------------------------------------------------ hardirq side */

bool inj_is_target(struct task_struct *task)
{
	struct inj_target *target = rcu_dereference(inj_target);

	if (!target || is_idle_task(task))
		return false;
	switch (target->kind) {
	case INJ_TARGET_PID:
		return task_pid(task) == target->pid;
	case INJ_TARGET_TGID:
		return task_tgid(task) == target->pid;
	case INJ_TARGET_COMM:
		return !strncmp(task->comm, target->comm, TASK_COMM_LEN);
	default:
		return false;
	}
}

NOKPROBE_SYMBOL(inj_is_target);

static void inj_count_preempt_field(unsigned int pc)
{
	if (pc & PREEMPT_MASK)
		this_cpu_inc(inj_stats.preempt_fields[INJ_PC_PREEMPT]);
	if (pc & SOFTIRQ_MASK)
		this_cpu_inc(inj_stats.preempt_fields[INJ_PC_SOFTIRQ]);
	if ((pc & HARDIRQ_MASK) > HARDIRQ_OFFSET)
		this_cpu_inc(inj_stats.preempt_fields[INJ_PC_HARDIRQ]);
	if (pc & NMI_MASK)
		this_cpu_inc(inj_stats.preempt_fields[INJ_PC_NMI]);
}

/* The interrupted stack pointer is on the task stack, with room below it. */
static bool inj_stack_ok(struct pt_regs *regs)
{
	unsigned long base = (unsigned long)task_stack_page(current);
	unsigned long sp = regs->sp;

	if (!object_is_on_stack(regs) || (unsigned long)(regs + 1) > sp || (sp & 7))
		return false;
	return sp >= base + INJ_MIN_FREE_STACK && sp <= base + THREAD_SIZE;
}

NOKPROBE_SYMBOL(inj_stack_ok);

static int inj_find_range(unsigned long ip)
{
	struct inj_range_set *set = rcu_dereference(inj_ranges);
	unsigned int i;

	for (i = 0; set && i < set->nr; i++)
		if (ip >= set->ranges[i].start && ip < set->ranges[i].end)
			return i;
	return -1;
}

/*
 * Returns INJ_SKIP_NR when the interrupted context may sleep.  @pc and
 * @rcu_depth were read before the caller's rcu_read_lock(), which raises
 * preempt_count() itself on PREEMPT_COUNT kernels with non-preemptible RCU.
 */
static enum inj_skip inj_check(struct pt_regs *regs, unsigned int pc, int rcu_depth,
			       int *range)
{
	if (!regs)
		return INJ_SKIP_NO_REGS;
	if (user_mode(regs))
		return INJ_SKIP_USER_MODE;
	if (!inj_is_target(current))
		return INJ_SKIP_NOT_TARGET;
	if (current->flags & PF_EXITING)
		return INJ_SKIP_EXITING;
	/* First, so every later reason is counted against its range too. */
	*range = inj_find_range(regs->ip);
	if (*range < 0)
		return INJ_SKIP_RIP_NOT_ALLOWED;
	/* Inside this callback the hardirq adds exactly HARDIRQ_OFFSET. */
	if (pc != HARDIRQ_OFFSET) {
		inj_count_preempt_field(pc);
		return INJ_SKIP_PREEMPT_COUNT;
	}
	return inj_check_context(regs, rcu_depth, false);
}

/*
 * The checks of both paths once preempt_count() has passed: RCU, the
 * interrupted flags, the task's state, the stack.  @from_int3: a point's
 * handler, which cannot ask irq_fpu_usable() (it warns in NMI context).
 */
enum inj_skip inj_check_context(struct pt_regs *regs, int rcu_depth, bool from_int3)
{
	if (IS_ENABLED(CONFIG_PREEMPT_RT) && softirq_count())
		return INJ_SKIP_RT_SOFTIRQ;
	if (rcu_depth)
		return INJ_SKIP_RCU_DEPTH;
	if (!(regs->flags & X86_EFLAGS_IF))
		return INJ_SKIP_IRQS_DISABLED;
	if (regs->flags & X86_EFLAGS_AC)
		return INJ_SKIP_FLAGS_AC;
	if (regs->flags & (X86_EFLAGS_DF | X86_EFLAGS_TF | X86_EFLAGS_NT))
		return INJ_SKIP_FLAGS_DF_TF_NT;
	if (!task_is_running(current))
		return INJ_SKIP_TASK_STATE;
	if (pagefault_disabled())
		return INJ_SKIP_PAGEFAULT_DISABLED;
	if (!from_int3 && !irq_fpu_usable())
		return INJ_SKIP_FPU_IN_USE;
	if (!inj_stack_ok(regs))
		return INJ_SKIP_STACK;
	if (!inj_fred_frame_ok(regs))
		return INJ_SKIP_FRED_STACK_LEVEL;
	if (READ_ONCE(inj_stopping))
		return INJ_SKIP_STOPPING;
	return INJ_SKIP_NR;
}

NOKPROBE_SYMBOL(inj_check_context);

bool inj_is_pending(struct task_struct *task)
{
	unsigned int i;

	for (i = 0; i < INJ_MAX_PENDING; i++)
		if (READ_ONCE(inj_pending[i].task) == task)
			return true;
	return false;
}

NOKPROBE_SYMBOL(inj_is_pending);

/* The index of a record now owned by @task, or -1 when all are in use. */
int inj_claim_pending(struct task_struct *task)
{
	unsigned int i;

	for (i = 0; i < INJ_MAX_PENDING; i++)
		if (!READ_ONCE(inj_pending[i].task) &&
		    !cmpxchg(&inj_pending[i].task, NULL, task))
			return i;
	return -1;
}

NOKPROBE_SYMBOL(inj_claim_pending);

static void inj_consider(struct pt_regs *regs)
{
	unsigned int pc = preempt_count();
	int rcu_depth = rcu_preempt_depth();
	struct inj_pending *pending;
	enum inj_skip why;
	int range = -1;
	int index;

	rcu_read_lock();
	why = inj_check(regs, pc, rcu_depth, &range);
	if (why == INJ_SKIP_NR && inj_is_pending(current))
		why = INJ_SKIP_ALREADY_PENDING;
	if (why != INJ_SKIP_NR) {
		this_cpu_inc(inj_stats.skips[why]);
		if (range >= 0)
			atomic64_inc(&inj_range_stats[range].skips[why]);
		if (why == INJ_SKIP_PREEMPT_COUNT)
			WRITE_ONCE(inj_last_preempt_skip_ip, regs->ip);
		goto out;
	}
	atomic64_inc(&inj_range_stats[range].hits);
	WRITE_ONCE(inj_last_ip, regs->ip);
	WRITE_ONCE(inj_last_cpu, smp_processor_id());
	if (READ_ONCE(inj_count_only)) {
		this_cpu_inc(inj_stats.would_inject);
		goto out;
	}
	index = inj_claim_pending(current);
	if (index < 0) {
		this_cpu_inc(inj_stats.skips[INJ_SKIP_NO_SLOT]);
		goto out;
	}
	pending = &inj_pending[index];
	pending->orig_ip = regs->ip;
	pending->fired_ns = ktime_get_ns();
	pending->cpu = smp_processor_id();
	pending->from_point = false;
	/* Counted before the redirect, so unload waits for this task. */
	atomic_inc(&inj_inflight);
	this_cpu_inc(inj_stats.injections);
	/* The only edit to the interrupt frame: IRET restores everything else. */
	regs->ip = (unsigned long)inj_trampoline + index * INJ_STUB_SIZE;
out:
	rcu_read_unlock();
}

static enum hrtimer_restart inj_timer_fn(struct hrtimer *timer)
{
	struct inj_cpu *ic = container_of(timer, struct inj_cpu, timer);

	if (READ_ONCE(inj_stopping))
		return HRTIMER_NORESTART;
	this_cpu_inc(inj_stats.fires);
	if (ic->cpu != smp_processor_id()) {
		/* Migrated by CPU hotplug despite the offline callback: stop it. */
		this_cpu_inc(inj_stats.skips[INJ_SKIP_WRONG_CPU]);
		return HRTIMER_NORESTART;
	}
	inj_consider(get_irq_regs());
	hrtimer_forward_now(timer, ns_to_ktime((u64)READ_ONCE(inj_period_us) * NSEC_PER_USEC));
	return HRTIMER_RESTART;
}

/* ------------------------------------------------------ timers and hotplug */

static int inj_cpu_online(unsigned int cpu)
{
	struct inj_cpu *ic = per_cpu_ptr(&inj_cpus, cpu);

	/* Runs on @cpu itself, so PINNED pins the timer there. */
	ic->cpu = cpu;
	inj_hrtimer_setup(&ic->timer, inj_timer_fn);
	hrtimer_start(&ic->timer, ns_to_ktime((u64)READ_ONCE(inj_period_us) * NSEC_PER_USEC),
		      HRTIMER_MODE_REL_PINNED_HARD);
	return 0;
}

static int inj_cpu_offline(unsigned int cpu)
{
	/* Before hrtimers_cpu_dying() would migrate the pinned timer away. */
	hrtimer_cancel(&per_cpu_ptr(&inj_cpus, cpu)->timer);
	return 0;
}

int inj_enable_locked(void)
{
	int ret;

	lockdep_assert_held(&inj_lock);
	if (inj_enabled)
		return 0;
	if (!rcu_access_pointer(inj_target)) {
		pr_err("enable: no target set (write 'pid N', 'tgid N' or 'comm NAME' to target)\n");
		return -EINVAL;
	}
	ret = cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, "sched_inject:online",
				inj_cpu_online, inj_cpu_offline);
	if (ret < 0)
		return ret;
	inj_hp_state = ret;
	inj_enabled = true;
	return 0;
}

void inj_disable_locked(void)
{
	lockdep_assert_held(&inj_lock);
	if (!inj_enabled)
		return;
	/* Runs inj_cpu_offline() everywhere: hrtimer_cancel() waits for callbacks. */
	cpuhp_remove_state(inj_hp_state);
	inj_hp_state = -1;
	inj_enabled = false;
}
