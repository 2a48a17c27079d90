// pin: the pager benchmarks' thread placement.
#pragma once

#include <sched.h>

namespace memfed::bench
{

// Pins the calling thread to `cpu`; cpu < 0 (--cpu any): no pinning, the
// scheduler places the thread.
inline void pin(int cpu)
{
	if (cpu < 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

} // namespace memfed::bench
