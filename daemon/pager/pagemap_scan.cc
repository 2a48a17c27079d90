#include "daemon/pager/pagemap_scan.h"

#include <sys/ioctl.h>

#include <cerrno>

namespace memfed::pager
{

int for_each_written_run(int pagemap_fd, uint64_t start, uint64_t end, bool reprotect,
                         const std::function<void(uint64_t, uint64_t)> &fn)
{
	page_region vec[64];
	uint64_t at = start;
	while (at < end) {
		pm_scan_arg arg{};
		arg.size = sizeof(arg);
		arg.flags = PM_SCAN_CHECK_WPASYNC | (reprotect ? PM_SCAN_WP_MATCHING : 0);
		arg.start = at;
		arg.end = end;
		arg.vec = reinterpret_cast<uint64_t>(vec);
		arg.vec_len = sizeof(vec) / sizeof(vec[0]);
		// Present (or swapped) pages only: WP_MATCHING on an empty entry
		// would plant a uffd-wp marker there, which UFFDIO_MOVE refuses
		// as a destination (EEXIST) and as a source (EFAULT).
		arg.category_mask = PAGE_IS_WRITTEN;
		arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
		arg.return_mask = PAGE_IS_WRITTEN;
		long n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		for (long k = 0; k < n; k++)
			fn(vec[k].start, vec[k].end);
		if (arg.walk_end <= at)
			return -EIO; // no progress: do not loop forever
		at = arg.walk_end;
	}
	return 0;
}

} // namespace memfed::pager
