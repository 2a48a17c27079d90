#!/usr/bin/env bash
# make bench, section "fork": three fork()s of a python process holding a
# 200 MiB heap (each child exits at once; the parent waits for it), timed
# inside the program, in one run:
#   native        no memfed;
#   memfed        under `memfedctl run` with no budget (every page resident);
#   memfed 64M    under `memfedctl run --heap-budget 64M`: most of the heap is
#                 on the module, and each child's heap is a copy-on-write
#                 clone of its parent's there (region.clone);
#   memfed 64M, copy (only with MEMFED_BENCH_FORK_BEFORE=DIR, a build's bin
#                 directory from before clones): the child's heap copied.
# Target (issue 17, item 6): memfed 64M <= 3x native. Rounds alternate the
# cases; the table shows medians (min, max).
#
# Usage: scripts/bench_fork.sh BUILD_DIR RESULTS_DIR
# Environment: MEMFED_BENCH_FORK_ROUNDS (default 5), MEMFED_BENCH_FORK_MB
# (the heap, default 200).
set -euo pipefail
BIN=$(cd "$1/bin" && pwd)
RESULTS=$2
mkdir -p "$RESULTS"
ROUNDS=${MEMFED_BENCH_FORK_ROUNDS:-5}
MB=${MEMFED_BENCH_FORK_MB:-200}
BEFORE=${MEMFED_BENCH_FORK_BEFORE:-}
source "$(dirname "$0")/bench_lib.sh"
bench_scratch /dev/shm/memfed-bench-fork.XXXXXX

cat >"$WORK/fork3.py" <<'PY'
import os, sys, time
heap = [bytearray(b'x' * 4096) for _ in range(int(sys.argv[1]) * 256)]
t = time.monotonic()
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print("%.4f" % (time.monotonic() - t))
PY

# start_memfedd NAME BIN_DIR: one node, module and pager, pool on tmpfs.
start_memfedd() {
	bench_start_memfedd "$2" "$WORK/$1" "$WORK/$1/log"
	PIDS+=("$MEMFEDD_PID")
}
start_memfedd now "$BIN"
[ -n "$BEFORE" ] && start_memfedd before "$BEFORE"

PY=/usr/bin/python3
cases=(native memfed memfed-64M)
[ -n "$BEFORE" ] && cases+=(memfed-64M-copy)
run_case() {
	case $1 in
	native) $PY "$WORK/fork3.py" "$MB" ;;
	memfed) "$BIN/memfedctl" --socket "$WORK/now/sock" run -- $PY "$WORK/fork3.py" "$MB" ;;
	memfed-64M)
		"$BIN/memfedctl" --socket "$WORK/now/sock" run --heap-budget 64M -- \
			$PY "$WORK/fork3.py" "$MB" ;;
	memfed-64M-copy)
		"$BEFORE/memfedctl" --socket "$WORK/before/sock" run --heap-budget 64M -- \
			$PY "$WORK/fork3.py" "$MB" ;;
	esac
}
: >"$WORK/runs"
for r in $(seq 1 "$ROUNDS"); do
	for c in "${cases[@]}"; do
		t=$(run_case "$c") || { echo "fork bench: $c failed in round $r" >&2; exit 1; }
		echo "$c $t" >>"$WORK/runs"
	done
done

python3 - "$WORK/runs" "$MB" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY' | tee "$RESULTS/fork.txt"
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    c, t = line.split()
    runs.setdefault(c, []).append(float(t))
native = statistics.median(runs["native"])
print("# fork: 3 fork()s of python3 holding a %s MiB heap (child exits at once); "
      "median (min, max) of %d rounds, load %s" % (sys.argv[2], len(runs["native"]), sys.argv[3]))
print("%-18s %10s %22s %8s" % ("case", "seconds", "(min, max)", "/native"))
for c, ts in runs.items():
    m = statistics.median(ts)
    print("%-18s %10.4f %22s %7.2fx" % (c, m, "(%.4f, %.4f)" % (min(ts), max(ts)), m / native))
print("# target: memfed-64M <= 3.00x native")
PY
