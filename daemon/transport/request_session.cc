// RequestSessions: who holds which write session (request_session.h).
#include "daemon/transport/request_session.h"

#include <sys/random.h>

#include <cstring>
#include <random>

namespace memfed
{
namespace
{
uint64_t random_session_id()
{
	uint64_t id = 0;
	while (id == 0) {
		if (getrandom(&id, sizeof(id), 0) != ssize_t(sizeof(id))) {
			std::random_device rd;
			id = (uint64_t(rd()) << 32) ^ rd();
		}
	}
	return id;
}
} // namespace

RequestSessions &RequestSessions::process()
{
	static RequestSessions r;
	return r;
}

std::shared_ptr<RequestSession> RequestSessions::acquire(ModuleId module)
{
	MutexLock lk(&mu_);
	auto &list = by_module_[module.value];
	for (auto &s : list) {
		bool free = false;
		if (s->held_.compare_exchange_strong(free, true, std::memory_order_acq_rel))
			return s;
	}
	auto s = std::make_shared<RequestSession>(random_session_id());
	s->held_.store(true, std::memory_order_relaxed);
	list.push_back(s);
	return s;
}

} // namespace memfed
