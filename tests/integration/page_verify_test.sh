#!/usr/bin/env bash
# Every page of a remote heap under hard eviction reads back as the program
# last wrote it, or as zeroes where it dropped it. page_verify.c writes,
# reads, drops (MADV_DONTNEED), remaps (munmap and mmap) and sweeps 64 MiB of
# heap from four threads under a 4 MiB budget, checking each page it reads
# against the version it expects; the pager must meanwhile have evicted and
# fetched the working set many times over, or the run proved nothing.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/client_lib.sh"
VERIFY=${MEMFED_PAGE_VERIFY:?set MEMFED_PAGE_VERIFY to memfed-test-page-verify}

MIB=64
PAGES=$((MIB * 256))
SECS=20
SEED=${MEMFED_SEED:-$RANDOM}
echo "# seed $SEED (MEMFED_SEED=$SEED repeats the program's choices)"

start_pager a 8G
run_on a --heap-budget 4M --heap-size 1G -- "$VERIFY" $MIB $SECS 4 "$SEED" 1 >"$T/out" 2>"$T/err" &
prog=$!
# Its SECS of work and a final read of every page take well under 40 s more.
deadline=$((SECONDS + SECS + 40))
# The pager's counters of the program, sampled until it ends: the first
# sample and the highest (its process leaves pager.stats as it exits, and
# memfedctl run outlives it a little: the last samples can be empty).
first="" last="" high=-1
while [ $SECONDS -lt $deadline ] && kill -0 $prog 2>/dev/null; do
	now=$(pager_sum a evictions fetches prefetched)
	if [ -n "$now" ]; then
		[ -n "$first" ] || first=$now
		read -r ev _ <<<"$now"
		if [ "$ev" -gt $high ]; then
			high=$ev
			last=$now
		fi
	fi
	sleep 0.25
done
page_verify_end $prog $deadline a "under eviction"
ok "$(tail -n 1 "$T/out") (seed $SEED)"

# Evictions and fetches: each at least twice the working set in pages.
[ -n "$last" ] || fail "pager.stats never listed the program"
read -r ev0 fe0 _ <<<"$first"
read -r ev fe pre <<<"$last"
[ $((ev - ev0)) -gt $((2 * PAGES)) ] && [ $((fe - fe0)) -gt $((2 * PAGES)) ] ||
	fail "the pager evicted $((ev - ev0)) and fetched $((fe - fe0)) pages during the run, expected more than $((2 * PAGES)) each (the working set is $PAGES pages)"
ok "the pager evicted $ev pages and fetched $fe (and prefetched $pre) of the $PAGES-page working set"
echo "$PASSED passed, 0 failed"
