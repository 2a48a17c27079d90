# Helpers for the client tests (source after lib.sh).

# start_pager NAME [POOL_SIZE]: a daemon with module and pager roles and a
# sparse pool big enough for several heap regions.
start_pager() {
	start_daemon "$1" --pool-size "${2:-16G}" --listen 127.0.0.1:0
}

# run_on NAME ARGS...: memfedctl run against daemon NAME.
run_on() { local name=$1; shift; "$MEMFEDCTL" --socket "$T/$name/sock" run "$@"; }

# pager_sum NAME COUNTER...: each counter of daemon NAME's pager.stats
# (map_protocol.h: evictions, fetches, prefetched, ...) summed over the
# processes it pages now, on one line; nothing if the daemon does not answer.
pager_sum() {
	local name=$1
	shift
	timeout 10 "$MEMFEDCTL" --socket "$T/$name/sock" -j stats 2>/dev/null |
		python3 -c 'import json,sys; ps=json.load(sys.stdin)["pager"]["processes"]; print(*(sum(p[c] for p in ps) for c in sys.argv[1:]))' "$@" 2>/dev/null || true
}

# wait_evicting NAME N [PID]: waits (up to 30 s) until daemon NAME's pager
# has evicted more than N pages of its programs: a program under memfedctl
# run has attached and is under pressure. With PID: returns 1 as soon as
# that process has ended instead, and 2 after the 30 s (the caller says
# what hangs). The 30 s are counted in time, not requests: a pager that
# does not answer is a hang too, not a test that waits forever.
wait_evicting() {
	local name=$1 n=$2 pid=${3:-} got=0 until=$((SECONDS + 30))
	while [ $SECONDS -lt $until ]; do
		[ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && return 1
		got=$(pager_sum "$name" evictions)
		got=${got:-0}
		[ "$got" -gt "$n" ] && return 0
		sleep 0.1
	done
	[ -n "$pid" ] && return 2
	report_hang "$name"
	fail "the pager of '$name' evicted $got pages in 30 s, expected more than $n"
}

# report_hang NAME [PATTERN]: where the threads of daemon NAME and of the
# processes whose command line matches PATTERN wait (kernel wait channel and
# stack; gdb backtraces if gdb is here) and what its pager holds, as
# comments, each bounded in time.
report_hang() {
	local name=$1 pattern=${2:-} pid t
	for pid in ${pattern:+$(pgrep -f "$pattern")} ${DAEMON_PID[$name]:-}; do
		for t in "/proc/$pid/task/"*; do
			echo "# pid $pid thread ${t##*/} ($(cat "$t/comm" 2>/dev/null)): $(cat "$t/wchan" 2>/dev/null) $(head -c 300 "$t/stack" 2>/dev/null | tr '\n' ' ')"
		done
		command -v gdb >/dev/null &&
			timeout 15 gdb -p "$pid" -batch -ex "thread apply all bt 16" 2>&1 | grep '^#\|^Thread' | sed "s/^/# gdb $pid: /"
	done
	echo "# stats of '$name': $(timeout 10 "$MEMFEDCTL" --socket "$T/$name/sock" -j stats 2>&1 | head -c 12000)"
}

# The Debian interpreter itself (a PATH shim that forks would only add noise).
PY=/usr/bin/python3

# $PY "$HASH_PY" N: builds a dict of N strings on the heap (about 100 bytes
# each) and prints the sha256 of its values in key order.
HASH_PY=$(realpath "$(dirname "${BASH_SOURCE[0]}")/../heap_hash.py")

# of_this_test PID: whether PID or an ancestor has a path under $T in its
# command line (memfedctl --socket $T/NAME/sock ...). Not the environment:
# stress-ng writes its process titles over it.
of_this_test() {
	local q=$1 k v
	while [ "${q:-0}" -gt 1 ]; do
		grep -qzF "$T/" "/proc/$q/cmdline" 2>/dev/null && return 0
		v=
		while read -r k v; do
			[ "$k" = "PPid:" ] && break
		done <"/proc/$q/status" 2>/dev/null || return 1
		q=$v
	done
	return 1
}

# rss_watch [-f] PATTERN OUT: samples VmRSS (kB) of every process whose name
# matches PATTERN (pgrep -x, so "stress-ng.*" works too), or with -f whose
# command line contains it (pgrep -f: a script run by python3, not every
# python3 on the machine), and that runs on one of this test's daemons
# (of_this_test: tests run in parallel, and another's native run of the
# same program is no sample of this one's), until killed; keeps the
# largest in OUT. Start it with &.
rss_watch() {
	local match=-x
	if [ "$1" = -f ]; then
		match=-f
		shift
	fi
	local re=$1 out=$2 max=0 p k v
	echo 0 >"$out"
	while :; do
		for p in $(pgrep "$match" "$re"); do
			of_this_test "$p" || continue
			while read -r k v _; do
				if [ "$k" = "VmRSS:" ]; then
					[ "$v" -gt "$max" ] && max=$v && echo $max >"$out"
					break
				fi
			done <"/proc/$p/status" 2>/dev/null || true
		done
		sleep 0.1
	done
}

# page_verify_end PID DEADLINE NAME WHAT: waits for memfed-test-page-verify
# (page_verify.c), started as PID on daemon NAME with its output in $T/out
# and $T/err, until $SECONDS reaches DEADLINE at the latest (a hang is reported
# and fails), and asserts that it ended cleanly: its working set in the
# remote heap, every page it read as it expected, exit 0. WHAT (e.g. "after
# 6 restarts") goes into the messages.
page_verify_end() {
	local pid=$1 deadline=$2 name=$3 what=$4 rc=0
	while [ $SECONDS -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null; do
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		report_hang "$name" memfed-test-page-verify
		fail "the page verifier still runs $what, past its time: $(cat "$T/err")"
	fi
	wait "$pid" || rc=$?
	[ $rc -ne 3 ] || fail "a page read back wrong $what:
$(grep "^page-verify" "$T/err")
--- the program's stderr, with libmemfed's log:
$(cat "$T/err")"
	[ $rc -eq 0 ] || fail "the page verifier failed $what (exit $rc; 128+N: signal N): $(cat "$T/out" "$T/err")"
	grep -q "in the remote heap" "$T/out" ||
		fail "the page verifier's working set is not in the remote heap: $(cat "$T/out")"
	grep -q "^verified [1-9][0-9]* pages, [1-9][0-9]* writes, [1-9][0-9]* drops, 0 mismatches$" "$T/out" ||
		fail "no clean summary from the page verifier $what: $(cat "$T/out" "$T/err")"
}
