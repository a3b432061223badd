// SPDX-License-Identifier: GPL-2.0
/*
 * inject_target: a kernel thread for the schedule injector to aim at.
 *
 * The thread alternates between inj_target_regcheck(), an assembly loop
 * that keeps known values in every general-purpose register and checks
 * them and the flags on each iteration, and one pass through critical
 * sections of each kind (preempt_disable, spin_lock, rcu_read_lock,
 * local_bh_disable, local_irq_disable, kernel_fpu_begin), each spinning in
 * its own assembly function.  A voluntary context switch during a section
 * can only be an injected sleep, so it is counted as an injection that
 * landed inside.
 *
 * debugfs inject_target/: "pid" (the thread, for the injector's target),
 * "ranges" (the loop's and each section's address range), "stats",
 * "warn": a write makes a real WARN, so the host's console classifier can
 * be tested against the kernel's own output, and "stall_sleeps": a write of
 * N makes a second thread stall the target's CPU N times, aimed at the
 * window between an injected sleep's set_current_state() and its context
 * switch (see inj_staller_fn()); reading it shows the stalls left and sent.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bottom_half.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/irqflags.h>
#include <linux/kallsyms.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/minmax.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/preempt.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <asm/fpu/api.h>

#include "inject_target.h"

static unsigned long spin_loops = 20000;
module_param(spin_loops, ulong, 0644);
MODULE_PARM_DESC(spin_loops, "iterations of each critical section's spin (default 20000)");

static unsigned long loop_iterations = 200000;
module_param(loop_iterations, ulong, 0644);
MODULE_PARM_DESC(loop_iterations, "register-check iterations between section passes (default 200000)");

static unsigned int stall_ms = 30;
module_param(stall_ms, uint, 0644);
MODULE_PARM_DESC(stall_ms, "how long each stall_sleeps stall holds the target's CPU, at most 100 (default 30 ms)");

/*
 * stall_sleeps gives up on the stalls it could not send within this.  A
 * quiet host sends 100 in seconds; debug kernels' guests beside a kernel
 * build sent 48 and 24 in 30 s: the deadline is for a hung request, not a
 * pace to keep.  The smoke suite's stalled_sleep_still_switches waits a
 * little longer than this (STALL_WAIT_SECONDS).
 */
#define STALL_TIMEOUT_SECONDS	300
#define STALL_MAX		1000
/* Interrupts off for longer would trip lockup and RCU stall detectors. */
#define STALL_MS_MAX		100U

struct inj_regcheck inj_regcheck;

enum inj_section {
	SECTION_PREEMPT,
	SECTION_SPINLOCK,
	SECTION_RCU,
	SECTION_BH,
	SECTION_IRQ,
	SECTION_FPU,
	SECTION_NR,
};

static const struct {
	const char *name;
	void (*spin)(unsigned long loops);
} inj_sections[SECTION_NR] = {
	[SECTION_PREEMPT] = { "preempt_disable", inj_target_spin_preempt },
	[SECTION_SPINLOCK] = { "spin_lock", inj_target_spin_spinlock },
	[SECTION_RCU] = { "rcu_read_lock", inj_target_spin_rcu },
	[SECTION_BH] = { "local_bh_disable", inj_target_spin_bh },
	[SECTION_IRQ] = { "local_irq_disable", inj_target_spin_irq },
	[SECTION_FPU] = { "kernel_fpu_begin", inj_target_spin_fpu },
};

static struct {
	u64 iterations;
	u64 corruptions;
	u64 last_failure;	/* RC_FAIL_* of the last corruption */
	u64 last_failure_value;
	u64 last_failure_iteration;
	u64 entered[SECTION_NR];
	u64 injected_inside[SECTION_NR];
} inj_stats;

static DEFINE_SPINLOCK(inj_section_lock);
static struct task_struct *inj_thread;
static struct dentry *inj_dir;

static struct task_struct *inj_staller;
static DECLARE_WAIT_QUEUE_HEAD(inj_staller_wq);
static atomic_t inj_stalls_wanted = ATOMIC_INIT(0);
static atomic_t inj_stalls_sent = ATOMIC_INIT(0);
static unsigned long inj_stalls_deadline;
static DEFINE_MUTEX(inj_stall_write_lock);

/*
 * Spin inside a section; true if the thread slept meanwhile.  Read between
 * the section's enter and leave: an interrupt held off by local_irq_disable()
 * arrives right after local_irq_enable(), outside the section.
 */
static bool inj_spin_slept(void (*spin)(unsigned long loops), unsigned long loops)
{
	unsigned long nvcsw = current->nvcsw;

	spin(loops);
	return current->nvcsw != nvcsw;
}

/* Run one section; a voluntary switch inside it was an injected sleep. */
static void inj_run_section(enum inj_section section)
{
	unsigned long loops = READ_ONCE(spin_loops) ?: 1;
	void (*spin)(unsigned long loops) = inj_sections[section].spin;
	bool slept = false;

	switch (section) {
	case SECTION_PREEMPT:
		preempt_disable();
		slept = inj_spin_slept(spin, loops);
		preempt_enable();
		break;
	case SECTION_SPINLOCK:
		spin_lock(&inj_section_lock);
		slept = inj_spin_slept(spin, loops);
		spin_unlock(&inj_section_lock);
		break;
	case SECTION_RCU:
		rcu_read_lock();
		slept = inj_spin_slept(spin, loops);
		rcu_read_unlock();
		break;
	case SECTION_BH:
		local_bh_disable();
		slept = inj_spin_slept(spin, loops);
		local_bh_enable();
		break;
	case SECTION_IRQ:
		local_irq_disable();
		slept = inj_spin_slept(spin, loops);
		local_irq_enable();
		break;
	case SECTION_FPU:
		kernel_fpu_begin();
		slept = inj_spin_slept(spin, loops);
		kernel_fpu_end();
		break;
	default:
		break;
	}
	WRITE_ONCE(inj_stats.entered[section], inj_stats.entered[section] + 1);
	if (slept)
		WRITE_ONCE(inj_stats.injected_inside[section],
			   inj_stats.injected_inside[section] + 1);
}

static int inj_target_fn(void *unused)
{
	unsigned long result;
	int section;

	while (!kthread_should_stop()) {
		WRITE_ONCE(inj_regcheck.limit, READ_ONCE(loop_iterations) ?: 1);
		result = inj_target_regcheck();
		WRITE_ONCE(inj_stats.iterations, inj_stats.iterations + inj_regcheck.mirror);
		if (result != RC_OK) {
			WRITE_ONCE(inj_stats.corruptions, inj_stats.corruptions + 1);
			WRITE_ONCE(inj_stats.last_failure, result);
			WRITE_ONCE(inj_stats.last_failure_value, inj_regcheck.fail_value);
			WRITE_ONCE(inj_stats.last_failure_iteration, inj_regcheck.fail_iteration);
			pr_err("register check %lu failed at iteration %llu: value %llx\n",
			       result, inj_regcheck.fail_iteration, inj_regcheck.fail_value);
		}
		for (section = 0; section < SECTION_NR; section++)
			inj_run_section(section);
		cond_resched();
	}
	return 0;
}

/* "name+0x0/0x40 [inject_target]" -> 0x40, the function's size. */
static unsigned long inj_function_size(void *function)
{
	char symbol[KSYM_SYMBOL_LEN];
	const char *slash;
	unsigned long size;

	sprint_symbol(symbol, (unsigned long)function);
	slash = strchr(symbol, '/');
	if (!slash || sscanf(slash + 1, "%lx", &size) != 1)
		return 0;
	return size;
}

static int inj_ranges_show(struct seq_file *m, void *v)
{
	int i;

	seq_printf(m, "loop %lx %lx\n", (unsigned long)inj_target_loop_start,
		   (unsigned long)inj_target_loop_end);
	for (i = 0; i < SECTION_NR; i++) {
		unsigned long start = (unsigned long)inj_sections[i].spin;

		seq_printf(m, "%s %lx %lx\n", inj_sections[i].name, start,
			   start + inj_function_size(inj_sections[i].spin));
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(inj_ranges);

static int inj_stats_show(struct seq_file *m, void *v)
{
	int i;

	seq_printf(m, "iterations %llu\n", READ_ONCE(inj_stats.iterations));
	seq_printf(m, "corruptions %llu\n", READ_ONCE(inj_stats.corruptions));
	seq_printf(m, "last_failure %llu\n", READ_ONCE(inj_stats.last_failure));
	seq_printf(m, "last_failure_value %llx\n", READ_ONCE(inj_stats.last_failure_value));
	seq_printf(m, "last_failure_iteration %llu\n",
		   READ_ONCE(inj_stats.last_failure_iteration));
	seq_printf(m, "voluntary_switches %lu\n", READ_ONCE(inj_thread->nvcsw));
	for (i = 0; i < SECTION_NR; i++) {
		seq_printf(m, "%s_entered %llu\n", inj_sections[i].name,
			   READ_ONCE(inj_stats.entered[i]));
		seq_printf(m, "%s_injected_inside %llu\n", inj_sections[i].name,
			   READ_ONCE(inj_stats.injected_inside[i]));
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(inj_stats);

static int inj_pid_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%d\n", task_pid_nr(inj_thread));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(inj_pid);

static ssize_t inj_warn_write(struct file *file, const char __user *ubuf, size_t count,
			      loff_t *ppos)
{
	WARN(1, "WARN requested through debugfs\n");
	return count;
}

static const struct file_operations inj_warn_fops = {
	.owner = THIS_MODULE,
	.write = inj_warn_write,
	.llseek = noop_llseek,
};

/* The IPI's handler: hold this CPU, interrupts off, past the sleep's timeout. */
static void inj_stall_this_cpu(void *unused)
{
	mdelay(min(READ_ONCE(stall_ms), STALL_MS_MAX));
}

/*
 * The thread has said it sleeps (set_current_state()) but is still on its
 * CPU: between msleep() arming its timer and schedule() switching away.
 */
static bool inj_thread_about_to_sleep(void)
{
	return READ_ONCE(inj_thread->__state) == TASK_UNINTERRUPTIBLE &&
	       READ_ONCE(inj_thread->on_cpu);
}

/*
 * Make the stall a vCPU suffers when its host does not run it, on purpose
 * and where it hurts: when the target is about to sleep, an IPI stops its
 * CPU for longer than the sleep, so the sleep's timer has fired and woken
 * the thread by the time schedule() runs (the injector must then sleep
 * again to really switch).  One stall per sleep of the thread: after one,
 * wait for its next voluntary switch.  An IPI that lands after schedule()
 * switched away stalls whatever runs next and is harmless; under TCG about
 * one in ten lands in the window.  The thread busy-polls its CPU while
 * stalls are wanted, up to STALL_TIMEOUT_SECONDS: a test module's price.
 */
static void inj_stall_if_about_to_sleep(unsigned long deadline)
{
	unsigned long nvcsw = READ_ONCE(inj_thread->nvcsw);
	int cpu = task_cpu(inj_thread);

	/* A CPU gone offline meanwhile refuses the IPI: not sent. */
	if (!inj_thread_about_to_sleep() || cpu == raw_smp_processor_id() ||
	    smp_call_function_single(cpu, inj_stall_this_cpu, NULL, 1))
		return;
	atomic_dec(&inj_stalls_wanted);
	atomic_inc(&inj_stalls_sent);
	while (READ_ONCE(inj_thread->nvcsw) == nvcsw &&
	       !kthread_should_stop() && time_before(jiffies, deadline))
		cond_resched();
}

/* Serve stall_sleeps requests until none is wanted or their deadline passed. */
static int inj_staller_fn(void *unused)
{
	unsigned long deadline;

	while (!kthread_should_stop()) {
		wait_event_interruptible(inj_staller_wq, atomic_read(&inj_stalls_wanted) > 0 ||
					 kthread_should_stop());
		while (atomic_read_acquire(&inj_stalls_wanted) > 0 && !kthread_should_stop()) {
			/* Read after wanted: the request's own (inj_stall_write()). */
			deadline = READ_ONCE(inj_stalls_deadline);
			if (time_after(jiffies, deadline)) {
				atomic_set(&inj_stalls_wanted, 0);
				break;
			}
			inj_stall_if_about_to_sleep(deadline);
			cond_resched();
		}
	}
	return 0;
}

static int inj_stall_show(struct seq_file *m, void *v)
{
	seq_printf(m, "wanted %d\n", atomic_read(&inj_stalls_wanted));
	seq_printf(m, "sent %d\n", atomic_read(&inj_stalls_sent));
	return 0;
}

static int inj_stall_open(struct inode *inode, struct file *file)
{
	return single_open(file, inj_stall_show, NULL);
}

static ssize_t inj_stall_write(struct file *file, const char __user *ubuf, size_t count,
			       loff_t *ppos)
{
	unsigned int stalls;
	int ret;

	ret = kstrtouint_from_user(ubuf, count, 0, &stalls);
	if (ret)
		return ret;
	if (stalls > STALL_MAX)
		return -EINVAL;
	/* One request at a time: its counter and deadline are its own. */
	mutex_lock(&inj_stall_write_lock);
	if (atomic_read(&inj_stalls_wanted)) {
		mutex_unlock(&inj_stall_write_lock);
		return -EBUSY;
	}
	atomic_set(&inj_stalls_sent, 0);
	WRITE_ONCE(inj_stalls_deadline, jiffies + STALL_TIMEOUT_SECONDS * HZ);
	atomic_set_release(&inj_stalls_wanted, stalls);
	mutex_unlock(&inj_stall_write_lock);
	wake_up(&inj_staller_wq);
	return count;
}

static const struct file_operations inj_stall_fops = {
	.owner = THIS_MODULE,
	.open = inj_stall_open,
	.read = seq_read,
	.write = inj_stall_write,
	.llseek = seq_lseek,
	.release = single_release,
};

static int __init inject_target_init(void)
{
	inj_thread = kthread_run(inj_target_fn, NULL, "inject_target");
	if (IS_ERR(inj_thread)) {
		pr_err("cannot start the thread: %ld\n", PTR_ERR(inj_thread));
		return PTR_ERR(inj_thread);
	}
	get_task_struct(inj_thread);
	inj_staller = kthread_run(inj_staller_fn, NULL, "inject_staller");
	if (IS_ERR(inj_staller)) {
		pr_err("cannot start the staller thread: %ld\n", PTR_ERR(inj_staller));
		WRITE_ONCE(inj_regcheck.stop, 1);
		kthread_stop(inj_thread);
		put_task_struct(inj_thread);
		return PTR_ERR(inj_staller);
	}
	inj_dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	debugfs_create_file("pid", 0400, inj_dir, NULL, &inj_pid_fops);
	debugfs_create_file("ranges", 0400, inj_dir, NULL, &inj_ranges_fops);
	debugfs_create_file("stats", 0400, inj_dir, NULL, &inj_stats_fops);
	debugfs_create_file("warn", 0200, inj_dir, NULL, &inj_warn_fops);
	debugfs_create_file("stall_sleeps", 0600, inj_dir, NULL, &inj_stall_fops);
	pr_info("thread %d running\n", task_pid_nr(inj_thread));
	return 0;
}

static void __exit inject_target_exit(void)
{
	debugfs_remove_recursive(inj_dir);
	kthread_stop(inj_staller);
	WRITE_ONCE(inj_regcheck.stop, 1);
	kthread_stop(inj_thread);
	put_task_struct(inj_thread);
	pr_info("stopped after %llu iterations, %llu corruptions\n", inj_stats.iterations,
		inj_stats.corruptions);
}

module_init(inject_target_init);
module_exit(inject_target_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("A kernel thread with register-checking and critical-section loops to inject into");
