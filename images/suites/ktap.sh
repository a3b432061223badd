# SPDX-License-Identifier: GPL-2.0
# KTAP output helpers for suite scripts (Documentation/dev-tools/ktap.rst),
# shaped like KUnit's output so the kernel's own tools (kunit.py parse) read
# it: init writes the top-level header and plan, each suite is one top-level
# test (number KTAP_SUITE_NUMBER) with its cases indented beneath it.
#
# A suite defines one shell function per case, case_NAME, each standing on
# its own (it loads what it needs and leaves nothing loaded; ktap_run
# unloads the injector and the target before each case anyway, in case a
# failed one left them behind), and ends with
#
#   . /usr/local/lib/pipeline/ktap.sh
#   ktap_run SUITE NAME...
#
# ktap_run runs the cases PIPELINE_CASES selects (comma-separated globs over
# SUITE.NAME; a glob without a dot names whole suites; empty selects all).
# A case's output becomes diagnostic lines and its exit status the result:
# 0 ok, KTAP_SKIP (4) skipped with its last output line as the reason,
# anything else not ok.  ktap_run's own status is 0 when nothing failed.

KTAP_SKIP=4

ktap_selected() {	# ktap_selected SUITE NAME
	[ -z "$PIPELINE_CASES" ] && return 0
	old_ifs=$IFS
	IFS=,
	for pattern in $PIPELINE_CASES; do
		case $pattern in
		*.*) subject="$1.$2" ;;
		*) subject=$1 ;;
		esac
		# shellcheck disable=SC2254
		case $subject in
		$pattern) IFS=$old_ifs; return 0 ;;
		esac
	done
	IFS=$old_ifs
	return 1
}

ktap_run() {
	suite=$1
	shift
	selected=
	for name in "$@"; do
		ktap_selected "$suite" "$name" && selected="$selected $name"
	done
	set -- $selected
	echo "    KTAP version 1"
	echo "    # Subtest: $suite"
	echo "    1..$#"
	number=0
	failures=0
	for name in "$@"; do
		number=$((number + 1))
		unload_all >/dev/null 2>&1	# whatever a failed case left behind
		output=$("case_$name" 2>&1)
		status=$?
		[ -n "$output" ] && printf '%s\n' "$output" | sed 's/^/    # /'
		if [ "$status" -eq 0 ]; then
			echo "    ok $number $name"
		elif [ "$status" -eq "$KTAP_SKIP" ]; then
			echo "    ok $number $name # SKIP $(printf '%s\n' "$output" | tail -n 1)"
		else
			echo "    not ok $number $name"
			failures=$((failures + 1))
		fi
	done
	if [ "$failures" -eq 0 ]; then
		echo "ok ${KTAP_SUITE_NUMBER:-1} $suite"
	else
		echo "not ok ${KTAP_SUITE_NUMBER:-1} $suite"
	fi
	[ "$failures" -eq 0 ]
}

# --- helpers shared by the suites

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

# Unload the injector and the target if loaded; true when both are gone.
unload_all() {
	! loaded sched_inject || rmmod sched_inject || return 1
	! loaded inject_target || rmmod inject_target || return 1
	! loaded sched_inject && ! loaded inject_target
}

# fires must equal injections + would_inject + every skip reason.
counters_add_up() {
	awk '$1 == "fires" { fires = $2 }
	     $1 == "injections" || $1 == "would_inject" || $1 ~ /^skip_/ { sum += $2 }
	     END { printf "fires %d, injections + would_inject + skips %d\n", fires, sum
		   exit fires != sum }' "$INJ/stats"
}

trampoline_balanced() {	# every injection entered the trampoline and left it
	entries=$(stat_of "$INJ/stats" trampoline_entries)
	exits=$(stat_of "$INJ/stats" trampoline_exits)
	injections=$(stat_of "$INJ/stats" injections)
	echo "injections $injections, trampoline entries $entries, exits $exits"
	[ "$entries" = "$injections" ] && [ "$exits" = "$injections" ]
}

preempt_count_kernel() {
	grep -q '^CONFIG_PREEMPT_COUNT=y' /etc/pipeline/kernel.config
}

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

