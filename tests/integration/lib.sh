# Helpers for memfed's shell integration tests. Source it; it expects
# MEMFEDD and MEMFEDCTL to name the binaries under test.
#
# Each test gets a scratch dir ($T) removed at exit, along with every daemon
# it started. Assertions print what they expected and what they got.

set -euo pipefail
: "${MEMFEDD:?set MEMFEDD to the memfedd binary}"
: "${MEMFEDCTL:?set MEMFEDCTL to the memfedctl binary}"

# Pools live in RAM (tmpfs) by default, like the NVM they stand for: on this
# disk every durable write costs an fdatasync of milliseconds, which would make
# the tests measure the disk. MEMFED_TEST_DIR=/tmp runs them on disk instead.
TEST_ROOT=${MEMFED_TEST_DIR:-/dev/shm}
[ -d "$TEST_ROOT" ] && [ -w "$TEST_ROOT" ] || TEST_ROOT=/tmp
T=$(mktemp -d "$TEST_ROOT/memfed-test.XXXXXX")
declare -A DAEMON_PID=()
PASSED=0

# tree_pids PID: PID and all its descendants.
tree_pids() {
	local p=$1 c
	echo "$p"
	for c in $(pgrep -P "$p" 2>/dev/null); do
		tree_pids "$c"
	done
}

# kill_tree PID: SIGKILLs PID and every process below it (all listed
# before the first kill, so none escapes by being re-parented).
kill_tree() {
	local p
	for p in $(tree_pids "$1"); do kill -9 "$p" 2>/dev/null || true; done
}

cleanup() {
	local rc=$? job
	for name in "${!DAEMON_PID[@]}"; do
		kill -9 "${DAEMON_PID[$name]}" 2>/dev/null || true
	done
	# Programs still running (a test that failed while one waited for a
	# daemon in hard mode) would keep the wait below, and ctest, waiting.
	for job in $(jobs -p); do kill_tree "$job"; done
	wait 2>/dev/null || true
	if [ $rc -ne 0 ]; then
		for log in "$T"/*.log; do
			[ -f "$log" ] || continue
			echo "--- $log (last 20 lines)"
			tail -n 20 "$log"
		done
	fi
	[ -n "${MEMFED_KEEP_LOGS:-}" ] && cp "$T"/*.log "$MEMFED_KEEP_LOGS"/ 2>/dev/null
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { PASSED=$((PASSED + 1)); echo "ok $PASSED - $*"; }

# trust_all NAME...: makes a key for each of these nodes, and every daemon
# started afterwards under one of the names uses its key and trusts the
# others' (keys of $T/keys/*.pub). A daemon not named here makes its own key
# on first start and trusts nobody.
trust_all() {
	mkdir -p "$T/keys"
	local name
	for name in "$@"; do
		[ -f "$T/keys/$name.key" ] && continue
		"$MEMFEDCTL" key generate "$T/keys/$name.key" >"$T/keys/$name.pub" ||
			fail "memfedctl key generate for '$name' failed"
	done
}

# trust_flags NAME: the memfedd flags that give node NAME its key and trust in
# every other key of trust_all.
trust_flags() {
	local name=$1 pub
	[ -f "$T/keys/$name.key" ] || return 0
	echo "--key-file $T/keys/$name.key"
	for pub in "$T"/keys/*.pub; do
		[ "$pub" = "$T/keys/$name.pub" ] || echo "--trust $(cat "$pub")"
	done
}

# key_of NAME: node NAME's public key.
key_of() {
	if [ -f "$T/keys/$1.pub" ]; then cat "$T/keys/$1.pub"; else ctl "$1" key show; fi
}

# start_daemon NAME [memfedd flags...]: starts memfedd with its own state dir,
# socket and config file ($T/NAME/memfedd.json, "{}" unless the test wrote
# one; a --config in the flags wins) under $T/NAME and waits until its control
# socket answers. The config file keeps the host's /etc/memfed out of tests,
# and is where `memfedctl peer add` writes. MEMFEDD_WRAP (e.g. "ip netns exec
# NS") runs memfedd inside something.
start_daemon() {
	local name=$1; shift
	mkdir -p "$T/$name"
	[ -f "$T/$name/memfedd.json" ] || echo '{}' >"$T/$name/memfedd.json"
	# shellcheck disable=SC2046 # trust_flags prints whole words
	${MEMFEDD_WRAP:-} "$MEMFEDD" --config "$T/$name/memfedd.json" --state-dir "$T/$name" \
		--socket "$T/$name/sock" --kmod off $(trust_flags "$name") "$@" \
		>>"$T/$name.log" 2>&1 &
	DAEMON_PID[$name]=$!
	for _ in $(seq 1 200); do
		if "$MEMFEDCTL" --socket "$T/$name/sock" status >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "${DAEMON_PID[$name]}" 2>/dev/null || fail "memfedd '$name' exited: $(tail -n 3 "$T/$name.log")"
		sleep 0.05
	done
	fail "memfedd '$name' did not answer on $T/$name/sock"
}

# stop_daemon NAME [SIGNAL]
stop_daemon() {
	local name=$1 sig=${2:-TERM}
	kill -s "$sig" "${DAEMON_PID[$name]}" 2>/dev/null || true
	wait "${DAEMON_PID[$name]}" 2>/dev/null || true
	unset "DAEMON_PID[$name]"
}

# ctl NAME ARGS...: memfedctl against daemon NAME.
ctl() { local name=$1; shift; "$MEMFEDCTL" --socket "$T/$name/sock" "$@"; }

# expect_exit CODE CMD...: runs CMD, asserts its exit code, keeps its stderr in $ERR.
expect_exit() {
	local want=$1; shift
	set +e
	ERR=$("$@" 2>&1 >/dev/null)
	local got=$?
	set -e
	[ "$got" -eq "$want" ] || fail "'$*' exited $got, expected $want: $ERR"
}

# listen_of NAME: the wire endpoint daemon NAME actually bound.
listen_of() { ctl "$1" -j status | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen"])'; }
