/*
 * memfed_eva_test: a program on federated memory, for the QEMU tier's daemon
 * tests (daemon_tests.sh). It reaches its region only through an extended
 * virtual address, so every byte it checks went EVA -> window (memfed.ko's
 * table) -> mapping -> page fault -> pager -> module.
 *
 *   memfed_eva_test hold SOCKET REGION PAGES
 *       Creates REGION (PAGES pages) and fills it with a pattern through the
 *       daemon, opens its window, maps it through the EVA and checks the
 *       first half page by page. Prints "EVA 0x..." and waits for a line on
 *       stdin (the daemon may be restarted meanwhile); then checks the second
 *       half, whose pages fault only now, and prints "HOLD PASS" or
 *       "HOLD FAIL <reason>".
 *   memfed_eva_test check SOCKET EVA PAGES
 *       Maps the window EVA names and checks the whole pattern.
 *
 * Exit status 0 on success. Single-threaded.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memfed.h"

#define PAGE 4096u

static uint64_t pattern(uint64_t page, uint64_t word)
{
	return 0x6d656d6665640000ull ^ (page << 16) ^ word;
}

/* rc: the negative errno value a memfed call returned. */
static int fail(const char *what, int64_t rc)
{
	printf("FAIL %s: %s\n", what, memfed_strerror((int)rc));
	return 1;
}

/* Checks pages [from, to) of the mapping at p; 0 if they hold the pattern. */
static int check_pages(const uint64_t *p, uint64_t from, uint64_t to)
{
	uint64_t pg, w;

	for (pg = from; pg < to; pg++)
		for (w = 0; w < PAGE / 8; w++)
			if (p[pg * (PAGE / 8) + w] != pattern(pg, w)) {
				printf("FAIL page %" PRIu64 " word %" PRIu64 " is 0x%" PRIx64 "\n",
				       pg, w, p[pg * (PAGE / 8) + w]);
				return 1;
			}
	return 0;
}

static int hold(struct memfed_conn *m, const char *name, uint64_t pages)
{
	struct memfed_region *r;
	uint64_t buf[PAGE / 8], pg, w, eva;
	int64_t n;
	void *ptr;
	char line[16];
	int rc;

	rc = memfed_region_create(m, name, pages * PAGE, 0600, NULL);
	if (rc < 0)
		return fail("region create", rc);
	rc = memfed_region_open(m, name, &r);
	if (rc < 0)
		return fail("region open", rc);
	for (pg = 0; pg < pages; pg++) {
		for (w = 0; w < PAGE / 8; w++)
			buf[w] = pattern(pg, w);
		n = memfed_region_write(r, pg * PAGE, buf, PAGE);
		if (n < 0)
			return fail("region write", n);
	}
	memfed_region_close(r);
	rc = memfed_window_open(m, name, &eva);
	if (rc < 0)
		return fail("window open", rc);
	rc = memfed_eva_to_ptr(m, eva, &ptr);
	if (rc < 0)
		return fail("eva to pointer", rc);
	if (check_pages(ptr, 0, pages / 2))
		return 1;
	printf("EVA 0x%" PRIx64 "\n", eva);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin)) {
		printf("FAIL stdin closed before the go-ahead\n");
		return 1;
	}
	if (check_pages(ptr, pages / 2, pages))
		return 1;
	printf("HOLD PASS\n");
	return 0;
}

static int check(struct memfed_conn *m, uint64_t eva, uint64_t pages)
{
	void *ptr;
	int rc;

	rc = memfed_eva_to_ptr(m, eva, &ptr);
	if (rc < 0)
		return fail("eva to pointer", rc);
	if (check_pages(ptr, 0, pages))
		return 1;
	printf("CHECK PASS\n");
	return 0;
}

int main(int argc, char **argv)
{
	struct memfed_conn *m;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 5 || (strcmp(argv[1], "hold") && strcmp(argv[1], "check"))) {
		fprintf(stderr, "usage: memfed_eva_test hold SOCKET REGION PAGES\n"
		                "       memfed_eva_test check SOCKET EVA PAGES\n");
		return 2;
	}
	rc = memfed_connect(argv[2], &m);
	if (rc < 0)
		return fail("connect", rc);
	if (!strcmp(argv[1], "hold"))
		rc = hold(m, argv[3], strtoull(argv[4], NULL, 0));
	else
		rc = check(m, strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0));
	memfed_close(m);
	return rc;
}
