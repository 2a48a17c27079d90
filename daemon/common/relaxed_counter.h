// RelaxedCounter: a statistics counter bumped by one thread and read by
// others (memfedctl stats, metrics) without a lock. Relaxed atomics: a
// reader sees every count eventually, in no particular order with other
// memory, which is all a counter promises. It copies (a snapshot of the
// value) so structs of counters stay plain to pass around.
#pragma once

#include <atomic>
#include <cstdint>

namespace memfed
{

class RelaxedCounter
{
public:
	RelaxedCounter(uint64_t v = 0) : v_(v) {}
	RelaxedCounter(const RelaxedCounter &o) : v_(o.load()) {}
	RelaxedCounter &operator=(const RelaxedCounter &o)
	{
		v_.store(o.load(), std::memory_order_relaxed);
		return *this;
	}

	operator uint64_t() const { return load(); }
	uint64_t load() const { return v_.load(std::memory_order_relaxed); }
	RelaxedCounter &operator+=(uint64_t n)
	{
		v_.fetch_add(n, std::memory_order_relaxed);
		return *this;
	}
	RelaxedCounter &operator++()
	{
		v_.fetch_add(1, std::memory_order_relaxed);
		return *this;
	}
	uint64_t operator++(int) { return v_.fetch_add(1, std::memory_order_relaxed); }

private:
	std::atomic<uint64_t> v_;
};

} // namespace memfed
