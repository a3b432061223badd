// SPDX-License-Identifier: GPL-2.0
/*
 * sched_inject: force real schedules into chosen kernel code.
 *
 * A per-CPU hrtimer fires every period_us.  When it interrupts the target
 * task in kernel mode, at an instruction inside an allowed range, and every
 * check below says the interrupted code may sleep, the callback changes the
 * saved instruction pointer, and only it, so that the interrupt returns into
 * inj_trampoline.  The trampoline preserves every register and the flags,
 * calls inj_tramp_body() to msleep(), and resumes at the interrupted
 * instruction.  The interrupted address is kept per task, never per CPU:
 * the task may wake up anywhere: the callback claims a pending record and
 * sends the task to the trampoline's entry stub of the same number.
 *
 * Why each check: see the skip reasons below and ../shared/docs/injector.md.
 * Interface: debugfs sched_inject/ (README.md of the project documents it).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/cpuhotplug.h>
#include <linux/ctype.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/hardirq.h>
#include <linux/hrtimer.h>
#include <linux/jiffies.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/objtool.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task_stack.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <asm/fpu/api.h>
#include <asm/irq_regs.h>

#include "sched_inject_compat.h"
#include "sched_inject_tramp.h"

#define INJ_MAX_RANGES		20
#define INJ_MAX_PENDING		INJ_STUBS
#define INJ_PERIOD_MIN_US	1000
#define INJ_PERIOD_MAX_US	1000000
#define INJ_SLEEP_MAX_MS	100
/* msleep() and schedule() need room below the interrupted stack pointer. */
#define INJ_MIN_FREE_STACK	(THREAD_SIZE / 4)
/* A "range" over more than this is a mistake, whatever the kernel. */
#define INJ_MAX_RANGE_BYTES	(16UL << 20)

static unsigned int period_us = 20000;
module_param(period_us, uint, 0444);
MODULE_PARM_DESC(period_us, "timer period in microseconds (1000..1000000, default 20000)");

static unsigned int sleep_ms = 2;
module_param(sleep_ms, uint, 0444);
MODULE_PARM_DESC(sleep_ms, "msleep() per injection in milliseconds (1..100, default 2)");

static bool count_only;
module_param(count_only, bool, 0444);
MODULE_PARM_DESC(count_only, "evaluate every check and count, never inject");

static bool unsafe_wide_ranges;
module_param(unsafe_wide_ranges, bool, 0444);
MODULE_PARM_DESC(unsafe_wide_ranges,
		 "allow ranges wider than one function without CONFIG_PREEMPT_COUNT, where spinlock and RCU sections are invisible");

/* Why a timer fire did not inject.  Every fire counts exactly one outcome. */
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
	INJ_SKIP_STOPPING,		/* the module is going away */
	INJ_SKIP_NR,
};

static const char * const inj_skip_names[INJ_SKIP_NR] = {
	[INJ_SKIP_NO_REGS] = "no_regs",
	[INJ_SKIP_WRONG_CPU] = "wrong_cpu",
	[INJ_SKIP_USER_MODE] = "user_mode",
	[INJ_SKIP_NOT_TARGET] = "not_target",
	[INJ_SKIP_EXITING] = "exiting",
	[INJ_SKIP_PREEMPT_COUNT] = "preempt_count",
	[INJ_SKIP_RT_SOFTIRQ] = "rt_softirq",
	[INJ_SKIP_RCU_DEPTH] = "rcu_depth",
	[INJ_SKIP_IRQS_DISABLED] = "irqs_disabled",
	[INJ_SKIP_FLAGS_AC] = "flags_ac",
	[INJ_SKIP_FLAGS_DF_TF_NT] = "flags_df_tf_nt",
	[INJ_SKIP_TASK_STATE] = "task_state",
	[INJ_SKIP_PAGEFAULT_DISABLED] = "pagefault_disabled",
	[INJ_SKIP_FPU_IN_USE] = "fpu_in_use",
	[INJ_SKIP_STACK] = "stack",
	[INJ_SKIP_FRED_STACK_LEVEL] = "fred_stack_level",
	[INJ_SKIP_RIP_NOT_ALLOWED] = "rip_not_allowed",
	[INJ_SKIP_ALREADY_PENDING] = "already_pending",
	[INJ_SKIP_NO_SLOT] = "no_slot",
	[INJ_SKIP_STOPPING] = "stopping",
};

/* Which part of preempt_count was set when INJ_SKIP_PREEMPT_COUNT was counted. */
enum inj_pc_field { INJ_PC_PREEMPT, INJ_PC_SOFTIRQ, INJ_PC_HARDIRQ, INJ_PC_NMI, INJ_PC_NR };
static const char * const inj_pc_names[INJ_PC_NR] = {
	"preempt", "softirq", "hardirq_nested", "nmi",
};

/* Counted in hardirq context, per CPU; summed when read. */
struct inj_stats {
	u64 fires;
	u64 injections;
	u64 would_inject;
	u64 skips[INJ_SKIP_NR];
	u64 preempt_fields[INJ_PC_NR];
};

static DEFINE_PER_CPU(struct inj_stats, inj_stats);

struct inj_cpu {
	struct hrtimer timer;
	int cpu;
};

static DEFINE_PER_CPU(struct inj_cpu, inj_cpus);

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
 * the timer callback (cmpxchg of .task) before it redirects the interrupt
 * to the entry stub of the same index, released by inj_tramp_body() after
 * the sleep.
 */
struct inj_pending {
	struct task_struct *task;
	unsigned long orig_ip;
	u64 fired_ns;
	int cpu;
};

static struct inj_pending inj_pending[INJ_MAX_PENDING];
static struct inj_range_set __rcu *inj_ranges;
static struct inj_target __rcu *inj_target;

/*
 * Per range: samples of the target inside it that were eligible (injected,
 * or counted in count-only mode) and those skipped, by reason, so a test
 * can tell which function a sample landed in and why it was refused.
 */
struct inj_range_stats {
	atomic64_t hits;
	atomic64_t skips[INJ_SKIP_NR];
};

static struct inj_range_stats inj_range_stats[INJ_MAX_RANGES];

/* Configuration; scalars are read with READ_ONCE() by the callbacks. */
static DEFINE_MUTEX(inj_lock);
static bool inj_enabled;
static bool inj_stopping;
static int inj_hp_state = -1;

/* Tasks between a redirect and the end of inj_tramp_body(). */
static atomic_t inj_inflight = ATOMIC_INIT(0);
static DECLARE_WAIT_QUEUE_HEAD(inj_inflight_wq);

/* Process-context statistics of the sleeps themselves. */
static DEFINE_SPINLOCK(inj_sleep_lock);
static u64 inj_sleep_ns_min, inj_sleep_ns_max, inj_sleep_ns_sum, inj_sleep_count;
static u64 inj_dispatch_ns_max;
static atomic64_t inj_tramp_entries, inj_tramp_exits, inj_migrations;

/* The last location injected into (or, counting only, that would have been). */
static unsigned long inj_last_ip;
static int inj_last_cpu;
/* The last in-range location refused because preempt_count was raised. */
static unsigned long inj_last_preempt_skip_ip;

static struct dentry *inj_dir;

/* ------------------------------------------------------------ hardirq side */

static bool inj_is_target(struct task_struct *task)
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
	if (!irq_fpu_usable())
		return INJ_SKIP_FPU_IN_USE;
	if (!inj_stack_ok(regs))
		return INJ_SKIP_STACK;
	if (!inj_fred_frame_ok(regs))
		return INJ_SKIP_FRED_STACK_LEVEL;
	if (READ_ONCE(inj_stopping))
		return INJ_SKIP_STOPPING;
	return INJ_SKIP_NR;
}

static bool inj_is_pending(struct task_struct *task)
{
	unsigned int i;

	for (i = 0; i < INJ_MAX_PENDING; i++)
		if (READ_ONCE(inj_pending[i].task) == task)
			return true;
	return false;
}

/* The index of a record now owned by @task, or -1 when all are in use. */
static int inj_claim_pending(struct task_struct *task)
{
	unsigned int i;

	for (i = 0; i < INJ_MAX_PENDING; i++)
		if (!READ_ONCE(inj_pending[i].task) &&
		    !cmpxchg(&inj_pending[i].task, NULL, task))
			return i;
	return -1;
}

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
	if (READ_ONCE(count_only)) {
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
	hrtimer_forward_now(timer, ns_to_ktime((u64)READ_ONCE(period_us) * NSEC_PER_USEC));
	return HRTIMER_RESTART;
}

/* ------------------------------------------------------- trampoline body */

static void inj_account_sleep(u64 slept_ns, u64 dispatch_ns)
{
	spin_lock(&inj_sleep_lock);
	if (!inj_sleep_count || slept_ns < inj_sleep_ns_min)
		inj_sleep_ns_min = slept_ns;
	if (slept_ns > inj_sleep_ns_max)
		inj_sleep_ns_max = slept_ns;
	if (dispatch_ns > inj_dispatch_ns_max)
		inj_dispatch_ns_max = dispatch_ns;
	inj_sleep_ns_sum += slept_ns;
	inj_sleep_count++;
	spin_unlock(&inj_sleep_lock);
}

/*
 * Called by inj_trampoline, on the injected task, with interrupts on and
 * nothing held.  @index is the number of the entry stub the task came
 * through, so the record the callback claimed for it.  @ret_slot is the
 * trampoline's return slot: it gets the interrupted address before the
 * sleep, so a stack trace of the sleeping task shows where it was.
 */
__visible void inj_tramp_body(unsigned long *ret_slot, unsigned long index)
{
	struct inj_pending *pending = &inj_pending[index];
	u64 start;

	*ret_slot = pending->orig_ip;
	atomic64_inc(&inj_tramp_entries);

	start = ktime_get_ns();
	/*
	 * msleep(n) waits for msecs_to_jiffies(n) timer ticks, the first of
	 * which may come at once (until 6.13 it adds no tick of its own): with
	 * one tick more, every sleep lasts at least sleep_ms.
	 */
	msleep(READ_ONCE(sleep_ms) + jiffies_to_msecs(1));
	inj_account_sleep(ktime_get_ns() - start, start - pending->fired_ns);
	if (raw_smp_processor_id() != pending->cpu)
		atomic64_inc(&inj_migrations);
	atomic64_inc(&inj_tramp_exits);

	/* Our reads of the record happen before another callback may claim it. */
	smp_store_release(&pending->task, NULL);
	/* Last: once inflight drops to zero the module may start unloading. */
	if (atomic_dec_and_test(&inj_inflight))
		wake_up(&inj_inflight_wq);
}

NOKPROBE_SYMBOL(inj_tramp_body);

/* Its frame is not a normal call frame; the frame-pointer unwinder must not try. */
STACK_FRAME_NON_STANDARD_FP(inj_trampoline);

/* ------------------------------------------------------ timers and hotplug */

static int inj_cpu_online(unsigned int cpu)
{
	struct inj_cpu *ic = per_cpu_ptr(&inj_cpus, cpu);

	/* Runs on @cpu itself, so PINNED pins the timer there. */
	ic->cpu = cpu;
	inj_hrtimer_setup(&ic->timer, inj_timer_fn);
	hrtimer_start(&ic->timer, ns_to_ktime((u64)READ_ONCE(period_us) * NSEC_PER_USEC),
		      HRTIMER_MODE_REL_PINNED_HARD);
	return 0;
}

static int inj_cpu_offline(unsigned int cpu)
{
	/* Before hrtimers_cpu_dying() would migrate the pinned timer away. */
	hrtimer_cancel(&per_cpu_ptr(&inj_cpus, cpu)->timer);
	return 0;
}

static int inj_enable_locked(void)
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

static void inj_disable_locked(void)
{
	lockdep_assert_held(&inj_lock);
	if (!inj_enabled)
		return;
	/* Runs inj_cpu_offline() everywhere: hrtimer_cancel() waits for callbacks. */
	cpuhp_remove_state(inj_hp_state);
	inj_hp_state = -1;
	inj_enabled = false;
}

/* ------------------------------------------------------------- ranges */

/* "func+0x10/0x200 [kvm]" -> owner "kvm", function "func". */
static void inj_split_symbol(const char *symbol, char *owner, size_t owner_len,
			     char *func, size_t func_len)
{
	const char *bracket = strchr(symbol, '[');
	size_t len = strcspn(symbol, "+ ");

	strscpy(func, symbol, min(len + 1, func_len));
	if (bracket) {
		len = strcspn(bracket + 1, "]");
		strscpy(owner, bracket + 1, min(len + 1, owner_len));
	} else {
		strscpy(owner, "vmlinux", owner_len);
	}
}

static int inj_probe_check(unsigned long addr)
{
	struct kprobe kp = {
		.addr = (kprobe_opcode_t *)addr,
		.flags = KPROBE_FLAG_DISABLED,
	};
	int ret;

	/*
	 * A disabled kprobe is never armed, but registering one checks that
	 * the address is kernel or module text, on an instruction boundary,
	 * and not in entry, noinstr or kprobe-blacklisted code.
	 */
	ret = register_kprobe(&kp);
	if (ret)
		return ret;
	unregister_kprobe(&kp);
	return 0;
}

/* Symbol names of a range's ends: too big for the stack with KASAN's redzones. */
struct inj_range_names {
	char last_symbol[KSYM_SYMBOL_LEN];
	char first_func[KSYM_NAME_LEN];
	char last_func[KSYM_NAME_LEN];
	char last_owner[MODULE_NAME_LEN];
};

static int inj_check_range_names(unsigned long start, unsigned long end,
				 struct inj_range *range, struct inj_range_names *names)
{
	sprint_symbol(range->symbol, start);
	sprint_symbol(names->last_symbol, end - 1);
	if (!strchr(range->symbol, '+') || !strchr(names->last_symbol, '+')) {
		pr_err("range %lx-%lx: not inside known kernel or module text\n", start, end);
		return -EINVAL;
	}
	inj_split_symbol(range->symbol, range->owner, sizeof(range->owner),
			 names->first_func, sizeof(names->first_func));
	inj_split_symbol(names->last_symbol, names->last_owner, sizeof(names->last_owner),
			 names->last_func, sizeof(names->last_func));
	if (strcmp(range->owner, names->last_owner)) {
		pr_err("range %lx-%lx: spans %s and %s\n", start, end, range->owner,
		       names->last_owner);
		return -EINVAL;
	}
	if (!strcmp(range->owner, KBUILD_MODNAME)) {
		pr_err("range %lx-%lx: the injector's own text is never allowed\n", start, end);
		return -EINVAL;
	}
	/*
	 * Without CONFIG_PREEMPT_COUNT, spin_lock() and rcu_read_lock() leave
	 * preempt_count() at zero: only a range the user chose instruction by
	 * instruction is safe there, not whole functions' worth of them.
	 */
	if (strcmp(names->first_func, names->last_func) && !IS_ENABLED(CONFIG_PREEMPT_COUNT) &&
	    !unsafe_wide_ranges) {
		pr_err("range %lx-%lx: spans %s to %s; without CONFIG_PREEMPT_COUNT spinlock and RCU sections there are invisible, so ranges must stay inside one function (or load with unsafe_wide_ranges=1)\n",
		       start, end, names->first_func, names->last_func);
		return -EINVAL;
	}
	return 0;
}

static int inj_validate_range(unsigned long start, unsigned long end, struct inj_range *range)
{
	struct inj_range_names *names;
	int ret;

	if (start >= end || end - start > INJ_MAX_RANGE_BYTES) {
		pr_err("range %lx-%lx: start must be below end and the range at most %lu bytes\n",
		       start, end, INJ_MAX_RANGE_BYTES);
		return -EINVAL;
	}
	names = kmalloc(sizeof(*names), GFP_KERNEL);
	if (!names)
		return -ENOMEM;
	ret = inj_check_range_names(start, end, range, names);
	kfree(names);
	if (ret)
		return ret;
	if (in_lock_functions(start) || in_lock_functions(end - 1)) {
		pr_err("range %lx-%lx: inside the spinlock implementation\n", start, end);
		return -EINVAL;
	}
	ret = inj_probe_check(start);
	if (ret) {
		pr_err("range %lx-%lx: %s cannot be probed (%d): not an instruction boundary, or entry, noinstr or blacklisted code\n",
		       start, end, range->symbol, ret);
		return -EINVAL;
	}
	range->start = start;
	range->end = end;
	return 0;
}

static void inj_reset_range_stats(void)
{
	unsigned int i, why;

	for (i = 0; i < INJ_MAX_RANGES; i++) {
		atomic64_set(&inj_range_stats[i].hits, 0);
		for (why = 0; why < INJ_SKIP_NR; why++)
			atomic64_set(&inj_range_stats[i].skips[why], 0);
	}
}

/* Replace the published set; the old one is freed after a grace period. */
static void inj_publish_ranges(struct inj_range_set *set)
{
	struct inj_range_set *old;

	old = rcu_replace_pointer(inj_ranges, set, lockdep_is_held(&inj_lock));
	inj_reset_range_stats();
	if (old)
		kfree_rcu(old, rcu);
}

static struct inj_range_set *inj_copy_ranges(void)
{
	struct inj_range_set *old = rcu_dereference_protected(inj_ranges,
							       lockdep_is_held(&inj_lock));
	struct inj_range_set *set = kzalloc(sizeof(*set), GFP_KERNEL);

	if (set && old) {
		set->nr = old->nr;
		memcpy(set->ranges, old->ranges, sizeof(set->ranges));
	}
	return set;
}

static int inj_add_range(unsigned long start, unsigned long end)
{
	struct inj_range_set *set;
	struct inj_range range;
	int ret;

	ret = inj_validate_range(start, end, &range);
	if (ret)
		return ret;
	mutex_lock(&inj_lock);
	set = inj_copy_ranges();
	if (!set) {
		ret = -ENOMEM;
		goto unlock;
	}
	if (set->nr == INJ_MAX_RANGES) {
		pr_err("range %lx-%lx: already %d ranges\n", start, end, INJ_MAX_RANGES);
		kfree(set);
		ret = -ENOSPC;
		goto unlock;
	}
	set->ranges[set->nr++] = range;
	inj_publish_ranges(set);
unlock:
	mutex_unlock(&inj_lock);
	return ret;
}

/* Drop the ranges in a module that is going away: its addresses will be reused. */
static int inj_module_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;
	struct inj_range_set *set;
	unsigned int i, kept = 0;

	if (action != MODULE_STATE_GOING)
		return NOTIFY_DONE;
	mutex_lock(&inj_lock);
	set = inj_copy_ranges();
	if (set) {
		for (i = 0; i < set->nr; i++)
			if (strcmp(set->ranges[i].owner, mod->name))
				set->ranges[kept++] = set->ranges[i];
		if (kept != set->nr) {
			pr_info("%s is unloading: dropped %u of its ranges\n", mod->name,
				set->nr - kept);
			set->nr = kept;
			inj_publish_ranges(set);
		} else {
			kfree(set);
		}
	}
	mutex_unlock(&inj_lock);
	return NOTIFY_OK;
}

static struct notifier_block inj_module_nb = {
	.notifier_call = inj_module_notify,
};

/* -------------------------------------------------------------- target */

static int inj_set_target(const char *spec)
{
	struct inj_target *target, *old;
	int nr, ret = 0;

	target = kzalloc(sizeof(*target), GFP_KERNEL);
	if (!target)
		return -ENOMEM;
	if (!strcmp(spec, "none")) {
		target->kind = INJ_TARGET_NONE;
	} else if (sscanf(spec, "pid %d", &nr) == 1 || sscanf(spec, "tgid %d", &nr) == 1) {
		target->kind = spec[0] == 'p' ? INJ_TARGET_PID : INJ_TARGET_TGID;
		target->pid = nr > 0 ? find_get_pid(nr) : NULL;
		if (!target->pid) {
			pr_err("target: no process with id %d\n", nr);
			ret = -EINVAL;
		}
	} else if (!strncmp(spec, "comm ", 5) && spec[5]) {
		target->kind = INJ_TARGET_COMM;
		strscpy(target->comm, spec + 5, sizeof(target->comm));
	} else {
		pr_err("target: '%s' is not 'pid N', 'tgid N', 'comm NAME' or 'none'\n", spec);
		ret = -EINVAL;
	}
	if (ret) {
		kfree(target);
		return ret;
	}
	mutex_lock(&inj_lock);
	if (target->kind == INJ_TARGET_NONE) {
		inj_disable_locked();
		kfree(target);
		target = NULL;
	}
	old = rcu_replace_pointer(inj_target, target, lockdep_is_held(&inj_lock));
	mutex_unlock(&inj_lock);
	if (old) {
		synchronize_rcu();
		put_pid(old->pid);
		kfree(old);
	}
	return 0;
}

/* --------------------------------------------------------------- debugfs */

/* Copy a short line from user space, trailing whitespace removed. */
static int inj_read_line(const char __user *ubuf, size_t count, char *buf, size_t size)
{
	if (!count || count >= size)
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	strim(buf);
	return 0;
}

static ssize_t inj_enable_write(struct file *file, const char __user *ubuf, size_t count,
				loff_t *ppos)
{
	bool enable;
	int ret;

	ret = kstrtobool_from_user(ubuf, count, &enable);
	if (ret)
		return ret;
	mutex_lock(&inj_lock);
	if (enable)
		ret = inj_enable_locked();
	else
		inj_disable_locked();
	mutex_unlock(&inj_lock);
	return ret ? ret : count;
}

static ssize_t inj_enable_read(struct file *file, char __user *ubuf, size_t count,
			       loff_t *ppos)
{
	char buf[3] = { READ_ONCE(inj_enabled) ? '1' : '0', '\n' };

	return simple_read_from_buffer(ubuf, count, ppos, buf, 2);
}

static const struct file_operations inj_enable_fops = {
	.owner = THIS_MODULE,
	.read = inj_enable_read,
	.write = inj_enable_write,
	.llseek = default_llseek,
};

static int inj_target_show(struct seq_file *m, void *v)
{
	struct inj_target *target;

	rcu_read_lock();
	target = rcu_dereference(inj_target);
	if (!target)
		seq_puts(m, "none\n");
	else if (target->kind == INJ_TARGET_COMM)
		seq_printf(m, "comm %s\n", target->comm);
	else
		seq_printf(m, "%s %d\n", target->kind == INJ_TARGET_PID ? "pid" : "tgid",
			   pid_nr(target->pid));
	rcu_read_unlock();
	return 0;
}

static int inj_target_open(struct inode *inode, struct file *file)
{
	return single_open(file, inj_target_show, NULL);
}

static ssize_t inj_target_write(struct file *file, const char __user *ubuf, size_t count,
				loff_t *ppos)
{
	char buf[64];
	int ret;

	ret = inj_read_line(ubuf, count, buf, sizeof(buf));
	if (!ret)
		ret = inj_set_target(buf);
	return ret ? ret : count;
}

static const struct file_operations inj_target_fops = {
	.owner = THIS_MODULE,
	.open = inj_target_open,
	.read = seq_read,
	.write = inj_target_write,
	.llseek = seq_lseek,
	.release = single_release,
};

/* A number setting with bounds, checked on every write. */
struct inj_knob {
	unsigned int *value;
	unsigned int min, max;
	const char *name;
};

static struct inj_knob inj_knob_period = { &period_us, INJ_PERIOD_MIN_US, INJ_PERIOD_MAX_US,
					   "period_us" };
static struct inj_knob inj_knob_sleep = { &sleep_ms, 1, INJ_SLEEP_MAX_MS, "sleep_ms" };

static int inj_knob_check(const struct inj_knob *knob, unsigned int value)
{
	if (value < knob->min || value > knob->max) {
		pr_err("%s: %u is outside %u..%u\n", knob->name, value, knob->min, knob->max);
		return -EINVAL;
	}
	return 0;
}

static ssize_t inj_knob_write(struct file *file, const char __user *ubuf, size_t count,
			      loff_t *ppos)
{
	struct inj_knob *knob = file->private_data;
	unsigned int value;
	int ret;

	ret = kstrtouint_from_user(ubuf, count, 0, &value);
	if (!ret)
		ret = inj_knob_check(knob, value);
	if (ret)
		return ret;
	WRITE_ONCE(*knob->value, value);
	return count;
}

static ssize_t inj_knob_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct inj_knob *knob = file->private_data;
	char buf[16];
	int len = scnprintf(buf, sizeof(buf), "%u\n", READ_ONCE(*knob->value));

	return simple_read_from_buffer(ubuf, count, ppos, buf, len);
}

static const struct file_operations inj_knob_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = inj_knob_read,
	.write = inj_knob_write,
	.llseek = default_llseek,
};

static int inj_ranges_show(struct seq_file *m, void *v)
{
	struct inj_range_set *set;
	unsigned int i, why;

	rcu_read_lock();
	set = rcu_dereference(inj_ranges);
	for (i = 0; set && i < set->nr; i++) {
		struct inj_range_stats *stats = &inj_range_stats[i];

		seq_printf(m, "%u %lx %lx hits=%lld", i, set->ranges[i].start,
			   set->ranges[i].end, atomic64_read(&stats->hits));
		for (why = 0; why < INJ_SKIP_NR; why++)
			if (atomic64_read(&stats->skips[why]))
				seq_printf(m, " skip_%s=%lld", inj_skip_names[why],
					   atomic64_read(&stats->skips[why]));
		seq_printf(m, " %s\n", set->ranges[i].symbol);
	}
	rcu_read_unlock();
	return 0;
}

static int inj_ranges_open(struct inode *inode, struct file *file)
{
	return single_open(file, inj_ranges_show, NULL);
}

static ssize_t inj_ranges_write(struct file *file, const char __user *ubuf, size_t count,
				loff_t *ppos)
{
	unsigned long start, end;
	char buf[64];
	int ret;

	ret = inj_read_line(ubuf, count, buf, sizeof(buf));
	if (ret)
		return ret;
	if (!strcmp(buf, "clear")) {
		mutex_lock(&inj_lock);
		inj_publish_ranges(NULL);
		mutex_unlock(&inj_lock);
		return count;
	}
	if (sscanf(buf, "%lx %lx", &start, &end) != 2) {
		pr_err("ranges: '%s' is not 'START END' (hex) or 'clear'\n", buf);
		return -EINVAL;
	}
	ret = inj_add_range(start, end);
	return ret ? ret : count;
}

static const struct file_operations inj_ranges_fops = {
	.owner = THIS_MODULE,
	.open = inj_ranges_open,
	.read = seq_read,
	.write = inj_ranges_write,
	.llseek = seq_lseek,
	.release = single_release,
};

static int inj_stats_show(struct seq_file *m, void *v)
{
	struct inj_stats sum = {};
	unsigned int i;
	int cpu;

	for_each_possible_cpu(cpu) {
		struct inj_stats *s = per_cpu_ptr(&inj_stats, cpu);

		sum.fires += READ_ONCE(s->fires);
		sum.injections += READ_ONCE(s->injections);
		sum.would_inject += READ_ONCE(s->would_inject);
		for (i = 0; i < INJ_SKIP_NR; i++)
			sum.skips[i] += READ_ONCE(s->skips[i]);
		for (i = 0; i < INJ_PC_NR; i++)
			sum.preempt_fields[i] += READ_ONCE(s->preempt_fields[i]);
	}
	seq_printf(m, "enabled %d\n", READ_ONCE(inj_enabled));
	seq_printf(m, "fires %llu\n", sum.fires);
	seq_printf(m, "injections %llu\n", sum.injections);
	seq_printf(m, "would_inject %llu\n", sum.would_inject);
	seq_printf(m, "inflight %d\n", atomic_read(&inj_inflight));
	seq_printf(m, "trampoline_entries %lld\n", atomic64_read(&inj_tramp_entries));
	seq_printf(m, "trampoline_exits %lld\n", atomic64_read(&inj_tramp_exits));
	seq_printf(m, "cpu_migrations %lld\n", atomic64_read(&inj_migrations));
	for (i = 0; i < INJ_SKIP_NR; i++)
		seq_printf(m, "skip_%s %llu\n", inj_skip_names[i], sum.skips[i]);
	for (i = 0; i < INJ_PC_NR; i++)
		seq_printf(m, "preempt_count_%s %llu\n", inj_pc_names[i], sum.preempt_fields[i]);
	spin_lock(&inj_sleep_lock);
	seq_printf(m, "sleep_ns_min %llu\n", inj_sleep_ns_min);
	seq_printf(m, "sleep_ns_avg %llu\n",
		   inj_sleep_count ? div64_u64(inj_sleep_ns_sum, inj_sleep_count) : 0);
	seq_printf(m, "sleep_ns_max %llu\n", inj_sleep_ns_max);
	seq_printf(m, "dispatch_ns_max %llu\n", inj_dispatch_ns_max);
	spin_unlock(&inj_sleep_lock);
	seq_printf(m, "last_cpu %d\n", READ_ONCE(inj_last_cpu));
	seq_printf(m, "last_location %pS\n", (void *)READ_ONCE(inj_last_ip));
	seq_printf(m, "last_preempt_count_location %pS\n",
		   (void *)READ_ONCE(inj_last_preempt_skip_ip));
	return 0;
}

static int inj_stats_open(struct inode *inode, struct file *file)
{
	return single_open(file, inj_stats_show, NULL);
}

static ssize_t inj_stats_write(struct file *file, const char __user *ubuf, size_t count,
			       loff_t *ppos)
{
	int cpu;

	/* Any write resets the counters; the gauge inflight stays. */
	for_each_possible_cpu(cpu)
		memset(per_cpu_ptr(&inj_stats, cpu), 0, sizeof(struct inj_stats));
	spin_lock(&inj_sleep_lock);
	inj_sleep_ns_min = 0;
	inj_sleep_ns_max = 0;
	inj_sleep_ns_sum = 0;
	inj_sleep_count = 0;
	inj_dispatch_ns_max = 0;
	spin_unlock(&inj_sleep_lock);
	atomic64_set(&inj_tramp_entries, 0);
	atomic64_set(&inj_tramp_exits, 0);
	atomic64_set(&inj_migrations, 0);
	WRITE_ONCE(inj_last_ip, 0);
	WRITE_ONCE(inj_last_preempt_skip_ip, 0);
	inj_reset_range_stats();
	return count;
}

static const struct file_operations inj_stats_fops = {
	.owner = THIS_MODULE,
	.open = inj_stats_open,
	.read = seq_read,
	.write = inj_stats_write,
	.llseek = seq_lseek,
	.release = single_release,
};

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
	if (inj_knob_check(&inj_knob_period, period_us) ||
	    inj_knob_check(&inj_knob_sleep, sleep_ms))
		return -EINVAL;

	ret = register_module_notifier(&inj_module_nb);
	if (ret)
		return ret;
	inj_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("enable", 0600, inj_dir, NULL, &inj_enable_fops);
	debugfs_create_file("target", 0600, inj_dir, NULL, &inj_target_fops);
	debugfs_create_file("period_us", 0600, inj_dir, &inj_knob_period, &inj_knob_fops);
	debugfs_create_file("sleep_ms", 0600, inj_dir, &inj_knob_sleep, &inj_knob_fops);
	debugfs_create_bool("count_only", 0600, inj_dir, &count_only);
	debugfs_create_file("ranges", 0600, inj_dir, NULL, &inj_ranges_fops);
	debugfs_create_file("stats", 0600, inj_dir, NULL, &inj_stats_fops);
	pr_info("loaded: period %u us, sleep %u ms%s\n", period_us, sleep_ms,
		count_only ? ", counting only" : "");
	return 0;
}

static void __exit sched_inject_exit(void)
{
	struct inj_range_set *set;
	struct inj_target *target;

	/* No new writes; those in progress finish first. */
	debugfs_remove_recursive(inj_dir);
	WRITE_ONCE(inj_stopping, true);
	mutex_lock(&inj_lock);
	inj_disable_locked();
	mutex_unlock(&inj_lock);
	/* Tasks sleeping in, or about to enter, the trampoline. */
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
