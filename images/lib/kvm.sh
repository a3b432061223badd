# SPDX-License-Identifier: GPL-2.0
# Helpers for the suites that use KVM inside the guest: which vendor module
# (kvm-amd or kvm-intel) the CPU can run, and skipping a case that needs one
# when it cannot (need_vendor's status is ktap.sh's KTAP_SKIP); where in KVM
# the injector may make a vCPU thread sleep (aim_at_kvm, which needs
# inject.sh).

vendor_module() {	# kvm-amd or kvm-intel, from the CPU flags; nothing otherwise
	if grep -qw svm /proc/cpuinfo; then
		echo kvm-amd
	elif grep -qw vmx /proc/cpuinfo; then
		echo kvm-intel
	fi
}

need_vendor() {
	[ -n "$(vendor_module)" ] && return 0
	echo "the CPU offers neither svm nor vmx"
	return "$KTAP_SKIP"
}

# Where the vCPU threads may sleep on a kernel without PREEMPT_COUNT, where
# spinlock and RCU sections in KVM are invisible to the injector: functions
# of KVM's instruction emulator (arch/x86/kvm/emulate.c).  That file takes
# no spinlock, RCU read lock, preempt_disable() or irq-off section anywhere;
# its only section is kvm_fpu_get() = fpregs_lock() = local_bh_disable(),
# which preempt_count shows on every kernel.  It is entered only from x86.c's
# emulation entry points with nothing held, and it already sleeps: fetching
# instruction bytes and operands reads guest memory with copy_from_user(),
# which may fault.  The vCPU thread is between vcpu_load() and vcpu_put()
# there, which KVM's preempt notifiers make safe to schedule out of.
# The tests check emulate.c still has no such section (tests/test_e2e_kmod.py).
EMULATOR_FUNCTIONS="x86_decode_insn decode_operand __do_insn_fetch_bytes x86_emulate_insn
init_decode_cache seg_base"

kvm_patched() {
	[ "$(cat /etc/pipeline/kvm-patch)" = applied ]
}

load_kvm() {
	need_vendor || return
	modprobe "$(vendor_module)"
}

# The ranges the injecting KVM cases use: all of KVM's text where
# PREEMPT_COUNT shows every section, else the emulator functions above.
aim_at_kvm() {
	if preempt_count_kernel; then
		echo "PREEMPT_COUNT kernel: ranges are all of kvm and $(vendor_module)'s text"
		for module in kvm "$(vendor_module | tr - _)"; do
			echo "$(module_range "$module")" >"$INJ/ranges" || return 1
		done
	else
		echo "no PREEMPT_COUNT: ranges are KVM's instruction emulator functions"
		for function in $EMULATOR_FUNCTIONS; do
			range=$(function_range kvm "$function")
			if [ -z "$range" ]; then
				echo "  $function: not in kvm's symbols (inlined?), left out"
				continue
			fi
			echo "$range" >"$INJ/ranges" || return 1
		done
	fi
	[ -n "$(cat "$INJ/ranges")" ] || { echo "no range inside kvm"; return 1; }
}

# The targeted path: a point on each KVM function of images/kvm-points whose
# module is loaded (module names there are /proc/modules').
KVM_POINTS=/usr/local/lib/pipeline/kvm-points
aim_points_at_kvm() {
	for point in $(sed -n 's/^\([a-z0-9_]*:[a-z0-9_]*\)$/\1/p' "$KVM_POINTS"); do
		loaded "${point%%:*}" || continue
		if ! echo "$point" 2>/dev/null >"$INJ/points"; then
			echo "the point $point was refused:" \
				"$(dmesg | grep 'sched_inject: points:' | tail -1)"
			return 1
		fi
	done
	[ -n "$(cat "$INJ/points")" ] || { echo "no point of $KVM_POINTS applies"; return 1; }
	echo "points: $(points_by_function hits | cut -d' ' -f1 | tr '\n' ' ')"
}

# "FUNCTION KEY=N..." for each point: the key=value fields of the points
# file whose key matches the regex KEYS.
points_fields() {	# points_fields KEYS
	awk -v keys="^($1)$" '{
		fields = ""
		for (i = 2; i < NF; i++) if (split($i, kv, "=") == 2 && kv[1] ~ keys) fields = fields " " $i
		for (i = 2; i <= NF; i++) if ($i ~ /\+0x/) name = $i
		sub(/\+.*/, "", name)
		print name fields
	}' "$INJ/points"
}

# "FUNCTION N" for each point, N its KEY=N field (0 when not shown).
points_by_function() {	# points_by_function KEY
	points_fields "$1" | awk '{ n = 0; if (NF > 1) { split($2, kv, "="); n = kv[2] } print $1, n }'
}

# A point's hits the injector refused because of what the task held: the
# list says the function is never reached that way, so each is the list's
# error (task_state: between set_current_state() and schedule()).
CONTEXT_REFUSALS="skip_preempt_count|skip_rt_softirq|skip_rcu_depth|skip_irqs_disabled|skip_flags_ac|skip_task_state|skip_pagefault_disabled|skip_fpu_in_use"
points_never_refused_for_context() {
	wrong=$(points_fields "$CONTEXT_REFUSALS" | awk 'NF > 1 { $1 = $1 ":"; print }')
	[ -z "$wrong" ] && return 0
	echo "$wrong" | sed 's/^/  refused at a point of the list: /'
	return 1
}
