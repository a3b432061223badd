# SPDX-License-Identifier: GPL-2.0
# The KTAP framework of the suites (Documentation/dev-tools/ktap.rst), and
# nothing else: selecting, running and reporting cases.  Its output is shaped
# like KUnit's so the kernel's own tools (kunit.py parse) read it: init
# writes the top-level header and plan, each suite is one top-level test
# (number KTAP_SUITE_NUMBER) with its cases indented beneath it.
#
# A suite sources this file and the helper libraries it uses, defines one
# shell function per case, case_NAME, each standing on its own (it loads
# what it needs and leaves nothing loaded), and ends with ktap_run:
#
#   . /usr/local/lib/pipeline/ktap.sh
#   . /usr/local/lib/pipeline/inject.sh
#   case_NAME() { ...; }
#   ktap_run SUITE NAME...
#
# ktap_run runs the cases PIPELINE_CASES selects (comma-separated globs over
# SUITE.NAME; a glob without a dot names whole suites; empty selects all).
# Before each case it calls ktap_before_case, when a suite or library
# defines it (inject.sh does: it unloads what a failed case left behind),
# with its output and status ignored; ktap_last_case then holds the case
# before and how it went ("NAME pass|fail|skip"; empty before the first).  A case's output becomes diagnostic
# lines and its exit status the result: 0 ok, KTAP_SKIP (4) skipped with its
# last output line as the reason, anything else not ok.  ktap_run's own
# status is 0 when nothing failed.
#
# A case may have subtests of its own (the kselftest suite's are the kernel
# runner's results): it writes their KTAP document to the file named by
# KTAP_NESTED, and ktap_run prints it one level deeper, before the case's
# diagnostics and result line.  A suite may define ktap_suite_notes: its
# output becomes diagnostic lines after the suite's plan (e.g. what it
# leaves out, and why).
#
# Every result line, a case's and the suite's, is preceded by one diagnostic
# line at its own indentation with the test's wall time in milliseconds,
# measured on the guest's monotonic clock (/proc/uptime, centiseconds):
#
#       # duration_ms: 10230
#       ok 1 injection_rate
#
# pipeline/ktap.py takes it as the test's duration; KTAP readers that do not
# know it (kunit.py) keep it as an ordinary diagnostic line.
#
# With pipeline.lava=1 on the kernel command line (a LAVA job's), each case's
# verdict also goes to the console as one flat line, "pipeline-case:
# SUITE.CASE pass|fail|skip", which the job's monitor turns into a LAVA test
# case: the KTAP lines themselves nest, and one line cannot name the suite.

KTAP_SKIP=4
KTAP_NESTED=/tmp/ktap-nested

# expect WHAT TEST...: run TEST (a command, e.g. [ "$n" -gt 0 ]); when it
# fails, say which condition failed, so a case that is not ok names it.
# WHAT carries the values it was judged on.
# numbers NAME=VALUE...: each VALUE must be a whole number, else say which
# one is missing or not a number, and fail.  "[ "" -lt 5 ]" is an error,
# which as an if's condition reads as false: a missing counter must fail a
# case, never let it pass.
numbers() {
	for ktap_pair in "$@"; do
		case ${ktap_pair#*=} in
		'' | *[!0-9]*)
			echo "FAILED: ${ktap_pair%%=*} is missing or not a number ('${ktap_pair#*=}')"
			return 1
			;;
		esac
	done
}

expect() {
	ktap_what=$1
	shift
	"$@" && return 0
	echo "FAILED: $ktap_what"
	return 1
}

# wait_until SECONDS TEST...: run TEST (a command) every tenth of a second
# until it succeeds (return 0) or SECONDS have passed (return 1);
# waited_tenths says how long it waited.  For a state the guest reports
# (a counter, a flag), never a fixed sleep: a loaded host makes it late.
wait_until() {
	wait_limit=$(($1 * 10))
	shift
	waited_tenths=0
	until "$@"; do
		[ "$waited_tenths" -ge "$wait_limit" ] && return 1
		sleep 0.1
		waited_tenths=$((waited_tenths + 1))
	done
}

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

# ktap_clock: sets ktap_cs to the centiseconds since boot.  /proc/uptime is
# "SECONDS.CC IDLE"; the 1 put before CC keeps "08" from reading as octal.
ktap_clock() {
	read -r ktap_uptime _ </proc/uptime
	ktap_cs=$((${ktap_uptime%.*} * 100 + 1${ktap_uptime#*.} - 100))
}

ktap_duration() {	# ktap_duration INDENT START: the line for a test begun at START
	ktap_clock
	echo "$1# duration_ms: $(((ktap_cs - $2) * 10))"
}

ktap_run() {
	suite=$1
	shift
	ktap_clock
	ktap_suite_start=$ktap_cs
	selected=
	for name in "$@"; do
		ktap_selected "$suite" "$name" && selected="$selected $name"
	done
	set -- $selected
	echo "    KTAP version 1"
	echo "    # Subtest: $suite"
	echo "    1..$#"
	if command -v ktap_suite_notes >/dev/null; then
		ktap_suite_notes 2>&1 | sed 's/^/    # /'
	fi
	number=0
	failures=0
	for name in "$@"; do
		number=$((number + 1))
		if command -v ktap_before_case >/dev/null; then
			ktap_before_case >/dev/null 2>&1
		fi
		ktap_clock
		ktap_case_start=$ktap_cs
		rm -f "$KTAP_NESTED"
		output=$("case_$name" 2>&1)
		status=$?
		[ -s "$KTAP_NESTED" ] && sed 's/^/        /' "$KTAP_NESTED"
		[ -n "$output" ] && printf '%s\n' "$output" | sed 's/^/    # /'
		ktap_duration "    " "$ktap_case_start"
		if [ "$status" -eq 0 ]; then
			echo "    ok $number $name"
			verdict=pass
		elif [ "$status" -eq "$KTAP_SKIP" ]; then
			echo "    ok $number $name # SKIP $(printf '%s\n' "$output" | tail -n 1)"
			verdict=skip
		else
			echo "    not ok $number $name"
			failures=$((failures + 1))
			verdict=fail
		fi
		if [ "$PIPELINE_LAVA" = 1 ]; then
			echo "pipeline-case: $suite.$name $verdict" >>"${PIPELINE_CONSOLE:-/dev/console}"
		fi
		ktap_last_case="$name $verdict"	# for ktap_before_case, before the next one
	done
	ktap_duration "" "$ktap_suite_start"
	if [ "$failures" -eq 0 ]; then
		echo "ok ${KTAP_SUITE_NUMBER:-1} $suite"
	else
		echo "not ok ${KTAP_SUITE_NUMBER:-1} $suite"
	fi
	[ "$failures" -eq 0 ]
}
