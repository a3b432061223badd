// SPDX-License-Identifier: GPL-2.0
/*
 * sched_inject: the target, the task(s) the injector aims at: one thread
 * ("pid N"), every thread of a process ("tgid N") or every task of a
 * command name ("comm NAME"), parsed from what is written to debugfs
 * sched_inject/target and published under RCU for the timer callbacks;
 * "none" stops the timers.  (Not to be confused with inject_target.ko, the
 * test module whose thread is the usual target.)
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kernel.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "sched_inject.h"

int inj_set_target(const char *spec)
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
