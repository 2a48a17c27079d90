#!/bin/busybox sh
# Helpers shared by the QEMU guest's shell tests (init.sh, daemon_tests.sh,
# rdma_tests.sh), copied into the initramfs as /bin/memfed_guest_lib.sh by
# scripts/qemu/run.sh. The host decides from the markers they print alone.

# result NAME STATUS: a marker from a shell check's exit status.
result() {
	if [ "$2" -eq 0 ]; then
		echo "MEMFED-TEST $1 PASS"
	else
		echo "MEMFED-TEST $1 FAIL"
	fi
}

# detail TEXT: why a check failed, shown by the host with the failure.
detail() { echo "MEMFED-DETAIL $*"; }

# wait_for SECONDS CMD...: runs CMD every 0.1 s until it succeeds.
wait_for() {
	n=$(($1 * 10))
	shift
	while [ $n -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# ctl ARGS...: memfedctl against the node daemon of the running script ($D).
ctl() { memfedctl --socket $D/node/sock "$@"; }
