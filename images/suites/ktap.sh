# SPDX-License-Identifier: GPL-2.0
# KTAP output helpers for suite scripts (Documentation/dev-tools/ktap.rst),
# shaped like KUnit's output so the kernel's own tools (kunit.py parse) read
# it: init writes the top-level header and plan, each suite is one top-level
# test (number KTAP_SUITE_NUMBER) with its cases indented beneath it.
#
#   . /usr/local/lib/pipeline/ktap.sh
#   ktap_begin SUITE NUMBER_OF_CASES
#   ktap_check NAME COMMAND [ARG...]     (or ktap_skip NAME REASON)
#   ktap_end                             (its status: 0 when nothing failed)

ktap_suite=
ktap_number=0
ktap_failures=0

ktap_begin() {
	ktap_suite=$1
	echo "    KTAP version 1"
	echo "    # Subtest: $1"
	echo "    1..$2"
}

# Run COMMAND; its output becomes diagnostic lines, its exit status the result.
ktap_check() {
	name=$1
	shift
	ktap_number=$((ktap_number + 1))
	if output=$("$@" 2>&1); then
		result="ok"
	else
		result="not ok"
		ktap_failures=$((ktap_failures + 1))
	fi
	[ -n "$output" ] && printf '%s\n' "$output" | sed 's/^/    # /'
	echo "    $result $ktap_number $name"
}

ktap_skip() {
	ktap_number=$((ktap_number + 1))
	echo "    ok $ktap_number $1 # SKIP $2"
}

ktap_end() {
	if [ "$ktap_failures" -eq 0 ]; then
		echo "ok ${KTAP_SUITE_NUMBER:-1} $ktap_suite"
	else
		echo "not ok ${KTAP_SUITE_NUMBER:-1} $ktap_suite"
	fi
	[ "$ktap_failures" -eq 0 ]
}
