// Fault probe for the RDMA benchmark in the QEMU guest (make bench, via
// tests/qemu/rdma_program_tests.sh --bench): run under `memfedctl run --map
// NAME=PATH`, it maps PATH (a region, through libmemfed-preload.so) and
//   1. touches the pages of its first half once each in a random order,
//      timing every first touch (a page fault the node's pager serves from
//      the module): the p50 and p99;
//   2. reads the pages of its second half in order: the scan rate.
// A byte of every page goes into a checksum that is printed, so the reads
// cannot be optimised away. One line on stdout:
//   fault_probe: random N p50 US p99 US sequential M pages S s RATE pages/s sum X
//
//   memfed_fault_probe PATH
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: memfed_fault_probe PATH  (a region under memfedctl run)\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 4 * PAGE) {
		fprintf(stderr, "fault_probe: %s: cannot open, or smaller than 4 pages\n", argv[1]);
		return 1;
	}
	size_t pages = st.st_size / PAGE, half = pages / 2;
	const volatile uint8_t *p = mmap(NULL, pages * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("fault_probe: mmap");
		return 1;
	}
	size_t *order = malloc(half * sizeof(*order));
	double *us = malloc(half * sizeof(*us));
	if (!order || !us)
		return 1;
	for (size_t i = 0; i < half; i++)
		order[i] = i;
	uint64_t seed = 88172645463325252ull, sum = 0;
	for (size_t i = half - 1; i > 0; i--) {
		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		size_t j = seed % (i + 1), t = order[i];
		order[i] = order[j], order[j] = t;
	}
	for (size_t i = 0; i < half; i++) {
		double t0 = now_us();
		sum += p[order[i] * PAGE + (order[i] % PAGE)];
		us[i] = now_us() - t0;
	}
	qsort(us, half, sizeof(*us), cmp_double);
	double t0 = now_us();
	for (size_t i = half; i < pages; i++)
		sum += p[i * PAGE + 7];
	double secs = (now_us() - t0) / 1e6;
	printf("fault_probe: random %zu p50 %.1f us p99 %.1f us sequential %zu pages %.3f s "
	       "%.0f pages/s sum %llu\n",
	       half, us[half / 2], us[half * 99 / 100], pages - half, secs, (pages - half) / secs,
	       (unsigned long long)sum);
	return 0;
}
