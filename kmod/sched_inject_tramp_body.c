// SPDX-License-Identifier: GPL-2.0
/*
 * sched_inject: the trampoline's C half, inj_tramp_body(), run by the
 * injected task itself in process context (sched_inject_tramp.S calls it):
 * the msleep() (again if it did not switch), the statistics of the sleeps,
 * the rate limit's note of a point's sleep, and the release of the pending
 * record the timer callback or a point's pre-handler claimed.
 */
#include <linux/atomic.h>
#include <linux/compiler.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/objtool.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/wait.h>

#include "sched_inject.h"
#include "sched_inject_tramp.h"

static void inj_account_sleep(u64 slept_ns, unsigned long slept_jiffies, u64 dispatch_ns)
{
	spin_lock(&inj_sleep_lock);
	if (!inj_sleep_count || slept_ns < inj_sleep_ns_min)
		inj_sleep_ns_min = slept_ns;
	if (!inj_sleep_count || slept_jiffies < inj_sleep_jiffies_min)
		inj_sleep_jiffies_min = slept_jiffies;
	if (slept_ns > inj_sleep_ns_max)
		inj_sleep_ns_max = slept_ns;
	if (dispatch_ns > inj_dispatch_ns_max)
		inj_dispatch_ns_max = dispatch_ns;
	inj_sleep_ns_sum += slept_ns;
	inj_sleep_count++;
	spin_unlock(&inj_sleep_lock);
}

/*
 * The injection's promise is a real schedule: a voluntary context switch.
 * msleep() alone does not keep it when the CPU stalls (a vCPU the host
 * did not run, a long interrupt) between schedule_timeout() arming its
 * timer and schedule(): if the stall outlasts the sleep, the timer has
 * already woken the task, schedule() finds it runnable and returns without
 * a switch, and msleep() is done.  So sleep again until the task really
 * switched, a bounded number of times, and count both outcomes.  The sleep's
 * statistics include the extra sleeps.
 */
static void inj_sleep_and_switch(void)
{
	unsigned long nvcsw = current->nvcsw;
	unsigned int tries = 0;

	/*
	 * msleep(n) waits for msecs_to_jiffies(n) timer ticks, the first of
	 * which may come at once (until 6.13 it adds no tick of its own): with
	 * one tick more, every sleep lasts at least sleep_ms of ticks.  Ticks,
	 * not ktime: a guest whose tick runs late (TCG on a busy host) catches
	 * up several at once, so a sleep may end sooner by the clocksource.
	 */
	msleep(READ_ONCE(inj_sleep_ms) + jiffies_to_msecs(1));
	while (current->nvcsw == nvcsw) {
		if (++tries > INJ_SLEEP_RETRIES_MAX) {
			atomic64_inc(&inj_sleeps_without_switch);
			return;
		}
		atomic64_inc(&inj_sleep_retries);
		/* Two ticks: the next tick alone cannot end it before schedule(). */
		msleep(jiffies_to_msecs(2));
	}
}

NOKPROBE_SYMBOL(inj_sleep_and_switch);

/*
 * Called by inj_trampoline, on the injected task, with interrupts on and
 * nothing held.  @index is the number of the entry stub the task came
 * through, so the record the callback or pre-handler claimed for it.  @ret_slot is the
 * trampoline's return slot: it gets the interrupted address before the
 * sleep, so a stack trace of the sleeping task shows where it was.
 */
__visible void inj_tramp_body(unsigned long *ret_slot, unsigned long index)
{
	struct inj_pending *pending = &inj_pending[index];
	unsigned long start_jiffies;
	u64 start;

	*ret_slot = pending->orig_ip;
	atomic64_inc(&inj_tramp_entries);

	start = ktime_get_ns();
	start_jiffies = jiffies;
	inj_sleep_and_switch();
	/* A point's injection took its time on the NMI-safe clock, which may lag. */
	inj_account_sleep(ktime_get_ns() - start, jiffies - start_jiffies,
			  start > pending->fired_ns ? start - pending->fired_ns : 0);
	if (raw_smp_processor_id() != pending->cpu)
		atomic64_inc(&inj_migrations);
	if (pending->from_point)
		inj_note_resumed(pending->fired_ns);
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
