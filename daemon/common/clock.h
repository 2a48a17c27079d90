// The monotonic clock the daemon measures intervals with (timeouts,
// retries, ages): CLOCK_MONOTONIC, which never jumps with the wall clock.
#pragma once

#include <cstdint>
#include <ctime>

namespace memfed
{

inline uint64_t mono_ns()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

inline uint64_t mono_ms() { return mono_ns() / 1'000'000u; }

} // namespace memfed
