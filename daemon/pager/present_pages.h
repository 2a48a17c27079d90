// present_pages: which pages of a range of another process's memory it holds
// (present in RAM or swapped out), for a mapping the pager takes over from a
// process that already touched it (a restarted daemon, memory touched before
// the map request).
//
// A heap mapping is tens of GiB (memfedctl run's --heap-size) of which a
// process holds a part: reading /proc/PID/pagemap's 8 bytes per page of 64 GiB
// takes a few hundred ms. PAGEMAP_SCAN (Linux 6.7+) answers in runs and skips
// unpopulated page tables; older kernels (the 6.1 guest) read the pagemap in
// chunks. Debian 12's headers (6.1) lack the ioctl: defined here.
//
// Thread-safety: a pure function of the process's memory at the time.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>

namespace memfed::pager
{

// Calls fn(i) for each page i in [0, npages) of the range at `addr` in
// process `pid` that is present or swapped, in order. False if the process's
// pagemap cannot be read (it is gone, or not ours to read): nothing is known.
bool for_each_present_page(pid_t pid, uint64_t addr, uint64_t npages,
                           const std::function<void(uint64_t)> &fn);

} // namespace memfed::pager
