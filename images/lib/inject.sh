# SPDX-License-Identifier: GPL-2.0
# Helpers for the suites that drive the injector (sched_inject) and its
# target (inject_target), both kmod/ modules with a debugfs directory each:
# reading their counters and ranges, the text of a loaded module (where
# injection ranges come from), loading state, the invariants every injecting
# case checks, and whether the kernel has PREEMPT_COUNT (what the injector
# can see).  Sourcing it also defines ktap_before_case (see ktap.sh), so
# ktap_run unloads both modules before each case, in case a failed one left
# them behind.

INJ=/sys/kernel/debug/sched_inject
TGT=/sys/kernel/debug/inject_target

stat_of() {	# stat_of FILE NAME: the value of a "name value" line
	awk -v name="$2" '$1 == name { print $2 }' "$1"
}

# range_sum INDEX KEYS: the key=value fields of the injector's ranges line
# INDEX ("all": every line) whose key matches the regex KEYS, summed.
range_sum() {
	awk -v index_="$1" -v keys="^($2)$" '$1 == index_ || index_ == "all" {
		for (i = 4; i <= NF; i++) if (split($i, kv, "=") == 2 && kv[1] ~ keys) sum += kv[2]
	} END { print sum + 0 }' "$INJ/ranges"
}

target_range() {	# target_range NAME: "START END" of an inject_target range
	awk -v name="$1" '$1 == name { print $2, $3 }' "$TGT/ranges"
}

loaded() {
	grep -q "^$1 " /proc/modules
}

# The text symbols of MODULE, sorted: "address type name" lines.
module_text() {
	awk -v tag="[$1]" '$4 == tag && $2 ~ /^[tT]$/ && $3 !~ /^__(pfx|cfi)_/ { print $1, $2, $3 }' \
		/proc/kallsyms | sort
}

# "START END" of FUNCTION in MODULE: END is the next symbol's address.
function_range() {	# function_range MODULE FUNCTION
	module_text "$1" | awk -v name="$2" '
		found { print start, $1; exit } $3 == name { start = $1; found = 1 }'
}

# "START END" from MODULE's first text symbol to its last one's address.
module_range() {	# module_range MODULE
	module_text "$1" | awk 'NR == 1 { start = $1 } { last = $1 } END { print start, last }'
}

# Unload the target and the injector if loaded; true when both are gone.
# A failure says which module would not go and why.  The target first: its
# thread has stopped by the time its unload drops the injector's points in
# it, so no point is removed from an instruction a CPU is running through
# (under QEMU's TCG that oopses now and then: docs/design.md, known limits).
unload_all() {
	for module in inject_target sched_inject; do
		loaded "$module" || continue
		if ! why=$(rmmod "$module" 2>&1); then
			echo "unload: rmmod $module failed: $why"
			return 1
		fi
	done
	! loaded sched_inject && ! loaded inject_target
}

# Disable the injector and wait until its counters are final: disabling waits
# for every timer callback (hrtimer_cancel), and the module's inflight gauge
# counts the sleepers still inside the trampoline.  Never a fixed sleep: on a
# loaded host a sleeper may take seconds to be scheduled back.
QUIESCE_SECONDS=60
disable_and_quiesce() {
	echo 0 >"$INJ/enable" || return 1
	if ! wait_until "$QUIESCE_SECONDS" no_sleeper_inflight; then
		echo "quiesce: inflight $(stat_of "$INJ/stats" inflight) after" \
			"$QUIESCE_SECONDS s: a sleeper never came back from the trampoline"
		return 1
	fi
	[ "$waited_tenths" -ge 10 ] &&
		echo "quiesce: the last sleeper returned after $waited_tenths tenths of a second"
	return 0
}

injected_at_least() {	# injected_at_least N
	[ "$(stat_of "$INJ/stats" injections)" -ge "$1" ]
}

no_sleeper_inflight() {
	[ "$(stat_of "$INJ/stats" inflight)" = 0 ]
}

# What the hook found left behind by each case (lifecycle's last case reads
# it: after the hook has cleaned up, the state itself proves nothing).
LEFTOVERS=/tmp/pipeline-leftovers

ktap_before_case() {	# ktap_run's hook: whatever the case before left behind
	left=
	loaded sched_inject && left="$left sched_inject"
	loaded inject_target && left="$left inject_target"
	[ -e "$INJ" ] && left="$left $INJ"
	[ -e "$TGT" ] && left="$left $TGT"
	[ -n "$left" ] && [ -n "$ktap_last_case" ] &&
		echo "after $ktap_last_case:$left" >>"$LEFTOVERS"
	unload_all
}

# fires must equal injections + would_inject + every skip reason.
counters_add_up() {
	awk '$1 == "fires" { fires = $2 }
	     $1 == "injections" || $1 == "would_inject" || $1 ~ /^skip_/ { sum += $2 }
	     END { printf "fires %d, injections + would_inject + skips %d\n", fires, sum
		   exit fires != sum }' "$INJ/stats"
}

no_corruption() {	# inject_target saw every register and flag intact
	corruptions=$(stat_of "$TGT/stats" corruptions)
	echo "corruptions: $corruptions in $(stat_of "$TGT/stats" iterations) iterations"
	[ "$corruptions" = 0 ]
}

# Every injection, the timer's and the points', entered the trampoline and left it.
trampoline_balanced() {
	entries=$(stat_of "$INJ/stats" trampoline_entries)
	exits=$(stat_of "$INJ/stats" trampoline_exits)
	injections=$(stat_of "$INJ/stats" injections)
	at_points=$(stat_of "$INJ/stats" point_injections)
	echo "injections $injections by the timer and $at_points at points, trampoline" \
		"entries $entries, exits $exits"
	numbers injections="$injections" point_injections="$at_points" || return 1
	[ "$entries" = $((injections + at_points)) ] && [ "$exits" = "$entries" ]
}

point_stat() {	# point_stat INDEX KEY: a key=value field of the points line INDEX
	awk -v index_="$1" -v key="$2" '$1 == index_ {
		for (i = 2; i <= NF; i++) if (split($i, kv, "=") == 2 && kv[1] == key) print kv[2]
	}' "$INJ/points"
}

point_injected_at_least() {	# point_injected_at_least N
	[ "$(stat_of "$INJ/stats" point_injections)" -ge "$1" ]
}

every_sleep_switched() {	# the injector's retries got every sleep its switch
	without=$(stat_of "$INJ/stats" sleeps_without_switch)
	echo "injected sleeps without a voluntary switch: $without"
	[ "$without" = 0 ]
}

preempt_count_kernel() {
	grep -q '^CONFIG_PREEMPT_COUNT=y' /etc/pipeline/kernel.config
}
