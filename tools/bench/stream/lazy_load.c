/* memfed-bench-lazy-load: the program of `make bench BENCH=stream`'s lazy
 * load, the same for memfed and for CRIU, so that both do the same work:
 * read every byte of SIZE bytes of memory holding memfed-bench-pager's
 * pattern, checksum it (a sum of its 64-bit words) and write to OUT the
 * checksum and the CLOCK_REALTIME instant it was done (the script subtracts
 * the instant it started the load).
 *
 *   lazy_load map PATH OUT     mmap PATH (a memfed region through
 *                              `memfedctl run --map`), MAP_SHARED read-only,
 *                              checksum it, exit
 *   lazy_load hold MB OUT      fill MB MiB of anonymous memory with the
 *                              pattern, write "ready" to OUT, wait for
 *                              SIGUSR1 (CRIU dumps and restores it while it
 *                              waits), then checksum it, exit
 *   lazy_load fill MB FILE     write the pattern to FILE (the region's content)
 *
 * Compiled by scripts/bench_stream.sh with cc; not part of the CMake build. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ull

static uint64_t word_of(uint64_t p) { return p * 0x9E3779B97F4A7C15ull + 1; }

static void fill(uint64_t *w, uint64_t first_page, uint64_t pages)
{
	for (uint64_t p = 0; p < pages; p++)
		for (uint64_t i = 0; i < PAGE / 8; i++)
			w[p * (PAGE / 8) + i] = word_of(first_page + p) + i;
}

static void finish(const uint64_t *w, uint64_t len, const char *out)
{
	uint64_t sum = 0;
	for (uint64_t i = 0; i < len / 8; i++)
		sum += w[i];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	FILE *f = fopen(out, "w");
	if (f == NULL) {
		perror(out);
		exit(1);
	}
	fprintf(f, "%016llx %lld.%09ld\n", (unsigned long long)sum, (long long)ts.tv_sec, ts.tv_nsec);
	fclose(f);
}

static volatile sig_atomic_t go;
static void on_usr1(int sig) { (void)sig; go = 1; }

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: lazy_load map PATH OUT | hold MB OUT | fill MB FILE\n");
		return 2;
	}
	if (strcmp(argv[1], "fill") == 0) {
		uint64_t pages = strtoull(argv[2], NULL, 0) * 1024 * 1024 / PAGE;
		FILE *f = fopen(argv[3], "w");
		uint64_t *buf = malloc(256 * PAGE);
		for (uint64_t q = 0; f && q < pages; q += 256) {
			uint64_t n = pages - q < 256 ? pages - q : 256;
			fill(buf, q, n);
			fwrite(buf, 1, n * PAGE, f);
		}
		return f && fclose(f) == 0 ? 0 : 1;
	}
	if (strcmp(argv[1], "map") == 0) {
		int fd = open(argv[2], O_RDONLY);
		off_t len = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
		void *p = len > 0 ? mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
		if (p == MAP_FAILED) {
			perror(argv[2]);
			return 1;
		}
		finish(p, len, argv[3]);
		return 0;
	}
	if (strcmp(argv[1], "hold") == 0) {
		uint64_t len = strtoull(argv[2], NULL, 0) * 1024 * 1024;
		uint64_t *w = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (w == MAP_FAILED)
			return 1;
		fill(w, 0, len / PAGE);
		sigset_t usr1, old;
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		sigprocmask(SIG_BLOCK, &usr1, &old);
		signal(SIGUSR1, on_usr1);
		FILE *f = fopen(argv[3], "w");
		fprintf(f, "ready %d\n", getpid());
		fclose(f);
		while (!go)
			sigsuspend(&old);
		finish(w, len, argv[3]);
		return 0;
	}
	return 2;
}
