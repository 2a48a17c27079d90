// pagemap_scan: the PAGEMAP_SCAN ioctl of /proc/PID/pagemap (Linux 6.7+) as
// Debian 12's 6.1 headers lack it, and the write scan built on it.
//
// PAGEMAP_SCAN walks a range of a process's page tables and reports runs of
// pages by category. With a userfaultfd registered MODE_WP and created with
// UFFD_FEATURE_WP_ASYNC, a write to a write-protected page is resolved by the
// kernel without a message and clears the page's uffd-wp bit; the scan's
// PAGE_IS_WRITTEN is that bit cleared, and PM_SCAN_WP_MATCHING sets it again on
// the pages it reports, under the page-table lock, so a write after the walk
// has passed a page marks it written for the next scan (fs/proc/task_mmu.c,
// pagemap_scan_pmd_entry). It works on another process's pagemap: the
// pager scans its clients' (daemon/pager/uffd_move_test.cc, "WP_ASYNC").
//
// Thread-safety: pure functions of the process's page tables at the time.
#pragma once

#include <linux/fs.h>

#include <cstdint>
#include <functional>

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

namespace memfed::pager
{

// Calls fn(start, end) for each run of present (or swapped) pages in
// [start, end) of the process whose pagemap is `pagemap_fd` that were written
// since they were last write-protected; with `reprotect` the same walk
// write-protects them again. Empty entries are neither reported nor touched.
// The range must be registered MODE_WP on a uffd with WP_ASYNC. 0, or
// -errno: -ENOTTY/-EINVAL on a kernel without PAGEMAP_SCAN, -EPERM when a
// part of the range is not under async write-protection.
int for_each_written_run(int pagemap_fd, uint64_t start, uint64_t end, bool reprotect,
                         const std::function<void(uint64_t, uint64_t)> &fn);

} // namespace memfed::pager
