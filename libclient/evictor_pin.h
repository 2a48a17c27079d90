// EvictorPin: the evictor thread follows its pager thread's pin.
//
// When the pager pins a program's faulting thread beside itself on one CPU
// (daemon/pager/colocation.cc), its MoveRequests name that CPU
// (map_protocol.h, kMoveOnCpu). The evictor then runs there too: a MOVE,
// and the MADV_DONTNEED that empties staging slots, change the program's
// page tables, and done on another CPU while the program runs they cost a
// TLB-flush interrupt to the program's CPU each; done on its CPU, none.
// When the requests stop naming a CPU, the thread gets back the CPUs it
// had. A thread pins itself: no privilege is needed.
//
// Thread-safety: the evictor thread only.
#pragma once

#include <sched.h>

#include <cstdint>

namespace memfed::client
{

class EvictorPin
{
public:
	// Applies a MoveRequest's flags to the calling thread.
	void follow(uint32_t flags);
	// The CPU the thread is pinned to, or -1.
	int cpu() const { return cpu_; }

private:
	int cpu_ = -1;
	cpu_set_t saved_{}; // the thread's CPUs before the pin, while cpu_ >= 0
};

} // namespace memfed::client
