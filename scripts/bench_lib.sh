# shellcheck shell=bash
# Shared by the bench scripts (source it).

# bench_scratch TEMPLATE: WORK, a scratch directory from mktemp -d TEMPLATE,
# and PIDS, processes to kill; at exit both go (the caller appends to PIDS).
bench_scratch() {
	WORK=$(mktemp -d "$1")
	PIDS=()
	trap bench_cleanup EXIT
}
bench_cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}

# bench_start_memfedd BIN_DIR DIR LOG: one memfedd of BIN_DIR, module and
# pager with the embedded defaults but a 4 GiB pool, its state (pool) in DIR
# and its socket DIR/sock, logging to LOG; returns once it answers `status`
# (exits the script if it does not within 5 s). MEMFEDD_PID is its pid.
# MEMFED_BENCH_CONFIG, if set, is its config file's JSON (e.g.
# '{"pager": {"evict_by_move": false}}' to measure the drop path).
bench_start_memfedd() {
	local bin=$1 dir=$2 log=$3
	mkdir -p "$dir"
	echo "${MEMFED_BENCH_CONFIG:-"{}"}" >"$dir/memfedd.json"
	"$bin/memfedd" --config "$dir/memfedd.json" --state-dir "$dir" --socket "$dir/sock" \
		--pool-size 4G --listen 127.0.0.1:0 --kmod off --log-level warn >"$log" 2>&1 &
	# shellcheck disable=SC2034 # the caller's
	MEMFEDD_PID=$!
	for _ in $(seq 1 100); do
		"$bin/memfedctl" --socket "$dir/sock" status >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	echo "memfedd ($dir) did not start: $(cat "$log")" >&2
	exit 1
}
