// memfed-test-reuse-probe DONE: a program for `memfedctl run` that writes
// pages right after dropping them, as an allocator reuses memory it has just
// purged, and checks after eviction that they kept what it wrote
// (client_drop_reuse_test.sh).
//
// 2000 times it drops (MADV_DONTNEED) a run of 8 pages of a 64 MiB heap
// buffer and at once writes the first of them; the run was never touched
// before, or (every other time) just read, which the pager served as zero.
// Every 20 runs it writes 2048 other pages, so that under a small heap budget
// the written pages are evicted and fetched again. Then it prints "bad N of M
// pages", where a bad page no longer holds what was written, waits until the
// file DONE exists (the test reads the pager's counters meanwhile) and exits.
//
// The dropped pages' zeroes go to the module as a write-back of their own;
// the later write must not be lost to it.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "probe_say.h"

#define PAGE 4096u
#define PAGES 16384u // 64 MiB
#define RUN 8u
#define RUNS 2000u
#define CHURN_PAGES 2048u

// What run r's first page holds once written: a word that names the run.
static uint64_t mark(uint32_t r)
{
	return 0x5a5a000000000000ull | r;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		say("usage: memfed-test-reuse-probe DONE\n");
		return 2;
	}
	unsigned char *buf = mmap(NULL, (size_t)PAGES * PAGE, PROT_READ | PROT_WRITE,
	                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *churn = mmap(NULL, (size_t)CHURN_PAGES * PAGE, PROT_READ | PROT_WRITE,
	                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED || churn == MAP_FAILED) {
		say("mmap failed\n");
		return 1;
	}
	for (uint32_t r = 0; r < RUNS; r++) {
		uint64_t *first = (uint64_t *)(buf + (size_t)r * RUN * PAGE);
		if (r % 2)
			(void)*(volatile uint64_t *)first;
		if (madvise(first, (size_t)RUN * PAGE, MADV_DONTNEED) != 0) {
			say("madvise failed\n");
			return 1;
		}
		for (uint32_t w = 0; w < PAGE / 8; w++)
			first[w] = mark(r);
		if (r % 20 == 19)
			for (uint32_t c = 0; c < CHURN_PAGES; c++)
				churn[(size_t)c * PAGE] = (unsigned char)r;
	}
	for (uint32_t c = 0; c < CHURN_PAGES; c++)
		churn[(size_t)c * PAGE] = 1;
	uint32_t bad = 0;
	char line[160];
	for (uint32_t r = 0; r < RUNS; r++) {
		const uint64_t *first = (const uint64_t *)(buf + (size_t)r * RUN * PAGE);
		if (first[0] == mark(r) && first[PAGE / 8 - 1] == mark(r))
			continue;
		if (bad++ < 5) {
			snprintf(line, sizeof(line),
			         "run %u: its first page holds %016llx, not %016llx\n", r,
			         (unsigned long long)first[0], (unsigned long long)mark(r));
			say(line);
		}
	}
	snprintf(line, sizeof(line), "bad %u of %u pages\n", bad, RUNS);
	say(line);
	while (access(argv[1], F_OK) != 0)
		usleep(10000);
	return 0;
}
