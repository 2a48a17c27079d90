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
