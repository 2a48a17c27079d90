#!/usr/bin/env bash
# The pager's cost per fault and per eviction, from a profile of the pager
# daemon (doc/perf/pager-profile.md). Not a test and not part of make bench:
# a tool for reading where a fault's instructions go.
#
# memfed-bench-pager --profile N (from DRIVER_BUILD) runs three phases of N
# faults on a 16 MiB region against a pager memfedd that runs under
# callgrind: "fault" (random reads, no budget), "evict-read" (random reads at
# a budget of a tenth of the region) and "evict-write" (random writes there).
# callgrind_control zeroes the counts before each phase and dumps them after
# it, so each dump holds that phase alone (plus the 20 ms ticks and the stats
# calls that wait for the pager to settle). Callgrind counts user-space
# instructions only: what the kernel does in a syscall is not in them, and
# MEMFED_PROFILE_STRACE=1 adds a run under `strace -f` that counts the
# syscalls of each phase instead.
#
# Usage: scripts/pager_profile.sh [BUILD_DIR ...]   (default build/release)
#   Each BUILD_DIR's memfedd and memfedctl are profiled with the driver of
#   the first (older builds' drivers have no --profile).
# Environment: MEMFED_PROFILE_FAULTS (N, default 2000), MEMFED_PROFILE_OUT
#   (where the callgrind files and tables stay; default a new /tmp directory),
#   MEMFED_PROFILE_DRIVER (a memfed-bench-pager with --profile, instead of
#   the first build's),
#   MEMFED_PROFILE_STRACE=1 (the syscall counts too).
set -euo pipefail
[ $# -gt 0 ] || set -- build/release
DRIVER=${MEMFED_PROFILE_DRIVER:-$(cd "$1/bin" && pwd)/memfed-bench-pager}
N=${MEMFED_PROFILE_FAULTS:-2000}
OUT=${MEMFED_PROFILE_OUT:-$(mktemp -d /tmp/memfed-pager-profile.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
command -v valgrind >/dev/null || { echo "pager_profile: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
echo "pager_profile: results in $OUT"

# Two shims preloaded under callgrind, for valgrind 3.19 (Debian 12):
# - it does not know the userfaultfd syscall (323) and fails it with ENOSYS:
#   syscall(SYS_userfaultfd) opens the userfaultfd through /dev/userfaultfd
#   (USERFAULTFD_IOC_NEW, Linux 6.1+), an ioctl valgrind passes through, as
#   it does every ioctl on the uffd (warning once about each it does not know);
# - it does not know that io_uring_enter blocks, so a thread waiting for
#   completions holds valgrind's lock and every other thread of memfedd
#   stops: liburing's submit-and-wait calls submit, then wait in poll() on
#   the ring's fd (which valgrind knows blocks). This adds one poll() per
#   wait of an event loop, in every build alike; its instructions are
#   counted under "profiler shim".
cat >"$OUT/valgrind_shim.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
long syscall(long nr, ...)
{
	va_list ap;
	va_start(ap, nr);
	long a[6];
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (nr == SYS_userfaultfd) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
		if (dev < 0)
			return -1;
		int fd = ioctl(dev, USERFAULTFD_IOC_NEW, (int)a[0]);
		close(dev);
		return fd;
	}
	long (*next)(long, ...) = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
	return next(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}
static int shim_wait(struct io_uring *ring, int timeout_ms)
{
	int r = io_uring_submit(ring);
	if (r < 0)
		return r;
	while (io_uring_cq_ready(ring) == 0) {
		struct pollfd pf = {ring->ring_fd, POLLIN, 0};
		int n = poll(&pf, 1, timeout_ms);
		if (n == 0)
			return io_uring_cq_ready(ring) ? r : -ETIME;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
	return r;
}
int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr)
{
	return wait_nr ? shim_wait(ring, -1) : io_uring_submit(ring);
}
int io_uring_submit_and_wait_timeout(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
                                     unsigned wait_nr, struct __kernel_timespec *ts,
                                     sigset_t *sigmask)
{
	(void)sigmask;
	int ms = ts ? (int)(ts->tv_sec * 1000 + ts->tv_nsec / 1000000) : -1;
	int r = wait_nr ? shim_wait(ring, ms) : io_uring_submit(ring);
	if (r >= 0 && cqe_ptr)
		io_uring_peek_cqe(ring, cqe_ptr);
	return r;
}
C
cc -O2 -shared -fPIC -o "$OUT/valgrind_shim.so" "$OUT/valgrind_shim.c" -ldl -luring

# wrapper BIN TOOL: a memfedd that runs the pager role under TOOL (callgrind
# or strace) and every other role as it is.
# Under strace the wrapper stays, to pass the driver's SIGTERM on to
# memfedd (strace itself would only detach from it).
wrapper() {
	local bin=$1 tool=$2 w=$OUT/memfedd-$2-$3
	if [ "$tool" = callgrind ]; then
		cat >"$w" <<EOF
#!/bin/sh
case " \$* " in
*" --roles pager "*) exec env LD_PRELOAD=$OUT/valgrind_shim.so valgrind --tool=callgrind --separate-threads=yes \\
	--callgrind-out-file=$OUT/$3.callgrind.%p "$bin/memfedd" "\$@" ;;
esac
exec "$bin/memfedd" "\$@"
EOF
	else
		cat >"$w" <<EOF
#!/bin/bash
case " \$* " in
*" --roles pager "*)
	strace -f -ttt -o $OUT/$3.strace "$bin/memfedd" "\$@" &
	s=\$!
	trap 'kill -TERM \$(cat /proc/\$s/task/\$s/children)' TERM
	wait \$s
	wait \$s
	exit ;;
esac
exec "$bin/memfedd" "\$@"
EOF
	fi
	chmod +x "$w"
	echo "$w"
}

i=0
for build in "$@"; do
	i=$((i + 1))
	bin=$(cd "$build/bin" && pwd)
	name=b$i
	echo "== $name: $bin"
	w=$(wrapper "$bin" callgrind "$name")
	mkdir -p "$OUT/$name.work"
	# Builds from before node keys speak plaintext and know no trust.
	keys=()
	"$bin/memfedctl" key generate "$OUT/$name.probe.key" >/dev/null 2>&1 || keys=(--no-keys)
	"$DRIVER" --memfedd "$w" --memfedctl "$bin/memfedctl" --work "$OUT/$name.work" \
		"${keys[@]}" --region-mb 16 --profile "$N" --phase-begin 'callgrind_control -z %p' \
		--phase-end 'callgrind_control -d %n %p' | tee "$OUT/$name.phases"
	if [ "${MEMFED_PROFILE_STRACE:-0}" = 1 ]; then
		w=$(wrapper "$bin" strace "$name")
		mkdir -p "$OUT/$name.strace-work"
		"$DRIVER" --memfedd "$w" --memfedctl "$bin/memfedctl" --work "$OUT/$name.strace-work" \
			"${keys[@]}" --region-mb 16 --profile "$N" | tee "$OUT/$name.strace-phases"
	fi
done
python3 "$HERE/pager_profile.py" "$OUT" "$@"
