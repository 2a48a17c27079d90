#include "libclient/evictor_pin.h"

#include <cerrno>
#include <cstring>

#include "daemon/common/log.h"
#include "daemon/pager/map_protocol.h"

namespace memfed::client
{

void EvictorPin::follow(uint32_t flags)
{
	if (!(flags & pager::kMoveOnCpu)) {
		if (cpu_ >= 0 && sched_setaffinity(0, sizeof(saved_), &saved_) != 0)
			LOG_DEBUG("libmemfed", "evictor: restoring its CPUs: %s", strerror(errno));
		cpu_ = -1;
		return;
	}
	const int cpu = int(flags >> pager::kMoveCpuShift);
	if (cpu == cpu_)
		return;
	cpu_set_t before;
	if (cpu_ >= 0)
		before = saved_;
	else if (sched_getaffinity(0, sizeof(before), &before) != 0)
		return;
	// A CPU the program does not run on (its cpuset or taskset) is not
	// the program's: stay where it is.
	if (cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &before))
		return;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof(one), &one) != 0) {
		LOG_DEBUG("libmemfed", "evictor: pinning itself to cpu %d: %s", cpu,
		          strerror(errno));
		return;
	}
	saved_ = before;
	cpu_ = cpu;
}

} // namespace memfed::client
