// memfed-bench-umap-scan: the umap side of `make bench BENCH=stream`. Maps a
// file holding memfed-bench-pager's pattern through LLNL umap (its page size
// and buffer from UMAP_PAGESIZE and UMAP_BUFSIZE, as the script sets them)
// and reads one word of every 4 KiB page from start to end, checking each,
// exactly as memfed-bench-pager's scan does; prints "GBPS <x>".
//
// Not built by CMake (memfed does not depend on umap): scripts/bench_stream.sh
// compiles it against the umap install it finds (MEMFED_UMAP_DIR).
//
// Usage: memfed-bench-umap-scan FILE   (the file exists and holds the pattern)
#include <fcntl.h>
#include <sys/stat.h>
#include <umap/umap.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace
{
constexpr uint64_t kPage = 4096;
uint64_t word_of(uint64_t p)
{
	return p * 0x9E3779B97F4A7C15ull + 1;
}
} // namespace

int main(int argc, char **argv)
{
	if (argc != 2) {
		std::fprintf(stderr, "usage: memfed-bench-umap-scan FILE\n");
		return 2;
	}
	int fd = open(argv[1], O_RDWR);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		std::perror(argv[1]);
		return 1;
	}
	uint64_t len = uint64_t(st.st_size), pages = len / kPage;
	void *p = umap(nullptr, len, PROT_READ | PROT_WRITE, UMAP_PRIVATE, fd, 0);
	if (p == UMAP_FAILED) {
		std::perror("umap");
		return 1;
	}
	const uint8_t *base = static_cast<const uint8_t *>(p);
	auto t0 = std::chrono::steady_clock::now();
	uint64_t bad = 0;
	for (uint64_t q = 0; q < pages; q++)
		bad += *reinterpret_cast<const volatile uint64_t *>(base + q * kPage) != word_of(q);
	double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
	if (bad) {
		std::fprintf(stderr, "umap scan: %lu pages with wrong data\n", (unsigned long)bad);
		return 1;
	}
	std::printf("GBPS %.3f  (umap page %lu B, buffer %lu pages, %lu fillers, %lu evictors)\n",
	            double(len) / t / 1e9, (unsigned long)umapcfg_get_umap_page_size(),
	            (unsigned long)umapcfg_get_max_pages_in_buffer(),
	            (unsigned long)umapcfg_get_num_fillers(),
	            (unsigned long)umapcfg_get_num_evictors());
	uunmap(p, len);
	close(fd);
	return 0;
}
