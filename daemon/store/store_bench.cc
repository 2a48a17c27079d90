// memfed-bench-store: ModuleStore page writes and reads against the floor of
// the same file system, measured in the same run.
//
// write baseline: pwrite of the same bytes + fdatasync (one durable write, the
//                 least any crash-safe store on this file can do per request).
// read baseline:  memcpy from a mapped file page.
// memfed:         write_pages / read_pages of 1 and 16 pages on a pool file in
//                 the same directory. Prints p50/p99 and memfed/baseline ratios.
//
// usage: memfed-bench-store [--dir DIR] [--iters N]
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "daemon/common/log.h"
#include "daemon/store/pool.h"

using namespace memfed;
using Clock = std::chrono::steady_clock;

namespace
{

struct Stats {
	double p50_us, p99_us;
};

Stats measure(int iters, const std::function<void(int)> &op)
{
	std::vector<double> us(iters);
	for (int i = 0; i < iters; i++) {
		auto t0 = Clock::now();
		op(i);
		us[i] = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
	}
	std::sort(us.begin(), us.end());
	return {us[iters / 2], us[std::min(iters - 1, iters * 99 / 100)]};
}

void row(const char *what, uint32_t pages, Stats s, Stats base)
{
	std::printf("%-22s %3u pages  p50 %9.1f us  p99 %9.1f us  %7.1f us/page  x%.2f of baseline "
	            "p50\n",
	            what, pages, s.p50_us, s.p99_us, s.p50_us / pages, s.p50_us / base.p50_us);
}

} // namespace

int main(int argc, char **argv)
{
	std::string dir = "/tmp";
	int iters = 200;
	for (int i = 1; i + 1 < argc; i += 2) {
		std::string a = argv[i];
		if (a == "--dir")
			dir = argv[i + 1];
		else if (a == "--iters")
			iters = std::max(10, std::atoi(argv[i + 1]));
		else {
			std::fprintf(stderr, "usage: memfed-bench-store [--dir DIR] [--iters N]\n");
			return 2;
		}
	}
	set_log_level(LogLevel::kWarn);
	const uint32_t kMax = 16;
	std::string raw_path = dir + "/memfed-bench-store.raw",
	            pool_path = dir + "/memfed-bench-store.pool";
	std::vector<uint8_t> buf(kMax * store::kPageSize, 0x5a);

	int fd = open(raw_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 64 << 20) != 0) {
		std::perror(raw_path.c_str());
		return 1;
	}
	auto *raw_map = static_cast<uint8_t *>(
	        mmap(nullptr, 64 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
	memset(raw_map, 1, 64 << 20);

	Status st = ModuleStore::format(PoolOptions{pool_path, 128 << 20, {}});
	auto s = ModuleStore::open(pool_path, 0);
	if (!st || !s) {
		std::fprintf(stderr, "pool: %s\n", (st ? s.status() : st).to_string().c_str());
		return 1;
	}
	auto region = (*s)->create_region("bench", 64 << 20, 0, 0600);
	const uint64_t fa = region->fa_offset, id = region->id;
	std::printf("dir %s, %d iterations per row\n", dir.c_str(), iters);

	for (uint32_t pages : {1u, kMax}) {
		uint64_t bytes = uint64_t{pages} * store::kPageSize;
		Stats base = measure(iters, [&](int i) {
			off_t off = static_cast<off_t>((uint64_t(i) * bytes) % (32 << 20));
			if (pwrite(fd, buf.data(), bytes, off) != static_cast<ssize_t>(bytes) ||
			    fdatasync(fd) != 0)
				std::perror("baseline write");
		});
		Stats ours = measure(iters, [&](int i) {
			uint64_t off = (uint64_t(i) * bytes) % (32 << 20);
			Status w = (*s)->write_pages(static_cast<uint32_t>(id), fa + off, pages,
			                             buf.data());
			if (!w)
				std::fprintf(stderr, "write_pages: %s\n", w.to_string().c_str());
		});
		row("pwrite+fdatasync", pages, base, base);
		row("write_pages", pages, ours, base);
	}
	for (uint32_t pages : {1u, kMax}) {
		uint64_t bytes = uint64_t{pages} * store::kPageSize;
		Stats base = measure(iters * 50, [&](int i) {
			memcpy(buf.data(), raw_map + (uint64_t(i) * bytes) % (32 << 20), bytes);
		});
		Stats ours = measure(iters * 50, [&](int i) {
			uint64_t off = (uint64_t(i) * bytes) % (32 << 20);
			Status r = (*s)->read_pages(static_cast<uint32_t>(id), fa + off, pages,
			                            buf.data());
			if (!r)
				std::fprintf(stderr, "read_pages: %s\n", r.to_string().c_str());
		});
		row("memcpy from mapping", pages, base, base);
		row("read_pages", pages, ours, base);
	}
	s->reset();
	munmap(raw_map, 64 << 20);
	close(fd);
	unlink(raw_path.c_str());
	unlink(pool_path.c_str());
	return 0;
}
