#!/usr/bin/env bash
# make soak: the long fault runs that `make test` only samples. Not part of
# `make test` (minutes, not seconds). Today: memfedd SIGKILLed under real
# programs (tests/integration/restart_pressure_test.sh) at the probe's full
# size first, then at least MEMFED_SOAK_KILLS (default 20) kills in a row
# while sort, a python heap hash and stress-ng --verify run under tight
# budgets; every program must end with the native output, none may hang.
# Then the hour (MEMFED_SOAK_SECONDS, default 3600) of
# tests/integration/soak_two_nodes.sh: a module node and a pager node,
# programs looping under budgets, random SIGKILLs of both daemons and forced
# deletes of idle regions; it prints programs run, kills survived, wrong
# outputs, hangs and the daemons' RSS, and fails past its bounds.
# Between the two, memfed-test-page-verify checks every page it reads while
# memfedd is SIGKILLed MEMFED_SOAK_VERIFY_KILLS times (default 60;
# tests/integration/client_restart_verify_test.sh).
# Usage: scripts/soak.sh [BUILD_DIR]
set -euo pipefail
BUILD=${1:-build/release}
BIN=$(cd "$BUILD/bin" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)

echo "== memfedd killed under running programs: the probe's scenario, then ${MEMFED_SOAK_KILLS:-20} kills in a row"
MEMFEDD=$BIN/memfedd MEMFEDCTL=$BIN/memfedctl \
	MEMFED_RESTART_PROBE=full MEMFED_RESTART_KILLS=3 \
	MEMFED_RESTART_TOTAL=${MEMFED_SOAK_KILLS:-20} \
	bash "$HERE/../tests/integration/restart_pressure_test.sh"

echo "== pages checked one by one while memfedd is killed ${MEMFED_SOAK_VERIFY_KILLS:-60} times"
MEMFEDD=$BIN/memfedd MEMFEDCTL=$BIN/memfedctl MEMFED_PAGE_VERIFY=$BIN/memfed-test-page-verify \
	MEMFED_VERIFY_KILLS=${MEMFED_SOAK_VERIFY_KILLS:-60} \
	MEMFED_VERIFY_SECONDS=$((${MEMFED_SOAK_VERIFY_KILLS:-60} * 3)) \
	bash "$HERE/../tests/integration/client_restart_verify_test.sh"

echo "== two nodes for ${MEMFED_SOAK_SECONDS:-3600} s: programs under budgets, module and pager daemons SIGKILLed, idle regions force-deleted"
MEMFEDD=$BIN/memfedd MEMFEDCTL=$BIN/memfedctl \
	MEMFED_SOAK_SECONDS=${MEMFED_SOAK_SECONDS:-3600} \
	bash "$HERE/../tests/integration/soak_two_nodes.sh"
