// memfed-test-page-verify MIB SECONDS THREADS SEED DROP: a program for
// `memfedctl run` that checks every page of its remote heap against what it
// last wrote there, in the manner of the kernel's userfaultfd stress test.
//
// Its working set (MIB MiB of anonymous private mmaps, which the preload
// serves from the remote heap) is split between the threads; a thread alone
// writes, drops and reads its pages, so no page needs a lock. Each thread has
// a contiguous block of pages in one big mapping (three quarters of the set)
// and "arenas": mappings of 64 pages of their own (the rest), which it now
// and then unmaps and maps afresh, as python's allocator does with its
// arenas (under the preload munmap drops the pages and hands the range back
// to the heap's allocator, whose next mmap, maybe another thread's, reuses
// it). Every page (numbered: the blocks' first, then the arenas') holds the
// pattern of (page number, version): version 0 is all zeroes (never written,
// or dropped since), version v > 0 has in each 8-byte word w the bijective
// mix of (page, v, w), so that any word read back names the page and version
// it was written for. For SECONDS each thread loops over: writing a random
// page (the next version; half of them checked first, which makes the write
// a write-protect fault on a page just fetched rather than a missing-page
// write fault), checking a random page, with DROP=1 now and then an
// madvise(MADV_DONTNEED) of a random run of 1 to 64 of its pages (version 0
// after; half the time the first is written again at once, as an allocator
// reuses memory it purged) or the remapping of one of its arenas (its first
// page written at once), and now and then a sequential sweep that writes or
// checks up to 1024 pages in order (eviction of streams and prefetch). At the
// end every thread checks all its pages, and the program prints "verified N
// pages, M writes, D drops, 0 mismatches" and exits 0.
//
// The first page found different from its expected version is reported on
// stderr in one line -- address, page index, expected version, what was
// found (all zero; a whole older or newer version of this page; the pattern
// of another page; garbage, with the first differing word), thread, time
// since the start and wall-clock time (to find the moment in memfedd's logs)
// -- followed by "detail" lines (the page's last write and drop, a re-read,
// the other mismatching pages of that thread), and the program exits 3.
//
// Apart from the mismatch report, which may take its time, the loop touches
// no memory but the working set, the shadow and the thread's stack: no stdio
// (whose buffers are heap memory, as drop_probe.c explains), no allocation.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "probe_say.h"

#define PAGE 4096u
#define WORDS (PAGE / 8u)
// The key of a word packs (page, version, word): 24 + 31 + 9 bits.
#define MAX_PAGES (1u << 24)
#define MAX_VERSION ((1u << 31) - 1u)
#define MAX_THREADS 64u
#define MAX_RUN 64u
#define SWEEP_MAX 1024u
#define ARENA_PAGES 64u

// The shadow: per page the version last written (0 after a drop), and when
// (ms since the start) it was last written and dropped, for the report.
//
// It lives in a MAP_SHARED anonymous mapping, which the preload leaves to the
// kernel (only private anonymous memory goes to the remote heap): it is the
// reference the remote pages are judged by, and a reference that could itself
// be lost would make a report ambiguous (was the page wrong, or its expected
// version?). The working set alone is the thing under test; main() checks
// that it is in a userfaultfd-registered mapping and the shadow is not.
struct shadow {
	uint32_t version;
	uint32_t written_ms;
	uint32_t dropped_ms;
	uint32_t version_before_drop;
	uint32_t how_dropped; // 0: never, else one of the DROP_ below
};
enum { DROP_MADVISE = 1, DROP_REMAP };

struct worker {
	pthread_t tid;
	unsigned index;
	uint32_t first, count;             // its block of pages
	uint32_t arena_first, arena_count; // its arenas (numbers into g_arena)
	uint64_t rng;
	uint64_t verified, writes, drops, dropped_pages, sweeps, remaps;
};

// Pages 0..g_block_pages-1 are the blocks at g_base, the others the arenas:
// page g_block_pages + ARENA_PAGES * a + i is page i of arena a, currently
// mapped at g_arena[a] (written by the arena's thread only).
static unsigned char *g_base;
static uint32_t g_pages, g_block_pages;
static unsigned char **g_arena;
static struct shadow *g_shadow;
static int g_drop;
static struct timespec g_start;
static atomic_int g_stop;
static atomic_int g_failed;
static uint64_t g_inv1, g_inv2;

static const uint64_t kMul1 = 0xbf58476d1ce4e5b9ull, kMul2 = 0x94d049bb133111ebull;

static uint32_t ms_since_start(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint32_t)((now.tv_sec - g_start.tv_sec) * 1000 +
	                  (now.tv_nsec - g_start.tv_nsec) / 1000000);
}

// ---- the pattern ----

// splitmix64's finaliser: a bijection of 64-bit words (xor-shifts and odd
// multipliers are invertible), so a word read back can be traced to its key.
static uint64_t mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * kMul1;
	z = (z ^ (z >> 27)) * kMul2;
	return z ^ (z >> 31);
}

static uint64_t unxorshift(uint64_t x, unsigned s)
{
	uint64_t r = x;
	for (unsigned k = s; k < 64; k += s)
		r = x ^ (r >> s);
	return r;
}

static uint64_t unmix(uint64_t z)
{
	z = unxorshift(z, 31) * g_inv2;
	z = unxorshift(z, 27) * g_inv1;
	return unxorshift(z, 30);
}

static uint64_t mul_inverse(uint64_t a)
{
	uint64_t x = a; // Newton's iteration doubles the good bits (3, 6, ...)
	for (int i = 0; i < 6; i++)
		x *= 2 - a * x;
	return x;
}

static uint64_t word_of(uint32_t page, uint32_t version, uint32_t w)
{
	if (version == 0)
		return 0;
	return mix((uint64_t)page << 40 | (uint64_t)version << 9 | w);
}

static uint64_t *page_at(uint32_t page)
{
	if (page < g_block_pages)
		return (uint64_t *)(g_base + (size_t)page * PAGE);
	uint32_t i = page - g_block_pages;
	return (uint64_t *)(g_arena[i / ARENA_PAGES] + (size_t)(i % ARENA_PAGES) * PAGE);
}

// The end (exclusive) of the run of pages contiguous in memory that holds
// `page`: its thread's block, or its arena.
static uint32_t run_end(const struct worker *me, uint32_t page)
{
	if (page < g_block_pages)
		return me->first + me->count;
	return page - (page - g_block_pages) % ARENA_PAGES + ARENA_PAGES;
}

// The thread's k-th page: its block's, then its arenas'.
static uint32_t nth_page(const struct worker *me, uint32_t k)
{
	if (k < me->count)
		return me->first + k;
	return g_block_pages + me->arena_first * ARENA_PAGES + (k - me->count);
}

static uint32_t pages_of(const struct worker *me)
{
	return me->count + me->arena_count * ARENA_PAGES;
}

static void fill(uint32_t page, uint32_t version)
{
	volatile uint64_t *p = page_at(page);
	for (uint32_t w = 0; w < WORDS; w++)
		p[w] = word_of(page, version, w);
}

// Index of the first word of `page` that differs from `version`, or WORDS.
static uint32_t first_difference(uint32_t page, uint32_t version)
{
	const volatile uint64_t *p = page_at(page);
	for (uint32_t w = 0; w < WORDS; w++)
		if (p[w] != word_of(page, version, w))
			return w;
	return WORDS;
}

// ---- the report ----

// What a page holds, judged from a copy of it.
struct finding {
	uint32_t first_diff;            // first word differing from the expected version
	uint32_t differing, zero_words; // counts of words
	int kind;                       // one of the K_ below
	uint32_t page, version;         // K_VERSION / K_OTHER_PAGE: whose pattern it is
	uint32_t words_of_it;           // how many words are of that pattern
};
enum { K_MATCH, K_ZERO, K_VERSION, K_OTHER_PAGE, K_GARBAGE };

static struct finding judge(const uint64_t *copy, uint32_t page, uint32_t expected)
{
	struct finding f = {WORDS, 0, 0, K_MATCH, 0, 0, 0};
	for (uint32_t w = 0; w < WORDS; w++) {
		f.zero_words += copy[w] == 0;
		if (copy[w] != word_of(page, expected, w)) {
			f.differing++;
			if (f.first_diff == WORDS)
				f.first_diff = w;
		}
	}
	if (f.differing == 0)
		return f;
	if (f.zero_words == WORDS) {
		f.kind = K_ZERO;
		return f;
	}
	// Whose pattern is the first differing word (or, if that is zero, the
	// first nonzero one)?
	uint32_t w = f.first_diff;
	while (w < WORDS && copy[w] == 0)
		w++;
	uint64_t key = unmix(copy[w]);
	uint32_t kw = (uint32_t)(key & (WORDS - 1)), kv = (uint32_t)(key >> 9 & MAX_VERSION),
	         kp = (uint32_t)(key >> 40);
	f.kind = K_GARBAGE;
	if (kw != w || kv == 0 || kp >= g_pages)
		return f;
	f.kind = kp == page ? K_VERSION : K_OTHER_PAGE;
	f.page = kp;
	f.version = kv;
	for (uint32_t i = 0; i < WORDS; i++)
		f.words_of_it += copy[i] == word_of(kp, kv, i);
	return f;
}

// `before_drop`: the version the page had before it was dropped, if it is
// expected to be zeroes now (a page found holding it kept it past its drop).
static int describe(char *out, size_t n, const struct finding *f, const uint64_t *copy,
                    uint32_t page, uint32_t expected, uint32_t before_drop)
{
	uint32_t w = f->first_diff, ref = expected ? expected : before_drop;
	switch (f->kind) {
	case K_MATCH:
		return snprintf(out, n, "the expected version %u", expected);
	case K_ZERO:
		return snprintf(out, n, "ALL ZERO (as never written or dropped)");
	case K_VERSION:
		return snprintf(
		        out, n,
		        "%s version %u of this page (%s; %u of %u words are of it, %u zero words), "
		        "first differing word at +0x%x",
		        f->words_of_it == WORDS ? "the whole" : "PARTLY", f->version,
		        f->version < ref   ? (expected ? "OLDER" : "OLDER than the version dropped")
		        : f->version > ref ? (expected ? "NEWER" : "NEWER than the version dropped")
		        : expected         ? "the expected version, but not all of the page"
		                           : "the version DROPPED",
		        f->words_of_it, WORDS, f->zero_words, w * 8);
	case K_OTHER_PAGE:
		return snprintf(out, n,
		                "%s the pattern of ANOTHER page %u, version %u (%u of %u words are "
		                "of it, %u zero words; that page is at %p now), first differing "
		                "word at +0x%x",
		                f->words_of_it == WORDS ? "all of" : "partly", f->page, f->version,
		                f->words_of_it, WORDS, f->zero_words, (void *)page_at(f->page),
		                w * 8);
	default:
		return snprintf(
		        out, n,
		        "garbage: first differing word at +0x%x is 0x%016llx, expected 0x%016llx "
		        "(%u of %u words differ, %u zero words)",
		        w * 8, (unsigned long long)copy[w],
		        (unsigned long long)word_of(page, expected, w), f->differing, WORDS,
		        f->zero_words);
	}
}

static void copy_page(uint64_t *dst, uint32_t page)
{
	const volatile uint64_t *p = page_at(page);
	for (uint32_t w = 0; w < WORDS; w++)
		dst[w] = p[w];
}

// Reports the mismatch of `page` seen by worker `me` during `what`, and exits
// 3. Only the first thread to find one reports; the others wait for the exit.
static void mismatch(struct worker *me, uint32_t page, const char *what)
{
	if (atomic_exchange(&g_failed, 1)) {
		for (;;)
			pause();
	}
	uint32_t now_ms = ms_since_start();
	struct timespec wall;
	clock_gettime(CLOCK_REALTIME, &wall);
	long day_s = (long)(wall.tv_sec % 86400);
	const struct shadow s = g_shadow[page];
	uint64_t copy[WORDS];
	copy_page(copy, page);
	struct finding f = judge(copy, page, s.version);
	char found[400], line[1024];
	describe(found, sizeof(found), &f, copy, page, s.version, s.version_before_drop);
	snprintf(line, sizeof(line),
	         "page-verify: MISMATCH at %p, page %u, thread %u, %u.%03u s after the start "
	         "(%02ld:%02ld:%02ld.%03ld UTC), %s: expected version %u, found %s\n",
	         (void *)page_at(page), page, me->index, now_ms / 1000, now_ms % 1000, day_s / 3600,
	         day_s / 60 % 60, day_s % 60, wall.tv_nsec / 1000000, what, s.version, found);
	say_fd(2, line);

	char where[120] = "in the thread's block";
	if (page >= g_block_pages)
		snprintf(where, sizeof(where),
		         "page %u of arena %u (%u remaps by this thread so far)",
		         (page - g_block_pages) % ARENA_PAGES, (page - g_block_pages) / ARENA_PAGES,
		         (unsigned)me->remaps);
	char written[80] = "never written", dropped[120] = "never dropped";
	uint32_t last_version = s.version ? s.version : s.version_before_drop;
	if (last_version)
		snprintf(written, sizeof(written), "last written (version %u) at %u.%03u s",
		         last_version, s.written_ms / 1000, s.written_ms % 1000);
	if (s.how_dropped)
		snprintf(dropped, sizeof(dropped),
		         "last dropped (%s) at %u.%03u s, from version %u",
		         s.how_dropped == DROP_REMAP ? "munmap and mmap" : "madvise",
		         s.dropped_ms / 1000, s.dropped_ms % 1000, s.version_before_drop);
	snprintf(line, sizeof(line),
	         "page-verify: detail: page %u, %s, %s, %s; its words +0..+0x18: "
	         "%016llx %016llx %016llx %016llx\n",
	         page, where, written, dropped, (unsigned long long)copy[0],
	         (unsigned long long)copy[1], (unsigned long long)copy[2],
	         (unsigned long long)copy[3]);
	say_fd(2, line);

	// Read again: a page that is right now was read wrong once (a fault
	// served wrong bytes and the page was replaced since), one still wrong
	// holds them.
	uint64_t again[WORDS];
	copy_page(again, page);
	struct finding g = judge(again, page, s.version);
	describe(found, sizeof(found), &g, again, page, s.version, s.version_before_drop);
	snprintf(line, sizeof(line), "page-verify: detail: read again, page %u holds %s%s\n", page,
	         found,
	         memcmp(copy, again, sizeof(copy)) ? "" : " (the same bytes as the first read)");
	say_fd(2, line);

	// Is it one page, or a run (a drop, an eviction batch)? The others of
	// this thread's pages, which no other thread touches.
	uint32_t bad = 0, zero = 0, shown = 0;
	char list[400];
	size_t used = 0;
	list[0] = 0;
	for (uint32_t k = 0; k < pages_of(me); k++) {
		uint32_t p = nth_page(me, k);
		if (p == page || first_difference(p, g_shadow[p].version) == WORDS)
			continue;
		copy_page(again, p);
		struct finding h = judge(again, p, g_shadow[p].version);
		bad++;
		zero += h.kind == K_ZERO;
		if (shown < 16 && used < sizeof(list) - 40) {
			used += (size_t)snprintf(list + used, sizeof(list) - used, " %u(v%u:%s)", p,
			                         g_shadow[p].version,
			                         h.kind == K_ZERO         ? "zero"
			                         : h.kind == K_VERSION    ? "other version"
			                         : h.kind == K_OTHER_PAGE ? "other page"
			                                                  : "garbage");
			shown++;
		}
	}
	snprintf(line, sizeof(line),
	         "page-verify: detail: %u other pages of thread %u's %u (pages %u..%u and %u "
	         "arenas) mismatch, %u of them all zero:%s\n",
	         bad, me->index, pages_of(me), me->first, me->first + me->count - 1,
	         me->arena_count, zero, list);
	say_fd(2, line);
	_exit(3);
}

// ---- the workers ----

static uint64_t next_random(uint64_t *s)
{
	// xorshift64*
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void check(struct worker *me, uint32_t page, const char *what)
{
	if (first_difference(page, g_shadow[page].version) != WORDS)
		mismatch(me, page, what);
	me->verified++;
}

static void write_next(struct worker *me, uint32_t page)
{
	struct shadow *s = &g_shadow[page];
	uint32_t v = s->version;
	if (v == 0)
		v = s->version_before_drop; // never reuse a version: a stale one stays telling
	v = v >= MAX_VERSION ? 1 : v + 1;
	fill(page, v);
	s->version = v;
	s->written_ms = ms_since_start();
	me->writes++;
}

// Pages [first, first+n) were dropped `how`: they read as zeroes now.
static void mark_dropped(uint32_t first, uint32_t n, uint32_t how)
{
	uint32_t now = ms_since_start();
	for (uint32_t p = first; p < first + n; p++) {
		struct shadow *s = &g_shadow[p];
		if (s->version)
			s->version_before_drop = s->version;
		s->version = 0;
		s->dropped_ms = now ? now : 1;
		s->how_dropped = how;
	}
}

static void drop_run(struct worker *me, uint32_t page, uint32_t n)
{
	if (madvise(page_at(page), (size_t)n * PAGE, MADV_DONTNEED) != 0) {
		char line[160];
		snprintf(line, sizeof(line),
		         "page-verify: madvise(MADV_DONTNEED) of pages %u..%u failed: %s\n", page,
		         page + n - 1, strerror(errno));
		say_fd(2, line);
		_exit(1);
	}
	mark_dropped(page, n, DROP_MADVISE);
	me->drops++;
	me->dropped_pages += n;
}

// Unmaps arena `a` and maps a fresh one (wherever the heap puts it): its
// pages read as zeroes.
static void remap_arena(struct worker *me, uint32_t a)
{
	size_t len = (size_t)ARENA_PAGES * PAGE;
	void *fresh = MAP_FAILED;
	if (munmap(g_arena[a], len) == 0)
		fresh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fresh == MAP_FAILED) {
		char line[160];
		snprintf(line, sizeof(line), "page-verify: remapping arena %u: %s\n", a,
		         strerror(errno));
		say_fd(2, line);
		_exit(1);
	}
	g_arena[a] = fresh;
	mark_dropped(g_block_pages + a * ARENA_PAGES, ARENA_PAGES, DROP_REMAP);
	me->remaps++;
}

static void *work(void *arg)
{
	struct worker *me = arg;
	while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		uint64_t r = next_random(&me->rng);
		uint32_t k = (uint32_t)((r >> 32) % pages_of(me));
		uint32_t page = nth_page(me, k), end = run_end(me, page);
		uint32_t op = (uint32_t)(r % 1000);
		if (op < 400) {
			if (op < 200)
				check(me, page, "reading it before a write");
			write_next(me, page);
		} else if (op < 980) {
			check(me, page, "reading a random page");
		} else if (op < 993) {
			if (!g_drop)
				continue;
			uint32_t n = 1 + (uint32_t)((r >> 16) % MAX_RUN);
			drop_run(me, page, n < end - page ? n : end - page);
			if ((r >> 12) & 1)
				write_next(me, page);
		} else if (op < 995) {
			if (!g_drop || me->arena_count == 0)
				continue;
			uint32_t a = me->arena_first + (uint32_t)((r >> 16) % me->arena_count);
			remap_arena(me, a);
			write_next(me, g_block_pages + a * ARENA_PAGES);
		} else if (op < 997) {
			uint32_t n = 64 + (uint32_t)((r >> 16) % (SWEEP_MAX - 63));
			if (n > end - page)
				n = end - page;
			int writing = (r >> 12) & 1;
			for (uint32_t p = page; p < page + n; p++) {
				if (writing)
					write_next(me, p);
				else
					check(me, p, "a sequential read sweep");
			}
			me->sweeps++;
		} else {
			// The next page, where prefetch may have been.
			check(me, nth_page(me, (k + 1) % pages_of(me)), "reading a neighbour");
		}
	}
	for (uint32_t k = 0; k < pages_of(me); k++)
		check(me, nth_page(me, k), "the final read of every page");
	return NULL;
}

// ---- set-up ----

// Whether the mapping holding `addr` is registered with a userfaultfd for
// missing pages ("um" in its VmFlags in /proc/self/smaps); -1 if unknown.
static int uffd_registered(const void *addr)
{
	static char buf[1 << 20];
	int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = 0;
	ssize_t n;
	while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = 0;
	uintptr_t a = (uintptr_t)addr;
	int in = 0;
	for (char *line = buf; line && *line;) {
		char *end = strchr(line, '\n');
		if (end)
			*end = 0;
		unsigned long lo, hi;
		char dash;
		if (sscanf(line, "%lx%c%lx ", &lo, &dash, &hi) == 3 && dash == '-')
			in = a >= lo && a < hi;
		else if (in && strncmp(line, "VmFlags:", 8) == 0)
			return strstr(line, " um") != NULL;
		line = end ? end + 1 : NULL;
	}
	return -1;
}

static int parse(const char *s, unsigned long long max, unsigned long long *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long long mib, seconds, threads, seed, drop;
	if (argc != 6 || parse(argv[1], (unsigned long long)MAX_PAGES * PAGE >> 20, &mib) ||
	    mib == 0 || parse(argv[2], 86400, &seconds) || parse(argv[3], MAX_THREADS, &threads) ||
	    threads == 0 || parse(argv[4], UINT64_MAX, &seed) || parse(argv[5], 1, &drop)) {
		say_fd(2,
		       "usage: memfed-test-page-verify MIB SECONDS THREADS SEED DROP\n"
		       "  MIB: working set (1..65536), SECONDS: how long to loop, THREADS: 1..64,\n"
		       "  SEED: of the random choices,\n"
		       "  DROP: 1 to MADV_DONTNEED runs of pages and remap arenas, 0 not to\n");
		return 2;
	}
	g_pages = (uint32_t)(mib << 20 >> 12);
	g_drop = (int)drop;
	if (g_pages < threads) {
		say_fd(2, "page-verify: fewer pages than threads\n");
		return 2;
	}
	g_inv1 = mul_inverse(kMul1);
	g_inv2 = mul_inverse(kMul2);
	clock_gettime(CLOCK_MONOTONIC, &g_start);

	// A quarter of each thread's pages in arenas (none if that is less
	// than one), the rest in its block.
	uint32_t arenas_each = g_pages / (uint32_t)threads / 4 / ARENA_PAGES;
	uint32_t arenas = arenas_each * (uint32_t)threads;
	g_block_pages = g_pages - arenas * ARENA_PAGES;

	// Private anonymous: the preload serves these from the remote heap.
	g_base = mmap(NULL, (size_t)g_block_pages * PAGE, PROT_READ | PROT_WRITE,
	              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	// Shared anonymous: the kernel's (see struct shadow).
	g_shadow = mmap(NULL, (size_t)g_pages * sizeof(*g_shadow), PROT_READ | PROT_WRITE,
	                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	g_arena = mmap(NULL, (arenas + 1) * sizeof(*g_arena), PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_base == MAP_FAILED || g_shadow == MAP_FAILED || g_arena == MAP_FAILED) {
		say_fd(2, "page-verify: mmap failed\n");
		return 1;
	}
	for (uint32_t a = 0; a < arenas; a++) {
		g_arena[a] = mmap(NULL, (size_t)ARENA_PAGES * PAGE, PROT_READ | PROT_WRITE,
		                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (g_arena[a] == MAP_FAILED) {
			say_fd(2, "page-verify: mmap of an arena failed\n");
			return 1;
		}
	}
	int remote = uffd_registered(g_base), shadow_remote = uffd_registered(g_shadow);
	if (arenas > 0 && remote == 1)
		remote = uffd_registered(g_arena[arenas - 1]);
	char line[400];
	snprintf(line, sizeof(line),
	         "page-verify: %llu MiB (%u pages; %u in a block at %p, %u arenas of %u) %s, "
	         "shadow %s; %llu threads for %llu s, seed %llu, drops %s\n",
	         mib, g_pages, g_block_pages, (void *)g_base, arenas, ARENA_PAGES,
	         remote == 1   ? "in the remote heap (userfaultfd-registered)"
	         : remote == 0 ? "NOT in the remote heap (no userfaultfd)"
	                       : "(userfaultfd registration unknown)",
	         shadow_remote == 0 ? "local" : "NOT local", threads, seconds, seed,
	         drop ? "on" : "off");
	say_fd(1, line);
	if (shadow_remote == 1) {
		say_fd(2, "page-verify: the shadow is in a userfaultfd-registered mapping; it must "
		          "be local\n");
		return 1;
	}

	static struct worker workers[MAX_THREADS];
	uint64_t s = seed;
	for (unsigned i = 0; i < threads; i++) {
		struct worker *w = &workers[i];
		w->index = i;
		w->first = (uint32_t)((uint64_t)g_block_pages * i / threads);
		w->count = (uint32_t)((uint64_t)g_block_pages * (i + 1) / threads) - w->first;
		w->arena_first = arenas_each * i;
		w->arena_count = arenas_each;
		w->rng = mix(++s + 0x9e3779b97f4a7c15ull) | 1; // xorshift needs a nonzero state
	}
	for (unsigned i = 0; i < threads; i++) {
		int rc = pthread_create(&workers[i].tid, NULL, work, &workers[i]);
		if (rc != 0) {
			snprintf(line, sizeof(line), "page-verify: pthread_create: %s\n",
			         strerror(rc));
			say_fd(2, line);
			return 1;
		}
	}
	struct timespec until = g_start;
	until.tv_sec += (time_t)seconds;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR) {
	}
	atomic_store(&g_stop, 1);
	uint64_t verified = 0, writes = 0, drops = 0, dropped = 0, sweeps = 0, remaps = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(workers[i].tid, NULL);
		verified += workers[i].verified;
		writes += workers[i].writes;
		drops += workers[i].drops;
		dropped += workers[i].dropped_pages;
		sweeps += workers[i].sweeps;
		remaps += workers[i].remaps;
	}
	uint32_t ms = ms_since_start();
	snprintf(line, sizeof(line),
	         "page-verify: %llu dropped pages, %llu arena remaps, %llu sweeps in %u.%03u s\n"
	         "verified %llu pages, %llu writes, %llu drops, 0 mismatches\n",
	         (unsigned long long)dropped, (unsigned long long)remaps,
	         (unsigned long long)sweeps, ms / 1000, ms % 1000, (unsigned long long)verified,
	         (unsigned long long)writes, (unsigned long long)drops);
	say_fd(1, line);
	return 0;
}
