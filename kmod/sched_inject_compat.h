/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few places where 6.1, 6.12 and newer kernels differ for the injector.
 * Kbuild probes the kernel's headers for each feature (INJ_HAVE_*), so the
 * code follows what the tree provides rather than a version number.
 */
#ifndef _SCHED_INJECT_COMPAT_H
#define _SCHED_INJECT_COMPAT_H

#include <linux/hrtimer.h>
#include <asm/ptrace.h>

/* hrtimer_setup() arrived in 6.13; hrtimer_init() went away in 6.15. */
static inline void inj_hrtimer_setup(struct hrtimer *timer,
				     enum hrtimer_restart (*fn)(struct hrtimer *))
{
#ifdef INJ_HAVE_HRTIMER_SETUP
	hrtimer_setup(timer, fn, CLOCK_MONOTONIC, HRTIMER_MODE_REL_HARD);
#else
	hrtimer_init(timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_HARD);
	timer->function = fn;
#endif
}

/*
 * With FRED (6.9+, when booted with it) an event taken at a higher stack
 * level did not interrupt code on the task stack, and a frame "waiting for
 * ENDBR" would need one at the trampoline, which has none.  Without FRED
 * the frame has no such fields and the stack checks decide.
 */
static inline bool inj_fred_frame_ok(struct pt_regs *regs)
{
#ifdef CONFIG_X86_FRED
	if (cpu_feature_enabled(X86_FEATURE_FRED))
		return regs->fred_cs.sl == 0 && !regs->fred_cs.wfe;
#endif
	return true;
}

#endif /* _SCHED_INJECT_COMPAT_H */
