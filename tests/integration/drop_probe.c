// memfed-test-drop-probe GO1 GO2: a program for `memfedctl run` that drops
// part of its heap with MADV_DONTNEED and later checks that it reads as zero
// (client_drop_restart_test.sh). It fills 32 MiB of heap with 0xab (under a
// smaller heap budget most of it is evicted, so the module holds the
// pattern), prints "ready", waits until the file GO1 exists, drops the
// buffer and prints "dropped RC", waits until GO2 exists and prints
// "nonzero N of M": the bytes of the dropped buffer that are not zero.
//
// Between the fill and the check it touches no heap memory but the buffer's
// (no stdio buffers, which live in the heap): a fault on a page the pager
// must fetch would wait while the test holds the module away.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "probe_say.h"

static void wait_for(const char *path)
{
	while (access(path, F_OK) != 0)
		usleep(10000);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		say("usage: memfed-test-drop-probe GO1 GO2\n");
		return 2;
	}
	const size_t n = (size_t)32 << 20;
	unsigned char *raw = malloc(n + 4096);
	if (raw == NULL) {
		say("malloc failed\n");
		return 1;
	}
	unsigned char *p = (unsigned char *)(((uintptr_t)raw + 4095) & ~(uintptr_t)4095);
	memset(p, 0xab, n);
	say("ready\n");
	wait_for(argv[1]);
	char line[96];
	snprintf(line, sizeof(line), "dropped %d\n", madvise(p, n, MADV_DONTNEED));
	say(line);
	wait_for(argv[2]);
	size_t nonzero = 0;
	for (size_t i = 0; i < n; i++)
		nonzero += p[i] != 0;
	snprintf(line, sizeof(line), "nonzero %zu of %zu\n", nonzero, n);
	say(line);
	return 0;
}
