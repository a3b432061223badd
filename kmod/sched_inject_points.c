// SPDX-License-Identifier: GPL-2.0
/*
 * sched_inject: injection points, the targeted path.  A kprobe on each
 * named instruction (a function's entry, usually).  When the target task
 * gets there preemptible, with nothing that preempt_count() shows held,
 * the pre-handler sends it into the trampoline as the timer callback does
 * with an interrupt's return address: it sleeps, then resumes at the
 * probed instruction.  That instruction's next hit by the same task must
 * pass, or the task would sleep there forever: a resume record, claimed
 * with the injection, lets exactly that one hit through.
 *
 * The pre-handler runs from int3, which the kernel enters like an NMI
 * (preempt_count() gains NMI_OFFSET + HARDIRQ_OFFSET) with interrupts off:
 * atomic and per-CPU updates only, no lock, the NMI-safe clock.  A kprobe
 * without a post-handler may be optimized into a jump, and an optimized
 * probe ignores a changed instruction pointer: every point has an empty
 * post-handler, so each stays an int3.
 *
 * Without CONFIG_PREEMPT_COUNT, spinlocks, RCU readers and preempt_disable()
 * leave preempt_count() at zero: there the choice of points is what keeps
 * an injection safe, as the ranges are for the timer path.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/hardirq.h>
#include <linux/hash.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "sched_inject.h"
#include "sched_inject_tramp.h"

struct inj_point *inj_points[INJ_MAX_POINTS];
unsigned int inj_nr_points;
atomic64_t inj_point_injections;

/* A task sent into the trampoline from a point, until it reaches it again. */
struct inj_resume {
	struct task_struct *task;
	unsigned long addr;
};

static struct inj_resume inj_resumes[INJ_MAX_PENDING];

static void inj_release_resume(unsigned int i)
{
	WRITE_ONCE(inj_resumes[i].addr, 0);
	/* Free for a claim only after the old address is gone. */
	smp_store_release(&inj_resumes[i].task, NULL);
}

NOKPROBE_SYMBOL(inj_release_resume);

/* The current task's resume record for @addr, taken: true when it had one. */
static bool inj_take_resume(unsigned long addr)
{
	unsigned int i;

	for (i = 0; i < INJ_MAX_PENDING; i++) {
		if (READ_ONCE(inj_resumes[i].task) != current ||
		    READ_ONCE(inj_resumes[i].addr) != addr)
			continue;
		inj_release_resume(i);
		return true;
	}
	return false;
}

NOKPROBE_SYMBOL(inj_take_resume);

/* A record now the current task's, for its next hit of @addr; -1 when none is free. */
static int inj_claim_resume(unsigned long addr)
{
	unsigned int i;

	for (i = 0; i < INJ_MAX_PENDING; i++) {
		if (READ_ONCE(inj_resumes[i].task) ||
		    cmpxchg(&inj_resumes[i].task, NULL, current))
			continue;
		WRITE_ONCE(inj_resumes[i].addr, addr);
		return i;
	}
	return -1;
}

NOKPROBE_SYMBOL(inj_claim_resume);

/*
 * The targeted path's rate limit, per task: a token bucket.  A task earns
 * one injection per min_interval_us, except while it sleeps in the
 * trampoline from a point, and saves up to `burst` of them; a task not seen
 * yet has its whole burst, so a selftest that lasts a tenth of a second
 * still gets its sleeps, and one that lasts minutes sleeps a bounded share
 * of its time.
 *
 * Once it may inject again, a task's next hit would nearly always be the
 * first point of a path (svm_handle_exit, before the handler it calls, on
 * every exit), and the points after it would never inject.  So it also
 * passes 0 to 3 further hits first, a number taken from the clock when it
 * last resumed, and the sleeps spread along the path.
 *
 * A bucket per hash of the task.  Two tasks whose pointers hash alike share
 * one, which only limits them more; a task whose address is a dead task's
 * (its start time differs) gets a full one.  A write torn between two CPUs
 * can only misjudge a hit's budget, never make an injection unsafe: every
 * check of inj_point_check() runs before this one.
 */
struct inj_budget {
	struct task_struct *task;	/* the last to sleep from a point... */
	u64 start_time;			/* ...and its start, to tell a reused address */
	u64 ns;				/* tokens were saved at this time */
	unsigned int tokens;
	unsigned int spread;		/* hits still to pass once one is earned */
};

#define INJ_BUDGET_BITS 8
#define INJ_SPREAD_BITS 2
static struct inj_budget inj_budgets[1 << INJ_BUDGET_BITS];

static u64 inj_interval_ns(void)
{
	return (u64)READ_ONCE(inj_min_interval_us) * NSEC_PER_USEC;
}

NOKPROBE_SYMBOL(inj_interval_ns);

static struct inj_budget *inj_budget_of_current(void)
{
	return &inj_budgets[hash_ptr(current, INJ_BUDGET_BITS)];
}

NOKPROBE_SYMBOL(inj_budget_of_current);

/* The last task to use @budget had the current task's address, and is gone. */
static bool inj_budget_is_a_dead_tasks(const struct inj_budget *budget)
{
	return READ_ONCE(budget->task) == current &&
	       READ_ONCE(budget->start_time) != current->start_time;
}

NOKPROBE_SYMBOL(inj_budget_is_a_dead_tasks);

/*
 * The injections @budget allows at @at: what it saved plus what it earned
 * since, at most the burst; @partial (if not NULL) gets the time run
 * towards the next one.
 */
static unsigned int inj_tokens(const struct inj_budget *budget, u64 at, u64 interval,
			       u64 *partial)
{
	unsigned int burst = READ_ONCE(inj_burst);
	u64 since = READ_ONCE(budget->ns);
	u64 earned = 0, rest = 0;
	u64 tokens;

	if (at > since)
		earned = div64_u64_rem(at - since, interval, &rest);
	tokens = min_t(u64, READ_ONCE(budget->tokens) + earned, burst);
	if (partial)
		*partial = tokens == burst ? 0 : rest;
	return tokens;
}

NOKPROBE_SYMBOL(inj_tokens);

/*
 * The current task is back from a sleep a point sent it into at @fired_ns:
 * one token spent, none earned while asleep.  Called by the trampoline's
 * body before it releases the pending record, so the task's own hits
 * (refused as already_pending until then) never race with it.
 */
void inj_note_resumed(u64 fired_ns)
{
	u64 interval = inj_interval_ns();
	struct inj_budget *budget = inj_budget_of_current();
	u64 now = ktime_get_mono_fast_ns();
	unsigned int tokens = READ_ONCE(inj_burst);
	u64 partial = 0;

	if (!interval)
		return;
	if (!inj_budget_is_a_dead_tasks(budget))
		tokens = inj_tokens(budget, fired_ns, interval, &partial);
	WRITE_ONCE(budget->tokens, tokens ? tokens - 1 : 0);
	WRITE_ONCE(budget->ns, now - partial);
	WRITE_ONCE(budget->spread, hash_64(now, INJ_SPREAD_BITS));
	WRITE_ONCE(budget->start_time, current->start_time);
	WRITE_ONCE(budget->task, current);
}

/*
 * The current task has no injection to spend, or hits to pass first: those
 * are counted down only once it has one, so that they spread the injection
 * it has just earned, mostly while its guest ran.  Both count as too_soon.
 */
static bool inj_too_soon(void)
{
	u64 interval = inj_interval_ns();
	struct inj_budget *budget = inj_budget_of_current();
	unsigned int spread;

	if (!interval || inj_budget_is_a_dead_tasks(budget))
		return false;
	if (!inj_tokens(budget, ktime_get_mono_fast_ns(), interval, NULL))
		return true;
	spread = READ_ONCE(budget->spread);
	if (!spread)
		return false;
	WRITE_ONCE(budget->spread, spread - 1);
	return true;
}

NOKPROBE_SYMBOL(inj_too_soon);

/* Returns INJ_SKIP_NR when the task at the point may sleep; as inj_check(). */
static enum inj_skip inj_point_check(struct pt_regs *regs, unsigned int pc, int rcu_depth)
{
	enum inj_skip why;

	if (!inj_is_target(current))
		return INJ_SKIP_NOT_TARGET;
	if (current->flags & PF_EXITING)
		return INJ_SKIP_EXITING;
	/* int3 adds exactly NMI_OFFSET + HARDIRQ_OFFSET; anything more is the task's. */
	if (pc != NMI_OFFSET + HARDIRQ_OFFSET)
		return INJ_SKIP_PREEMPT_COUNT;
	/*
	 * Without irq_fpu_usable(): fpregs_lock() shows in the softirq count;
	 * kernel_fpu_begin() is for the choice of points to avoid.
	 */
	why = inj_check_context(regs, rcu_depth, true);
	if (why != INJ_SKIP_NR)
		return why;
	/* A point in code the trampoline's sleep runs would nest it. */
	if (inj_is_pending(current))
		return INJ_SKIP_ALREADY_PENDING;
	/* Last: every hit is checked, so a wrong point shows however often it is hit. */
	if (inj_too_soon())
		return INJ_SKIP_TOO_SOON;
	return INJ_SKIP_NR;
}

NOKPROBE_SYMBOL(inj_point_check);

static int inj_point_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct inj_point *point = container_of(kp, struct inj_point, kp);
	unsigned long addr = (unsigned long)kp->addr;
	unsigned int pc = preempt_count();
	int rcu_depth = rcu_preempt_depth();
	struct inj_pending *pending;
	enum inj_skip why;
	int index, resume;

	/* First: a task diverted before a disable still has its one hit to pass. */
	if (inj_take_resume(addr)) {
		atomic64_inc(&point->resumes);
		return 0;
	}
	if (!READ_ONCE(inj_enabled))
		return 0;
	rcu_read_lock();
	why = inj_point_check(regs, pc, rcu_depth);
	if (why != INJ_SKIP_NR) {
		atomic64_inc(&point->skips[why]);
		goto pass;
	}
	atomic64_inc(&point->hits);
	WRITE_ONCE(inj_last_ip, addr);
	WRITE_ONCE(inj_last_cpu, smp_processor_id());
	if (READ_ONCE(inj_count_only)) {
		atomic64_inc(&point->would_inject);
		goto pass;
	}
	resume = inj_claim_resume(addr);
	index = resume < 0 ? -1 : inj_claim_pending(current);
	if (index < 0) {
		if (resume >= 0)
			inj_release_resume(resume);
		atomic64_inc(&point->skips[INJ_SKIP_NO_SLOT]);
		goto pass;
	}
	pending = &inj_pending[index];
	pending->orig_ip = addr;
	pending->fired_ns = ktime_get_mono_fast_ns();
	pending->cpu = smp_processor_id();
	pending->from_point = true;
	/* Counted before the redirect, so unload waits for this task. */
	atomic_inc(&inj_inflight);
	atomic64_inc(&point->injections);
	atomic64_inc(&inj_point_injections);
	/* Return from int3 into the stub: the probed instruction has not run. */
	regs->ip = (unsigned long)inj_trampoline + index * INJ_STUB_SIZE;
	rcu_read_unlock();
	return 1;
pass:
	rcu_read_unlock();
	return 0;
}

NOKPROBE_SYMBOL(inj_point_pre);

/* Only there so the probe is never optimized into a jump (see above). */
static void inj_point_post(struct kprobe *kp, struct pt_regs *regs, unsigned long flags)
{
}

NOKPROBE_SYMBOL(inj_point_post);

/* Forget the resume records of @addr (0: every one): its probe is gone. */
static void inj_forget_resumes(unsigned long addr)
{
	unsigned int i;

	for (i = 0; i < INJ_MAX_PENDING; i++) {
		if (!addr || READ_ONCE(inj_resumes[i].addr) == addr)
			inj_release_resume(i);
	}
}

int inj_add_point(const char *name)
{
	struct inj_point *point;
	int ret;

	point = kzalloc(sizeof(*point), GFP_KERNEL);
	if (!point)
		return -ENOMEM;
	point->kp.symbol_name = kstrdup(name, GFP_KERNEL);
	if (!point->kp.symbol_name) {
		kfree(point);
		return -ENOMEM;
	}
	point->kp.pre_handler = inj_point_pre;
	point->kp.post_handler = inj_point_post;
	/* Registered disabled: checked before it can fire. */
	point->kp.flags = KPROBE_FLAG_DISABLED;
	mutex_lock(&inj_lock);
	if (inj_nr_points == INJ_MAX_POINTS) {
		pr_err("points: %s: there are %d points already, the most there can be\n",
		       name, INJ_MAX_POINTS);
		ret = -EINVAL;
		goto unlock;
	}
	ret = register_kprobe(&point->kp);
	if (ret) {
		pr_err("points: %s cannot be probed (%d): no such symbol, or not an instruction boundary, or entry, noinstr or blacklisted code\n",
		       name, ret);
		ret = -EINVAL;
		goto unlock;
	}
	if (within_module((unsigned long)point->kp.addr, THIS_MODULE)) {
		pr_err("points: %s: the injector's own text is never allowed\n", name);
		ret = -EINVAL;
		goto unregister;
	}
	sprint_symbol(point->symbol, (unsigned long)point->kp.addr);
	ret = enable_kprobe(&point->kp);
	if (ret) {
		pr_err("points: %s: enabling its kprobe failed (%d)\n", name, ret);
		goto unregister;
	}
	inj_points[inj_nr_points++] = point;
	mutex_unlock(&inj_lock);
	return 0;
unregister:
	unregister_kprobe(&point->kp);
unlock:
	mutex_unlock(&inj_lock);
	kfree(point->kp.symbol_name);
	kfree(point);
	return ret;
}

static void inj_free_point(struct inj_point *point)
{
	kfree(point->kp.symbol_name);
	kfree(point);
}

/* Unregister and free every point; no handler runs any more when it returns. */
void inj_clear_points(void)
{
	struct kprobe *kps[INJ_MAX_POINTS];
	unsigned int i, nr;

	mutex_lock(&inj_lock);
	nr = inj_nr_points;
	for (i = 0; i < nr; i++)
		kps[i] = &inj_points[i]->kp;
	/* Waits for every handler in flight (one grace period for all). */
	if (nr)
		unregister_kprobes(kps, nr);
	inj_forget_resumes(0);
	for (i = 0; i < nr; i++) {
		inj_free_point(inj_points[i]);
		inj_points[i] = NULL;
	}
	inj_nr_points = 0;
	mutex_unlock(&inj_lock);
}

/* The points in a module that is going away; inj_lock held. */
void inj_drop_module_points(struct module *mod)
{
	unsigned int i, kept = 0;

	lockdep_assert_held(&inj_lock);
	for (i = 0; i < inj_nr_points; i++) {
		struct inj_point *point = inj_points[i];
		unsigned long addr = (unsigned long)point->kp.addr;

		if (!within_module(addr, mod)) {
			inj_points[kept++] = point;
			continue;
		}
		pr_info("%s is unloading: dropped the point %s\n", mod->name, point->symbol);
		unregister_kprobe(&point->kp);
		inj_forget_resumes(addr);
		inj_free_point(point);
	}
	for (i = kept; i < inj_nr_points; i++)
		inj_points[i] = NULL;
	inj_nr_points = kept;
}
