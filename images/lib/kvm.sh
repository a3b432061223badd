# SPDX-License-Identifier: GPL-2.0
# Helpers for the suites that use KVM inside the guest: which vendor module
# (kvm-amd or kvm-intel) the CPU can run, and skipping a case that needs one
# when it cannot.  need_vendor's status is ktap.sh's KTAP_SKIP.

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
