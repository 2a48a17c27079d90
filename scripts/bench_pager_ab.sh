#!/usr/bin/env bash
# The fault-path rows of make bench's pager section (memfed-bench-pager:
# random-fault p50/p99 and scans at budgets of 100, 50 and 10 %) for two
# builds in one run, alternating A B A B ... one repeat each, with the
# medians of each row, the pair-by-pair ratio B/A and the load average.
# Not part of make bench: a before/after comparison (doc/perf/pager-profile.md).
#
# Usage: scripts/bench_pager_ab.sh BUILD_A BUILD_B [ROUNDS (default 5)]
#   Each build runs its own memfed-bench-pager, memfedd and memfedctl.
# Environment: MEMFED_AB_ARGS, more memfed-bench-pager arguments for both.
set -euo pipefail
A=$(cd "$1/bin" && pwd)
B=$(cd "$2/bin" && pwd)
ROUNDS=${3:-5}
source "$(dirname "$0")/bench_lib.sh"
bench_scratch /tmp/memfed-bench-ab.XXXXXX
echo "A: $A"
echo "B: $B"
for r in $(seq 1 "$ROUNDS"); do
	for side in A B; do
		bin=$A
		[ "$side" = B ] && bin=$B
		echo "round $r $side, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$WORK/load"
		# shellcheck disable=SC2086
		"$bin/memfed-bench-pager" --memfedd "$bin/memfedd" --memfedctl "$bin/memfedctl" \
			--work "$WORK/w" --repeat 1 ${MEMFED_AB_ARGS:-} >"$WORK/$side.$r" 2>&1 ||
			{ cat "$WORK/$side.$r"; exit 1; }
	done
done
python3 - "$WORK" "$ROUNDS" <<'PY'
import re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
row = re.compile(r"^\s*(\d+) %\s+(on|off)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")
lim = re.compile(r"^limit \(a\).*p50\s+([\d.]+) us")
def rows(path):
    out = {}
    for line in open(path):
        m = row.match(line)
        if m:
            out[(int(m.group(1)), m.group(2))] = [float(x) for x in m.groups()[2:]]
        m = lim.match(line)
        if m:
            out["limit_a"] = [float(m.group(1))]
    return out
A = [rows(f"{work}/A.{r}") for r in range(1, rounds + 1)]
B = [rows(f"{work}/B.{r}") for r in range(1, rounds + 1)]
med = statistics.median
print(f"\nmedians of {rounds} alternating runs (A then B each round); B/A: median of the pairs' ratios")
print(f"{'budget':>6} {'prefetch':>8} | {'p50 A':>7} {'p50 B':>7} {'B/A':>5} | {'p99 A':>7} {'p99 B':>7} {'B/A':>5} | {'scan A':>6} {'scan B':>6} {'B/A':>5} | {'p50/(a) A':>9} {'B':>5}")
for key in sorted(k for k in A[0] if k != "limit_a"):
    a = [x[key] for x in A]; b = [x[key] for x in B]
    def col(i):
        return med([v[i] for v in a]), med([v[i] for v in b]), med([y[i] / x[i] for x, y in zip(a, b)])
    p50, p99, scan = col(0), col(1), col(2)
    print(f"{key[0]:>5}% {key[1]:>8} | {p50[0]:7.1f} {p50[1]:7.1f} {p50[2]:5.2f} | {p99[0]:7.1f} {p99[1]:7.1f} {p99[2]:5.2f} | "
          f"{scan[0]:6.3f} {scan[1]:6.3f} {scan[2]:5.2f} | {med([v[3] for v in a]):9.2f} {med([v[3] for v in b]):5.2f}")
la = [x["limit_a"][0] for x in A + B if "limit_a" in x]
print(f"limit (a), raw uffd + io_uring 4 KiB fetch, p50 over all {len(la)} runs: {med(la):.1f} us")
PY
echo "load average at each run's start:"
cat "$WORK/load"
