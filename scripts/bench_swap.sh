#!/usr/bin/env bash
# make bench, section "swap": real programs under a memory limit, memfed
# against the kernel's own swap (issue 17, item 5). Each program runs
#   native    no limit; its peak RSS is the footprint the limits derive from,
#   memfed    under `memfedctl run --heap-budget L` (pool on tmpfs, one node),
#   swap      in a memory cgroup with limit L, swap unlimited, swap on zram
#             (a zram device this script adds and removes; when the kernel
#             has no zram it says so and uses a swap file on disk instead),
# at L = 1/3 and 1/6 of the footprint, every run checked against the native
# output. The kernel-swap runs need root (cgroups, swapon); without it that
# column is skipped, loudly.
#
# Programs: GNU sort -n -S 512M of 5 M shuffled integers; stress-ng --vm with
# the self-verifying rand-set method, a bounded number of ops; redis-server
# loaded with 400 k 512-byte values (redis-cli --pipe) and read back at random
# by redis-benchmark (skipped, loudly, when redis is not installed).
#
# Usage: scripts/bench_swap.sh BUILD_DIR RESULTS_DIR
# Environment: MEMFED_BENCH_SWAP_PROGRAMS (default "sort stress redis"),
# MEMFED_BENCH_SWAP_REPEAT (runs of each cell, default 2; the
# table shows medians), MEMFED_BENCH_SWAP_TIMEOUT (seconds one run may take,
# default 600; a run past it counts as failed), MEMFED_BENCH_SWAP_DIVISORS
# (the limits as whole fractions of the footprint, default "3 6": 1/3 and
# 1/6; "2" gives a limit at which the kernel's swap finishes sort).
set -euo pipefail
BIN=$(cd "$1/bin" && pwd)
RESULTS=$2
mkdir -p "$RESULTS"
REPEAT=${MEMFED_BENCH_SWAP_REPEAT:-2}
DIVISORS=${MEMFED_BENCH_SWAP_DIVISORS:-3 6}
RUN_TIMEOUT=${MEMFED_BENCH_SWAP_TIMEOUT:-600}
source "$(dirname "$0")/bench_lib.sh"
WORK=$(mktemp -d /tmp/memfed-bench-swap.XXXXXX)
POOL_DIR=$(mktemp -d /dev/shm/memfed-bench-swap.XXXXXX)
RAW=$RESULTS/swap-runs.txt
COUNTERS=$RESULTS/swap-pager.txt
KCOUNTERS=$RESULTS/swap-kernel.txt
: >"$RAW"
: >"$COUNTERS"
: >"$KCOUNTERS"

MEMFEDD_PID=""
SERVER_PID=""
REDIS_PID=""
ZRAM_ID=""
SWAP_DEV=""
CG_PARENT=""
CG=""
cleanup() {
	# Every step runs, whatever the one before it returned: a kill of a
	# process already gone must not leave the zram device swapped on.
	set +e
	# The server first, with SIGKILL: a program whose pager is gone waits
	# in its page fault, where only SIGKILL reaches it.
	[ -n "$REDIS_PID" ] && kill -9 "$REDIS_PID" 2>/dev/null
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
	[ -n "$MEMFEDD_PID" ] && kill "$MEMFEDD_PID" 2>/dev/null
	wait 2>/dev/null
	[ -n "$CG" ] && [ -d "$CG" ] && rmdir "$CG" 2>/dev/null
	[ -n "$SWAP_DEV" ] && swapoff "$SWAP_DEV" 2>/dev/null
	[ -n "$ZRAM_ID" ] && echo "$ZRAM_ID" >/sys/class/zram-control/hot_remove 2>/dev/null
	rm -rf "$WORK" "$POOL_DIR"
	true
}
trap cleanup EXIT
loud() { printf '\n!! %s\n\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { python3 -c "print('%.2f' % ($(now) - $1))"; }

# --- the kernel's swap: a zram device (or a swap file) and a memory cgroup ---

SWAP_KIND=""
setup_swap() {
	if [ "$(id -u)" -ne 0 ]; then
		loud "swap: not root, so no cgroup and no swapon: the kernel-swap column is skipped"
		return 1
	fi
	if [ -w /sys/class/zram-control/hot_add ]; then
		ZRAM_ID=$(cat /sys/class/zram-control/hot_add)
		local z=/sys/block/zram$ZRAM_ID
		grep -qw lz4 "$z/comp_algorithm" && echo lz4 >"$z/comp_algorithm"
		echo 2G >"$z/disksize"
		SWAP_DEV=/dev/zram$ZRAM_ID
		SWAP_KIND="zram ($(grep -o '\[[^]]*\]' "$z/comp_algorithm" | tr -d '[]'), 2 GiB, /dev/zram$ZRAM_ID)"
	else
		loud "swap: this kernel has no zram (no /sys/class/zram-control; modprobe zram is not possible here)." \
			"The kernel-swap column uses a 2 GiB SWAP FILE ON DISK ($(stat -f -c %T "$WORK") at $WORK) instead: slower than zram."
		fallocate -l 2G "$WORK/swapfile"
		chmod 600 "$WORK/swapfile"
		SWAP_DEV=$WORK/swapfile
		SWAP_KIND="swap file on disk ($(stat -f -c %T "$WORK"), 2 GiB)"
	fi
	mkswap "$SWAP_DEV" >/dev/null
	swapon -p 32767 "$SWAP_DEV"
	echo "swap: $SWAP_KIND"
	if [ "$(awk 'NR > 1' /proc/swaps | wc -l)" -gt 1 ]; then
		loud "swap: other swap areas are active too (the kernel fills ours first, priority 32767):"
		cat /proc/swaps >&2
	fi
}

# A memory cgroup: cgroup v2 where its memory controller is on, else v1.
CG_VERSION=""
setup_cgroup_parent() {
	local mnt
	mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	if [ -n "$mnt" ] && grep -qw memory "$mnt/cgroup.controllers" 2>/dev/null; then
		CG_VERSION=2
		CG_PARENT=$mnt
		grep -qw memory "$mnt/cgroup.subtree_control" || echo +memory >"$mnt/cgroup.subtree_control"
	else
		mnt=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ { print $2; exit }' /proc/mounts)
		if [ -z "$mnt" ]; then
			loud "swap: no memory cgroup controller mounted (v2 or v1): the kernel-swap column is skipped"
			return 1
		fi
		CG_VERSION=1
		CG_PARENT=$mnt$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
		echo "swap: cgroup v2 has no memory controller here; using cgroup v1 ($CG_PARENT)"
	fi
}

# cg_new BYTES: a fresh cgroup (so its OOM count starts at 0) limited to
# BYTES of memory, swap unlimited.
cg_new() {
	CG=$CG_PARENT/memfed-bench-swap.$$
	[ -d "$CG" ] && rmdir "$CG"
	mkdir "$CG"
	if [ "$CG_VERSION" = 2 ]; then
		echo "$1" >"$CG/memory.max"
		echo max >"$CG/memory.swap.max"
	else
		echo "$1" >"$CG/memory.limit_in_bytes"
		[ -f "$CG/memory.memsw.limit_in_bytes" ] && echo -1 >"$CG/memory.memsw.limit_in_bytes"
	fi
	echo 60 >"$CG/memory.swappiness" 2>/dev/null || true
}
cg_oom_kills() {
	if [ "$CG_VERSION" = 2 ]; then
		awk '$1 == "oom_kill" { print $2 }' "$CG/memory.events"
	else
		awk '$1 == "oom_kill" { print $2 }' "$CG/memory.oom_control"
	fi
}
# vmstat_swap: "pswpin pswpout" of the whole machine, in pages (this
# section's swap device is the only one it fills, priority 32767).
vmstat_swap() { awk '$1 == "pswpin" { i = $2 } $1 == "pswpout" { o = $2 } END { print i, o }' /proc/vmstat; }
cg_done() {
	rmdir "$CG"
	CG=""
}

# --- memfed: one node, module and pager, pool on tmpfs ---

ctl() { "$BIN/memfedctl" --socket "$POOL_DIR/sock" "$@"; }

# pager_counters RUN: "RUN faults wp_faults evictions writebacks fetches
# prefetched staged_hits", the pager's counters for the heaps of the last
# memfed run (memfedctl run --stats), or zeros if it wrote none.
pager_counters() {
	python3 - "$1" "$WORK/stats.json" <<'PY'
import json, sys
keys = ("faults", "wp_faults", "evictions", "writebacks", "fetches", "prefetched", "staged_hits")
try:
    total = json.load(open(sys.argv[2]))["total"]
except (OSError, ValueError, KeyError):
    total = {}
print(sys.argv[1], *(total.get(k, 0) for k in keys))
PY
}

# --- running one program in one mode ---

# in_mode MODE LIMIT_BYTES CMD...: CMD natively, under memfedctl run, or in
# the cgroup (its own process joins it, so its children do too).
in_mode() {
	local mode=$1 limit=$2
	shift 2
	# shellcheck disable=SC2016 # swap: $$ is the inner shell's, which then execs CMD
	case $mode in
	native) timeout "$RUN_TIMEOUT" "$@" ;;
	memfed) timeout "$RUN_TIMEOUT" "$BIN/memfedctl" --socket "$POOL_DIR/sock" run \
		--heap-budget "$limit" --stats "$WORK/stats.json" -- "$@" ;;
	swap) timeout "$RUN_TIMEOUT" sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" "$@" ;;
	esac
}

# GNU sort: 5 M shuffled integers, generated deterministically.
prepare_sort() {
	python3 -c "
import random
r = random.Random(17)
v = list(range(1, 5000001))
r.shuffle(v)
print('\n'.join(map(str, v)))" >"$WORK/numbers"
}
run_sort() { # MODE LIMIT -> "seconds ok|bad peak_kib"
	local t0 sum
	t0=$(now)
	sum=$( (/usr/bin/time -f %M -o "$WORK/peak" bash -c 'in_mode "$@"' _ "$1" "$2" \
		sort -n -S 512M "$WORK/numbers" || echo "exit $?") | md5sum)
	local secs
	secs=$(elapsed "$t0")
	[ "$1" = native ] && [ ! -f "$WORK/sort.want" ] && echo "$sum" >"$WORK/sort.want"
	echo "$secs $([ "$sum" = "$(cat "$WORK/sort.want")" ] && echo ok || echo bad) $(tail -n 1 "$WORK/peak")"
}

# stress-ng's vm stressor, rand-set with --verify: 8192 ops of a 256 MiB
# buffer (two passes over it); --oomable so an OOM kill ends the run
# instead of restarting the worker.
STRESS_OPS=8192
run_stress() {
	local t0 out ok=bad ops
	t0=$(now)
	out=$(/usr/bin/time -f %M -o "$WORK/peak" bash -c 'in_mode "$@"' _ "$1" "$2" \
		stress-ng --vm 1 --vm-bytes 256M --vm-method rand-set --verify --vm-ops $STRESS_OPS \
		--oomable --timeout "$RUN_TIMEOUT" --metrics-brief 2>&1) || true
	local secs
	secs=$(elapsed "$t0")
	ops=$(awk '/metrc:.* vm /{ print $5 }' <<<"$out")
	if grep -q "successful run completed" <<<"$out" && [ "${ops:-0}" -ge $STRESS_OPS ] &&
		! grep '^stress-ng:' <<<"$out" | grep -qiE "fail|bit errors|detected"; then
		ok=ok
	fi
	echo "$secs $ok $(tail -n 1 "$WORK/peak")"
}

# redis: the server runs in MODE; the loader and the benchmark are its
# clients, outside the limit. Timed from a ready server to the last reply.
REDIS_KEYS=400000
REDIS_GETS=100000
prepare_redis() {
	python3 -c "
import random, sys
r = random.Random(17)
out = sys.stdout.buffer
for i in range($REDIS_KEYS):
    k = b'key:%012d' % i
    v = b'%0512x' % r.getrandbits(2048)
    out.write(b'*3\r\n\$3\r\nSET\r\n\$%d\r\n%s\r\n\$%d\r\n%s\r\n' % (len(k), k, len(v), v))
" >"$WORK/redis.load"
}
run_redis() {
	local sock=$WORK/redis.sock t0 digest="" peak=0 ok=bad secs
	rm -f "$sock"
	in_mode "$1" "$2" redis-server --port 0 --unixsocket "$sock" --save "" --appendonly no \
		--enable-debug-command local --daemonize no --loglevel warning >"$WORK/redis.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 200); do
		redis-cli -s "$sock" ping >/dev/null 2>&1 && break
		sleep 0.05
	done
	REDIS_PID=$(redis-cli -s "$sock" info server | awk -F: '/^process_id:/ { print $2 + 0 }')
	t0=$(now)
	if redis-cli -s "$sock" --pipe <"$WORK/redis.load" >"$WORK/redis.pipe" 2>&1 &&
		redis-benchmark -s "$sock" -q -n $REDIS_GETS -r $REDIS_KEYS -P 16 -c 4 \
			GET key:__rand_int__ >"$WORK/redis.bench" 2>&1; then
		secs=$(elapsed "$t0")
		# Every 100th value and the key count (a DEBUG DIGEST of it all
		# would take minutes under a tight limit).
		digest=$( (redis-cli -s "$sock" dbsize &&
			seq -f 'GET key:%012g' 0 100 $((REDIS_KEYS - 1)) | redis-cli -s "$sock") 2>&1 | md5sum)
		peak=$(awk '/^VmHWM:/ { print $2 }' "/proc/$REDIS_PID/status" 2>/dev/null || echo 0)
	else
		secs=$(elapsed "$t0")
	fi
	redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
	REDIS_PID=""
	[ "$1" = native ] && [ ! -f "$WORK/redis.want" ] && echo "$digest" >"$WORK/redis.want"
	[ -n "$digest" ] && [ "$digest" = "$(cat "$WORK/redis.want")" ] && ok=ok
	echo "$secs $ok $peak"
}
export -f in_mode
export BIN POOL_DIR RUN_TIMEOUT CG WORK

# --- the section ---

read -r -a PROGRAMS <<<"${MEMFED_BENCH_SWAP_PROGRAMS:-sort stress redis}"
if [[ " ${PROGRAMS[*]} " == *" redis "* ]] &&
	! { command -v redis-server && command -v redis-benchmark; } >/dev/null; then
	read -r -a PROGRAMS <<<"${PROGRAMS[*]/redis/}"
	loud "redis: redis-server or redis-benchmark missing (make deps installs redis-server): its rows are skipped"
fi
KERNEL_SWAP=1
setup_swap && setup_cgroup_parent || KERNEL_SWAP=0
bench_start_memfedd "$BIN" "$POOL_DIR" "$WORK/memfedd.log"
echo "memfed: one node (module + pager, defaults), pool on tmpfs ($POOL_DIR)"
prepare_sort
[[ " ${PROGRAMS[*]} " == *" redis "* ]] && prepare_redis

declare -A FOOTPRINT
mib() { echo $((($1 + 1048575) / 1048576))M; }
for rep in $(seq 1 "$REPEAT"); do
	for prog in "${PROGRAMS[@]}"; do
		"run_$prog" native 0 >"$WORK/result"
		read -r secs ok peak <"$WORK/result"
		echo "$prog native - $rep $secs $ok 0" >>"$RAW"
		echo "  $prog native: $secs s ($ok, peak ${peak} KiB)"
		[ -n "${FOOTPRINT[$prog]:-}" ] || FOOTPRINT[$prog]=$((peak * 1024))
		for div in $DIVISORS; do
			limit=$(mib $((FOOTPRINT[$prog] / div)))
			rm -f "$WORK/stats.json"
			"run_$prog" memfed "$limit" >"$WORK/result"
			pager_counters "$prog $limit $rep" >>"$COUNTERS"
			read -r secs ok peak <"$WORK/result"
			echo "$prog memfed $limit $rep $secs $ok 0" >>"$RAW"
			echo "  $prog memfed $limit: $secs s ($ok)"
			if [ $KERNEL_SWAP = 1 ]; then
				cg_new "$(($(numfmt --from=iec "$limit")))"
				export CG
				read -r in0 out0 < <(vmstat_swap)
				"run_$prog" swap "$limit" >"$WORK/result"
				read -r in1 out1 < <(vmstat_swap)
				echo "$prog $limit $rep $((in1 - in0)) $((out1 - out0))" >>"$KCOUNTERS"
				read -r secs ok peak <"$WORK/result"
				oom=$(cg_oom_kills)
				cg_done
				echo "$prog swap $limit $rep $secs $ok $oom" >>"$RAW"
				echo "  $prog swap $limit: $secs s ($ok, oom kills $oom)"
			fi
		done
	done
done

python3 - "$RAW" "$COUNTERS" "$SWAP_KIND" "$REPEAT" "$KCOUNTERS" <<'PY' | tee "$RESULTS/swap.txt"
import statistics, sys
from collections import defaultdict
raw, counters, kind, repeat = sys.argv[1], sys.argv[2], sys.argv[3] or "none (skipped)", sys.argv[4]
kcounters = sys.argv[5]
runs = defaultdict(list)  # (prog, mode, limit) -> [(secs, ok, oom)]
order = []
for line in open(raw):
    prog, mode, limit, rep, secs, ok, oom = line.split()
    runs[(prog, mode, limit)].append((float(secs), ok, int(oom or 0)))
    if mode != "native" and (prog, limit) not in order:
        order.append((prog, limit))

def median(rs):
    good = [s for s, ok, oom in rs if ok == "ok"]
    return statistics.median(good) if good else None

def fmt(v):
    return "%.2f" % v if v is not None else "-"

def checks(rs):
    return "%d/%d" % (sum(ok == "ok" for _, ok, _ in rs), len(rs)) if rs else "-"

print("swap: kernel swap is %s; medians of %s runs of correct results" % (kind, repeat))
print("%-7s %6s %9s %9s %9s %12s %10s %9s %9s" % (
    "program", "limit", "native s", "memfed s", "swap s", "memfed/swap",
    "swap OOM", "memfed ok", "swap ok"))
for prog, limit in order:
    nat = runs[(prog, "native", "-")]
    mf = runs[(prog, "memfed", limit)]
    sw = runs[(prog, "swap", limit)]
    m, s = median(mf), median(sw)
    oom = "%d/%d" % (sum(o > 0 for _, _, o in sw), len(sw)) if sw else "-"
    ratio = "%.2fx" % (m / s) if m is not None and s is not None else "-"
    print("%-7s %6s %9s %9s %9s %12s %10s %9s %9s" % (
        prog, limit, fmt(median(nat)), fmt(m), fmt(s), ratio, oom, checks(mf), checks(sw)))
print("(ok: output equal to the native run's -- sort's md5, redis's key count and every"
      " 100th value -- or stress-ng's own verification passed; OOM: runs the kernel's OOM"
      " killer ended; a time is the median of the ok runs)")

rows = defaultdict(list)
for line in open(counters):
    f = line.split()
    if len(f) == 10:
        rows[(f[0], f[1])].append([int(x) for x in f[3:]])
if rows:
    print("\npager counters per memfed run (medians): faults, write-protect faults, evictions, write-backs, fetches, prefetched, faults served from staging")
    print("%-7s %6s %10s %10s %10s %10s %10s %10s %10s" % (
        "program", "limit", "faults", "wp_faults", "evictions", "writebacks", "fetches", "prefetched",
        "staged"))
    for prog, limit in order:
        rs = rows.get((prog, limit))
        if rs:
            cols = [int(statistics.median(c)) for c in zip(*rs)]
            print("%-7s %6s %10d %10d %10d %10d %10d %10d %10d" % (prog, limit, *cols))

# The kernel's side of the same runs: pages swapped in (each a major fault,
# memfed's "faults" less its prefetched pages) and out (memfed's evictions).
krows = defaultdict(list)
for line in open(kcounters):
    f = line.split()
    if len(f) == 5:
        krows[(f[0], f[1])].append([int(x) for x in f[3:]])
if krows:
    print("\nkernel swap per run (medians, /proc/vmstat): pages swapped in and out")
    print("%-7s %6s %10s %10s" % ("program", "limit", "swap-ins", "swap-outs"))
    for prog, limit in order:
        rs = krows.get((prog, limit))
        if rs:
            cols = [int(statistics.median(c)) for c in zip(*rs)]
            print("%-7s %6s %10d %10d" % (prog, limit, *cols))
PY
