#!/usr/bin/env bash
# make bench, section "replication": what K copies of a region cost and how
# fast a lost copy is noticed and repaired (issue 15, item 6). Three module
# daemons and pager-only client nodes on loopback, pools on tmpfs:
#   1. sort -n under `memfedctl run` on a client whose heaps get K = 1, 2, 3
#      copies (memfedd --replicas K): wall time, the pager's faults and
#      write-backs, demand-fetch latency; and `region write` of 64 MiB into a
#      region of K copies, MB/s. Ratios against K = 1, measured in this run.
#   2. detection: a K = 3 region written in 1 MiB chunks in a loop, one module
#      SIGKILLed, the time until `region show` reports its copy lost (10 ms polls).
#   3. repair: 64 MiB written into a K = 3 region, a module killed, 64 MiB of
#      new data written, the module restarted: time until its copy is in sync
#      again, pages_caught_up, MB/s; baseline: `region copy` of 64 MiB inside
#      the client daemon between two one-copy regions on two other modules
#      (the same path as a catch-up: read from one module, write to another).
#   4. on paper: K-way replication against erasure coding (Hydra, FAST '22).
#
# Usage: scripts/bench_replication.sh BUILD_DIR RESULTS_DIR
set -euo pipefail
BUILD_BIN=$(cd "$1/bin" && pwd)
RESULTS=$2
mkdir -p "$RESULTS"
export MEMFEDD=$BUILD_BIN/memfedd MEMFEDCTL=$BUILD_BIN/memfedctl
# The integration tests' helpers: daemons with keys that trust each other,
# a scratch dir on tmpfs, every daemon killed and the dir removed at exit.
. "$(dirname "$0")/../tests/integration/lib.sh"
. "$(dirname "$0")/../tests/integration/client_lib.sh"
. "$(dirname "$0")/../tests/integration/replication_lib.sh"
OUT=$RESULTS/replication.txt
: >"$OUT"
# say LINE: to the terminal and to the table.
say() { echo "$*" | tee -a "$OUT"; }
now() { date +%s.%N; }
# calc EXPR: a python expression, printed.
calc() { $PY -c "print($1)"; }

trust_all a b c k1 k2 k3
declare -A EP ID=([a]=02:00:00:00:00:0a [b]=02:00:00:00:00:0b [c]=02:00:00:00:00:0c)
for m in a b c; do
	start_daemon $m --roles module --listen 127.0.0.1:0 --pool-size 1G --module-id "${ID[$m]}" --log-level warn
	EP[$m]=$(listen_of $m)
done
restart() {
	start_daemon "$1" --roles module --listen "${EP[$1]}" --pool-size 1G --module-id "${ID[$1]}" --log-level warn
}
# Client kK: a pager-only node whose regions (and heaps) get K copies.
for k in 1 2 3; do
	start_daemon k$k --roles pager --listen 127.0.0.1:0 --replicas $k --log-level warn \
		--peer "${EP[a]}" --peer "${EP[b]}" --peer "${EP[c]}"
done
REPL_NODE=k3
# watch_copy REGION MODULE T0 UNTIL: polls `region show` on k3 every 10 ms
# (one python, no interpreter start per poll) until MODULE's copy of REGION is
# in state UNTIL; prints, in ms since T0 (a unix time), when its state first
# left "in sync", when it first was "catching up", when pages_caught_up last
# grew, when a poll's answer first said UNTIL; then the polls made,
# pages_caught_up, when that last poll began, and the copy's "since" (when
# the daemon put it in its state).
watch_copy() {
	$PY - "$MEMFEDCTL" "$T/k3/sock" "$@" <<'PY'
import json, subprocess, sys, time
ctl, sock, region, module, t0, until = sys.argv[1:]
t0 = float(t0)
ms = lambda: "%.0f" % ((time.time() - t0) * 1000)
left = catching = grew = "-"
polls, caught = 0, None
while polls < 6000:
    polls += 1
    began = ms()
    r = json.loads(subprocess.run([ctl, "--socket", sock, "-j", "region", "show", region],
                                  capture_output=True, check=True).stdout)
    copy = [c for c in r["copies"] if c["module"] == module][0]
    state = copy["state"]
    n = r["counters"]["pages_caught_up"]
    if caught is not None and n != caught: grew = ms()
    caught = n
    if state != "in sync" and left == "-": left = ms()
    if state == "catching up" and catching == "-": catching = ms()
    if state == until:
        print(left, catching, grew, ms(), polls, caught, began,
              "%.0f" % (copy["since_unix_ms"] - t0 * 1000))
        sys.exit(0)
    time.sleep(0.01)
sys.exit("copy on %s of '%s' not %s after %d polls" % (module, region, until, polls))
PY
}
# pager_totals NODE: per heap region, faults writebacks fetches fetch_ns_sum
# and the fetch-latency histogram (log2 us buckets, comma-joined).
pager_totals() {
	ctl "$1" -j stats | $PY -c '
import json, sys
for r in json.load(sys.stdin).get("pager", {}).get("regions", []):
    print(r["region"], *(r.get(k, 0) for k in ("faults", "writebacks", "fetches", "fetch_ns_sum")),
          ",".join(map(str, r.get("fetch_us_log2", []))) or "-")'
}

say "replication: three modules and pager-only clients on loopback, pools on tmpfs ($(nproc) vCPUs)"
say ""
say "1. the same program and a 64 MiB region write with K copies"
seq 1 400000 | shuf >"$T/in.txt"
START=$(now)
sort -n -S 40M "$T/in.txt" >"$T/want.txt"
NATIVE=$(calc "'%.2f' % ($(now) - $START)")
head -c 64M /dev/urandom >"$T/w64.bin"
declare -A SORT_S WRITE_MBS
say "$(printf '%-3s %9s %9s %11s %9s %13s %12s %10s' K 'sort s' faults write-backs fetches 'fetch p50 us' 'fetch mean' 'write MB/s')"
for k in 1 2 3; do
	before=$(pager_totals k$k)
	START=$(now)
	run_on k$k --heap-budget 4M --heap-size 128M -- sort -n -S 40M "$T/in.txt" >"$T/out.txt"
	SORT_S[$k]=$(calc "'%.2f' % ($(now) - $START)")
	cmp -s "$T/want.txt" "$T/out.txt" || fail "sort with K=$k: output differs from native"
	# This run's counters: the heaps that were not there before it.
	read -r faults wbs fetches p50 mean < <(pager_totals k$k | $PY -c '
import sys
seen = {l.split()[0] for l in sys.argv[1].splitlines() if l.strip()}
f = w = n = ns = 0
hist = []
for line in sys.stdin:
    name, a, b, c, d, h = line.split()
    if name in seen: continue
    f += int(a); w += int(b); n += int(c); ns += int(d)
    for i, v in enumerate([] if h == "-" else map(int, h.split(","))):
        hist += [0] * (i + 1 - len(hist)); hist[i] += v
# p50: the upper end of the log2 bucket holding the median (bucket i: [2^i, 2^(i+1)) us).
acc, p50 = 0, "-"
for i, v in enumerate(hist):
    acc += v
    if v and acc * 2 >= sum(hist): p50 = "<%d" % (2 ** (i + 1)); break
print(f, w, n, p50, "%.0f us" % (ns / n / 1000) if n else "-")' "$before")
	ctl k3 region create w$k 64M --replicas $k >/dev/null
	START=$(now)
	ctl k3 region write w$k <"$T/w64.bin"
	WRITE_MBS[$k]=$(calc "'%.1f' % (64 / ($(now) - $START))")
	ctl k3 region rm w$k
	say "$(printf '%-3s %9s %9s %11s %9s %13s %12s %10s' $k "${SORT_S[$k]}" "$faults" "$wbs" "$fetches" "$p50" "$mean" "${WRITE_MBS[$k]}")"
done
say "fetch p50: the upper end of the log2 latency bucket that holds the median demand fetch"
say "native sort (no memfed): $NATIVE s; every memfed output equal to native"
for k in 2 3; do
	say "K=$k/K=1: sort time x$(calc "'%.2f' % (${SORT_S[$k]} / ${SORT_S[1]})"), write MB/s x$(calc "'%.2f' % (${WRITE_MBS[$k]} / ${WRITE_MBS[1]})")"
done

say ""
say "2. time to detect a dead copy (K=3, 1 MiB writes in a loop, module a SIGKILLed, polls every 10 ms)"
ctl k3 region create det 16M --replicas 3 >/dev/null
head -c 1M /dev/urandom >"$T/w1.bin"
(
	i=0
	while :; do
		ctl k3 region write det --offset $(((i % 16) << 20)) <"$T/w1.bin" 2>/dev/null || true
		i=$((i + 1))
	done
) &
WRITER=$!
DAEMON_PID[writer]=$WRITER # lib.sh's cleanup kills it should this script fail
sleep 1
KILLED=$(now)
stop_daemon a KILL
read -r _ _ _ DETECT POLLS _ ASKED SINCE < <(watch_copy det "${ID[a]}" "$KILLED" lost)
stop_daemon writer KILL
say "copy on module a marked lost by the daemon ${SINCE} ms after the SIGKILL (region show's since_unix_ms)"
say "seen by poll $POLLS of region show, asked ${ASKED} ms and answered ${DETECT} ms after the SIGKILL"
restart a
wait_in_sync det 3
ctl k3 region rm det

say ""
say "3. repair: catch-up of a returning copy vs region copy between two modules"
ctl k1 region create src 64M --on "${ID[b]}" >/dev/null
ctl k1 region create dst 64M --on "${ID[c]}" >/dev/null
ctl k1 region write src <"$T/w64.bin"
START=$(now)
ctl k1 region copy src dst >/dev/null
COPY_S=$(calc "$(now) - $START")
ctl k1 region read dst | cmp -s - "$T/w64.bin" || fail "region copy: dst differs from src"
ctl k1 region rm src
ctl k1 region rm dst
COPY_MBS=$(calc "'%.1f' % (64 / $COPY_S)")

ctl k3 region create rep 64M --replicas 3 >/dev/null
ctl k3 region write rep <"$T/w64.bin"
stop_daemon b KILL
head -c 64M /dev/urandom >"$T/v2.bin"
ctl k3 region write rep <"$T/v2.bin"
CAUGHT0=$(show_field rep 'r["counters"]["pages_caught_up"]')
START=$(now)
restart b
UP=$(calc "'%.0f' % (($(now) - $START) * 1000)")
read -r _ CATCHING GREW INSYNC _ CAUGHT _ _ < <(watch_copy rep "${ID[b]}" "$START" "in sync")
CAUGHT=$((CAUGHT - CAUGHT0))
ctl k3 region read "rep@${ID[b]}" | cmp -s - "$T/v2.bin" || fail "module b's copy did not catch up"
ctl k3 region rm rep
# The copying: from "catching up" to the last pages_caught_up growth seen.
COPYING_MS=$((GREW - CATCHING))
REPAIR_MBS=$(calc "'%.1f' % ($CAUGHT * 4096 / 1048576 / max($COPYING_MS, 10) * 1000)")
say "module b restarted (same pool, endpoint, module id) after 64 MiB of new writes; ms since the restart:"
say "  memfedd answering $UP, copy catching up $CATCHING, last page copied ~$GREW, in sync $INSYNC"
say "  (in sync comes after a second pass that finds no page differing, at least 1 s after the first began)"
say "$(printf '%-44s %8s %8s %9s' '' seconds pages 'MB/s')"
say "$(printf '%-44s %8.2f %8s %9s' 'catch-up: catching up -> last page copied' "$(calc "$COPYING_MS / 1000")" "$CAUGHT" "$REPAIR_MBS")"
say "$(printf '%-44s %8.2f %8s %9s' 'catch-up: restart -> in sync (all of it)' "$(calc "$INSYNC / 1000")" "$CAUGHT" "$(calc "'%.1f' % ($CAUGHT * 4096 / 1048576 / $INSYNC * 1000)")")"
say "$(printf '%-44s %8.2f %8s %9s' 'baseline: region copy b -> c, 64 MiB' "$COPY_S" 16384 "$COPY_MBS")"
say "catch-up copying / raw copy: x$(calc "'%.2f' % ($REPAIR_MBS / $COPY_MBS)") (b's copy checked equal to what was written)"

say ""
say "4. on paper: K-way replication against erasure coding"
say "K copies cost K x the data: 3x to survive two lost modules. Erasure coding"
say "survives as many losses for less: Hydra (Lee et al., FAST '22) reports about"
say "1.6x less memory than 3-way replication at the same loss tolerance. The price"
say "is a k-way fan-in on every fault (k splits gathered, the slowest one waited for)"
say "and a decode on every read after a loss; with a demand fetch of ~100 us here,"
say "worth a later step only when memory, not fault latency, is what runs out."
