#!/usr/bin/env bash
# Acceptance: stress-ng's self-verifying vm stressor, two workers of 512 MiB
# each, with at most 64 MiB of each process's heap resident. stress-ng forks
# its workers and allocates in forked grandchildren, so this also exercises
# the fork path. It must pass its own verification and every process's
# resident set must stay within the budget plus a small overhead.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"

BUDGET_MB=64
OVERHEAD_MB=16

start_pager a 24G
rss_watch 'stress-ng.*' "$T/rss" &
watcher=$!
set +e
out=$(run_on a --heap-budget ${BUDGET_MB}M --heap-size 1G -- \
	stress-ng --vm 2 --vm-bytes 512M --vm-method rand-set --verify --timeout 20s \
	--metrics-brief 2>&1)
rc=$?
set -e
kill $watcher; wait $watcher || true
echo "$out" | sed 's/^/# /'
[ $rc -eq 0 ] || fail "stress-ng exited $rc"
grep -q "successful run completed" <<<"$out" || fail "stress-ng did not report success"
! grep -qiE "fail|error|bit errors|detected" <<<"$out" || fail "stress-ng reported a failure"
ok "stress-ng --vm 2 --vm-bytes 512M --vm-method rand-set --verify passes"

max_kb=$(cat "$T/rss")
echo "# VmRSS max ${max_kb} kB over every stress-ng process"
[ "$max_kb" -gt $((BUDGET_MB * 1024 / 2)) ] || fail "VmRSS only $max_kb kB: did the workers run?"
[ "$max_kb" -le $(((BUDGET_MB + OVERHEAD_MB) * 1024)) ] ||
	fail "VmRSS reached $max_kb kB, above ${BUDGET_MB}M + ${OVERHEAD_MB}M"
ok "each process's resident set stayed within ${BUDGET_MB} MiB + ${OVERHEAD_MB} MiB"

# stress-ng checks what it wrote at the end of every pass: its bogo-op count
# says passes completed, so the verification really ran.
ops=$(awk '/metrc:.* vm /{print $5}' <<<"$out")
[ "${ops:-0}" -gt 0 ] || fail "stress-ng completed no vm pass, so verified nothing: $out"
ok "stress-ng verified $ops bogo ops of rand-set"

# A buffer half again the budget, populated with MADV_POPULATE_READ and split
# into vmas by stress-ng's madvise hints: whole passes under steady eviction.
out=$(run_on a --heap-budget 16M --heap-size 1G -- \
	stress-ng --vm 1 --vm-bytes 24M --vm-method rand-set --verify --vm-ops 4 \
	--timeout 60s --metrics-brief 2>&1) || fail "the 24M run failed: $out"
ops=$(awk '/metrc:.* vm /{print $5}' <<<"$out")
[ "${ops:-0}" -ge 4 ] || fail "the 24M run completed ${ops:-0} of 4 passes: $out"
! grep -qiE "fail|bit errors" <<<"$out" || fail "stress-ng reported a failure: $out"
ok "stress-ng verified $ops passes of rand-set on a 24M buffer with a 16M budget"
