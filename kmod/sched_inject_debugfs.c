// SPDX-License-Identifier: GPL-2.0
/*
 * sched_inject: every file of debugfs sched_inject/.  enable, target,
 * period_us, sleep_ms, min_interval_us, burst, count_only, ranges, points
 * and stats, each a thin layer over the settings and state of the other
 * files; their format is documented in the project's docs/injector.md.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/seq_file.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "sched_inject.h"

/* Names in stats and ranges, in the order of enum inj_skip. */
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
	[INJ_SKIP_TOO_SOON] = "too_soon",
	[INJ_SKIP_STOPPING] = "stopping",
};

static const char * const inj_pc_names[INJ_PC_NR] = {
	"preempt", "softirq", "hardirq_nested", "nmi",
};

static struct dentry *inj_dir;

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

/* The number knobs: each file's private data is its inj_knob. */
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

/* " skip_<reason>=N" for each reason a range or point counted. */
static void inj_show_skips(struct seq_file *m, atomic64_t *skips)
{
	unsigned int why;

	for (why = 0; why < INJ_SKIP_NR; why++)
		if (atomic64_read(&skips[why]))
			seq_printf(m, " skip_%s=%lld", inj_skip_names[why],
				   atomic64_read(&skips[why]));
}

static int inj_ranges_show(struct seq_file *m, void *v)
{
	struct inj_range_set *set;
	unsigned int i;

	rcu_read_lock();
	set = rcu_dereference(inj_ranges);
	for (i = 0; set && i < set->nr; i++) {
		struct inj_range_stats *stats = &inj_range_stats[i];

		seq_printf(m, "%u %lx %lx hits=%lld", i, set->ranges[i].start,
			   set->ranges[i].end, atomic64_read(&stats->hits));
		inj_show_skips(m, stats->skips);
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

static int inj_points_show(struct seq_file *m, void *v)
{
	unsigned int i;

	mutex_lock(&inj_lock);
	for (i = 0; i < inj_nr_points; i++) {
		struct inj_point *point = inj_points[i];

		seq_printf(m, "%u hits=%lld injections=%lld would_inject=%lld resumes=%lld", i,
			   atomic64_read(&point->hits), atomic64_read(&point->injections),
			   atomic64_read(&point->would_inject), atomic64_read(&point->resumes));
		inj_show_skips(m, point->skips);
		seq_printf(m, " %s\n", point->symbol);
	}
	mutex_unlock(&inj_lock);
	return 0;
}

static int inj_points_open(struct inode *inode, struct file *file)
{
	return single_open(file, inj_points_show, NULL);
}

static ssize_t inj_points_write(struct file *file, const char __user *ubuf, size_t count,
				loff_t *ppos)
{
	char buf[KSYM_NAME_LEN + MODULE_NAME_LEN];
	int ret;

	ret = inj_read_line(ubuf, count, buf, sizeof(buf));
	if (ret)
		return ret;
	if (!strcmp(buf, "clear")) {
		inj_clear_points();
		return count;
	}
	ret = inj_add_point(buf);
	return ret ? ret : count;
}

static const struct file_operations inj_points_fops = {
	.owner = THIS_MODULE,
	.open = inj_points_open,
	.read = seq_read,
	.write = inj_points_write,
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
	seq_printf(m, "point_injections %lld\n", atomic64_read(&inj_point_injections));
	seq_printf(m, "would_inject %llu\n", sum.would_inject);
	seq_printf(m, "inflight %d\n", atomic_read(&inj_inflight));
	seq_printf(m, "trampoline_entries %lld\n", atomic64_read(&inj_tramp_entries));
	seq_printf(m, "trampoline_exits %lld\n", atomic64_read(&inj_tramp_exits));
	seq_printf(m, "cpu_migrations %lld\n", atomic64_read(&inj_migrations));
	seq_printf(m, "sleep_retries %lld\n", atomic64_read(&inj_sleep_retries));
	seq_printf(m, "sleeps_without_switch %lld\n", atomic64_read(&inj_sleeps_without_switch));
	for (i = 0; i < INJ_SKIP_NR; i++)
		seq_printf(m, "skip_%s %llu\n", inj_skip_names[i], sum.skips[i]);
	for (i = 0; i < INJ_PC_NR; i++)
		seq_printf(m, "preempt_count_%s %llu\n", inj_pc_names[i], sum.preempt_fields[i]);
	spin_lock(&inj_sleep_lock);
	seq_printf(m, "sleep_ns_min %llu\n", inj_sleep_ns_min);
	seq_printf(m, "sleep_ns_avg %llu\n",
		   inj_sleep_count ? div64_u64(inj_sleep_ns_sum, inj_sleep_count) : 0);
	seq_printf(m, "sleep_ns_max %llu\n", inj_sleep_ns_max);
	seq_printf(m, "sleep_jiffies_min %lu\n", inj_sleep_jiffies_min);
	seq_printf(m, "hz %d\n", HZ);
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
	inj_sleep_jiffies_min = 0;
	inj_sleep_ns_max = 0;
	inj_sleep_ns_sum = 0;
	inj_sleep_count = 0;
	inj_dispatch_ns_max = 0;
	spin_unlock(&inj_sleep_lock);
	atomic64_set(&inj_tramp_entries, 0);
	atomic64_set(&inj_point_injections, 0);
	atomic64_set(&inj_tramp_exits, 0);
	atomic64_set(&inj_migrations, 0);
	atomic64_set(&inj_sleep_retries, 0);
	atomic64_set(&inj_sleeps_without_switch, 0);
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

void inj_debugfs_create(void)
{
	inj_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("enable", 0600, inj_dir, NULL, &inj_enable_fops);
	debugfs_create_file("target", 0600, inj_dir, NULL, &inj_target_fops);
	debugfs_create_file("period_us", 0600, inj_dir, &inj_knob_period, &inj_knob_fops);
	debugfs_create_file("sleep_ms", 0600, inj_dir, &inj_knob_sleep, &inj_knob_fops);
	debugfs_create_file("min_interval_us", 0600, inj_dir, &inj_knob_min_interval,
			    &inj_knob_fops);
	debugfs_create_file("burst", 0600, inj_dir, &inj_knob_burst, &inj_knob_fops);
	debugfs_create_bool("count_only", 0600, inj_dir, &inj_count_only);
	debugfs_create_file("ranges", 0600, inj_dir, NULL, &inj_ranges_fops);
	debugfs_create_file("points", 0600, inj_dir, NULL, &inj_points_fops);
	debugfs_create_file("stats", 0600, inj_dir, NULL, &inj_stats_fops);
}

void inj_debugfs_remove(void)
{
	debugfs_remove_recursive(inj_dir);
}
