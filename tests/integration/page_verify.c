// memfed-test-page-verify MIB SECONDS THREADS SEED DROP: a program for
// `memfedctl run` that checks every page of its remote heap against what it
// last wrote there, in the manner of the kernel's userfaultfd stress test.
//
// Its working set (MIB MiB, one anonymous private mmap, which the preload
// serves from the remote heap) is split into one contiguous block of pages
// per thread; a thread alone writes, drops and reads its block, so no page
// needs a lock. Every page holds the pattern of (page index, version):
// version 0 is all zeroes (never written, or dropped since), version v > 0
// has in each 8-byte word w the bijective mix of (page, v, w), so that any
// word read back names the page and version it was written for. For SECONDS
// each thread loops over: writing a random page (the next version; half of
// them checked first, which makes the write a write-protect fault on a page
// just fetched rather than a missing-page write fault), checking a random
// page, with DROP=1 now and then an madvise(MADV_DONTNEED) of a random run of
// 1 to 64 of its pages (version 0 after), and now and then a sequential sweep
// that writes or checks up to 1024 pages in order (eviction of streams and
// prefetch). At the end every thread checks its whole block, and the program
// prints "verified N pages, M writes, D drops, 0 mismatches" and exits 0.
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

#define PAGE 4096u
#define WORDS (PAGE / 8u)
// The key of a word packs (page, version, word): 24 + 31 + 9 bits.
#define MAX_PAGES (1u << 24)
#define MAX_VERSION ((1u << 31) - 1u)
#define MAX_THREADS 64u
#define MAX_RUN 64u
#define SWEEP_MAX 1024u

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
};

struct worker {
	pthread_t tid;
	unsigned index;
	uint32_t first, count; // its block of pages
	uint64_t rng;
	uint64_t verified, writes, drops, dropped_pages, sweeps;
};

static unsigned char *g_base;
static uint32_t g_pages;
static struct shadow *g_shadow;
static int g_drop;
static struct timespec g_start;
static atomic_int g_stop;
static atomic_int g_failed;
static uint64_t g_inv1, g_inv2;

static const uint64_t kMul1 = 0xbf58476d1ce4e5b9ull, kMul2 = 0x94d049bb133111ebull;

// ---- output without stdio ----

static void say_fd(int fd, const char *msg)
{
	size_t n = strlen(msg);
	while (n > 0) {
		ssize_t w = write(fd, msg, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		msg += w;
		n -= (size_t)w;
	}
}

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
	return (uint64_t *)(g_base + (size_t)page * PAGE);
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

static int describe(char *out, size_t n, const struct finding *f, const uint64_t *copy,
                    uint32_t page, uint32_t expected)
{
	uint32_t w = f->first_diff;
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
		        f->version < expected ? "OLDER" : "NEWER", f->words_of_it, WORDS,
		        f->zero_words, w * 8);
	case K_OTHER_PAGE:
		return snprintf(out, n,
		                "%s the pattern of ANOTHER page %u, version %u (%u of %u words are "
		                "of it, %u zero words), first differing word at +0x%x",
		                f->words_of_it == WORDS ? "all of" : "partly", f->page, f->version,
		                f->words_of_it, WORDS, f->zero_words, w * 8);
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
	describe(found, sizeof(found), &f, copy, page, s.version);
	snprintf(line, sizeof(line),
	         "page-verify: MISMATCH at %p, page %u, thread %u, %u.%03u s after the start "
	         "(%02ld:%02ld:%02ld.%03ld UTC), %s: expected version %u, found %s\n",
	         (void *)page_at(page), page, me->index, now_ms / 1000, now_ms % 1000, day_s / 3600,
	         day_s / 60 % 60, day_s % 60, wall.tv_nsec / 1000000, what, s.version, found);
	say_fd(2, line);

	snprintf(line, sizeof(line),
	         "page-verify: detail: page %u last written (version %u) at %u.%03u s, last "
	         "dropped at %s%u.%03u s (from version %u); its words +0..+0x18: "
	         "%016llx %016llx %016llx %016llx\n",
	         page, s.version ? s.version : s.version_before_drop, s.written_ms / 1000,
	         s.written_ms % 1000, s.dropped_ms ? "" : "(never) ", s.dropped_ms / 1000,
	         s.dropped_ms % 1000, s.version_before_drop, (unsigned long long)copy[0],
	         (unsigned long long)copy[1], (unsigned long long)copy[2],
	         (unsigned long long)copy[3]);
	say_fd(2, line);

	// Read again: a page that is right now was read wrong once (a fault
	// served wrong bytes and the page was replaced since), one still wrong
	// holds them.
	uint64_t again[WORDS];
	copy_page(again, page);
	struct finding g = judge(again, page, s.version);
	describe(found, sizeof(found), &g, again, page, s.version);
	snprintf(line, sizeof(line), "page-verify: detail: read again, page %u holds %s%s\n", page,
	         found,
	         memcmp(copy, again, sizeof(copy)) ? "" : " (the same bytes as the first read)");
	say_fd(2, line);

	// Is it one page, or a run (a drop, an eviction batch)? The others of
	// this thread's block, which no other thread touches.
	uint32_t bad = 0, zero = 0, shown = 0;
	char list[400];
	size_t used = 0;
	list[0] = 0;
	for (uint32_t p = me->first; p < me->first + me->count; p++) {
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
	         "page-verify: detail: %u other pages of thread %u's %u (pages %u..%u) mismatch, "
	         "%u of them all zero:%s\n",
	         bad, me->index, me->count, me->first, me->first + me->count - 1, zero, list);
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
	uint32_t now = ms_since_start();
	for (uint32_t p = page; p < page + n; p++) {
		struct shadow *s = &g_shadow[p];
		if (s->version)
			s->version_before_drop = s->version;
		s->version = 0;
		s->dropped_ms = now ? now : 1;
	}
	me->drops++;
	me->dropped_pages += n;
}

static void *work(void *arg)
{
	struct worker *me = arg;
	while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		uint64_t r = next_random(&me->rng);
		uint32_t page = me->first + (uint32_t)((r >> 32) % me->count);
		uint32_t op = (uint32_t)(r % 1000);
		if (op < 400) {
			if (op < 200)
				check(me, page, "reading it before a write");
			write_next(me, page);
		} else if (op < 980) {
			check(me, page, "reading a random page");
		} else if (op < 995) {
			if (!g_drop)
				continue;
			uint32_t n = 1 + (uint32_t)((r >> 16) % MAX_RUN);
			if (n > me->first + me->count - page)
				n = me->first + me->count - page;
			drop_run(me, page, n);
		} else if (op < 997) {
			uint32_t n = 64 + (uint32_t)((r >> 16) % (SWEEP_MAX - 63));
			if (n > me->first + me->count - page)
				n = me->first + me->count - page;
			int writing = (r >> 12) & 1;
			for (uint32_t p = page; p < page + n; p++) {
				if (writing)
					write_next(me, p);
				else
					check(me, p, "a sequential read sweep");
			}
			me->sweeps++;
		} else {
			// Right after a write elsewhere, the page written last
			// but one stays likely resident; this reads a neighbour
			// of a random page, where prefetch may have been.
			uint32_t near = page + 1 < me->first + me->count ? page + 1 : me->first;
			check(me, near, "reading a neighbour");
		}
	}
	for (uint32_t p = me->first; p < me->first + me->count; p++)
		check(me, p, "the final read of every page");
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
		       "  DROP: 1 to MADV_DONTNEED runs of pages, 0 not to\n");
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

	// Private anonymous: the preload serves it from the remote heap.
	g_base = mmap(NULL, (size_t)g_pages * PAGE, PROT_READ | PROT_WRITE,
	              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g_shadow = mmap(NULL, (size_t)g_pages * sizeof(*g_shadow), PROT_READ | PROT_WRITE,
	                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (g_base == MAP_FAILED || g_shadow == MAP_FAILED) {
		say_fd(2, "page-verify: mmap failed\n");
		return 1;
	}
	int remote = uffd_registered(g_base), shadow_remote = uffd_registered(g_shadow);
	char line[400];
	snprintf(line, sizeof(line),
	         "page-verify: %llu MiB at %p (%u pages) %s, shadow %s; %llu threads for %llu s, "
	         "seed %llu, drops %s\n",
	         mib, (void *)g_base, g_pages,
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
		w->first = (uint32_t)((uint64_t)g_pages * i / threads);
		w->count = (uint32_t)((uint64_t)g_pages * (i + 1) / threads) - w->first;
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
	uint64_t verified = 0, writes = 0, drops = 0, dropped = 0, sweeps = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(workers[i].tid, NULL);
		verified += workers[i].verified;
		writes += workers[i].writes;
		drops += workers[i].drops;
		dropped += workers[i].dropped_pages;
		sweeps += workers[i].sweeps;
	}
	uint32_t ms = ms_since_start();
	snprintf(line, sizeof(line),
	         "page-verify: %llu dropped pages, %llu sweeps in %u.%03u s\n"
	         "verified %llu pages, %llu writes, %llu drops, 0 mismatches\n",
	         (unsigned long long)dropped, (unsigned long long)sweeps, ms / 1000, ms % 1000,
	         (unsigned long long)verified, (unsigned long long)writes,
	         (unsigned long long)drops);
	say_fd(1, line);
	return 0;
}
