// SPDX-License-Identifier: GPL-2.0
/*
 * sched_inject: the allowed ranges.  Each range written is validated (kernel
 * or module text, one owner, not the injector's own, not the spinlock
 * implementation, accepted by a disabled kprobe) and added to a new copy of
 * the range set, published under RCU for the timer callbacks; the per-range
 * statistics restart with each set.  A module notifier drops the ranges of
 * a module that is unloading.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>

#include "sched_inject.h"

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
	    !inj_unsafe_wide_ranges) {
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

void inj_reset_range_stats(void)
{
	unsigned int i, why;

	for (i = 0; i < INJ_MAX_RANGES; i++) {
		atomic64_set(&inj_range_stats[i].hits, 0);
		for (why = 0; why < INJ_SKIP_NR; why++)
			atomic64_set(&inj_range_stats[i].skips[why], 0);
	}
}

/* Replace the published set; the old one is freed after a grace period. */
void inj_publish_ranges(struct inj_range_set *set)
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

int inj_add_range(unsigned long start, unsigned long end)
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

/* Drop the ranges and points in a module that is going away: its addresses will be reused. */
static int inj_module_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;
	struct inj_range_set *set;
	unsigned int i, kept = 0;

	if (action != MODULE_STATE_GOING)
		return NOTIFY_DONE;
	mutex_lock(&inj_lock);
	inj_drop_module_points(mod);
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

struct notifier_block inj_module_nb = {
	.notifier_call = inj_module_notify,
};
