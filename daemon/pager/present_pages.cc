#include "daemon/pager/present_pages.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <vector>

#include "daemon/pager/pagemap_scan.h"
#include "daemon/pager/uffd.h"

namespace memfed::pager
{

namespace
{

// PAGEMAP_SCAN: 1 done, 0 not supported by this kernel, -1 failed.
int scan(int fd, uint64_t addr, uint64_t npages, const std::function<void(uint64_t)> &fn)
{
	std::vector<page_region> vec(512);
	const uint64_t end = addr + npages * kPageSize;
	uint64_t at = addr;
	while (at < end) {
		pm_scan_arg arg{};
		arg.size = sizeof(arg);
		arg.start = at;
		arg.end = end;
		arg.vec = reinterpret_cast<uint64_t>(vec.data());
		arg.vec_len = vec.size();
		arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		arg.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		long n = ioctl(fd, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return errno == ENOTTY || errno == EINVAL ? 0 : -1;
		for (long k = 0; k < n; k++)
			for (uint64_t a = vec[size_t(k)].start; a < vec[size_t(k)].end;
			     a += kPageSize)
				fn((a - addr) / kPageSize);
		if (arg.walk_end <= at)
			return -1; // no progress: do not loop forever
		at = arg.walk_end;
	}
	return 1;
}

} // namespace

bool for_each_present_page(pid_t pid, uint64_t addr, uint64_t npages,
                           const std::function<void(uint64_t)> &fn)
{
	char path[64];
	std::snprintf(path, sizeof(path), "/proc/%d/pagemap", int(pid));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	int scanned = scan(fd, addr, npages, fn);
	if (scanned != 0) {
		close(fd);
		return scanned > 0;
	}
	std::vector<uint64_t> ent(std::min<uint64_t>(npages, 4096));
	for (uint64_t base = 0; base < npages; base += ent.size()) {
		uint64_t n = std::min<uint64_t>(ent.size(), npages - base);
		off_t off = off_t((addr / kPageSize + base) * 8);
		if (pread(fd, ent.data(), n * 8, off) != ssize_t(n) * 8)
			break;
		for (uint64_t k = 0; k < n; k++)
			if (ent[k] & ((1ull << 63) | (1ull << 62))) // present, swapped
				fn(base + k);
	}
	close(fd);
	return true;
}

} // namespace memfed::pager
