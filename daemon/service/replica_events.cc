// ReplicaEvents: recent copy state changes (replica_events.h).
#include "daemon/service/replica_events.h"

#include "daemon/service/replica_set.h"

namespace memfed
{

void ReplicaEvents::push(ReplicaEvent e)
{
	std::lock_guard<std::mutex> lk(mu_);
	e.seq = ++last_;
	e.unix_ms = unix_ms();
	events_.push_back(std::move(e));
	while (events_.size() > kKeep)
		events_.pop_front();
}

std::vector<ReplicaEvent> ReplicaEvents::after(uint64_t after, uint64_t *next) const
{
	std::lock_guard<std::mutex> lk(mu_);
	std::vector<ReplicaEvent> out;
	*next = last_;
	if (after == UINT64_MAX)
		return out;
	if (after > last_)
		after = 0; // numbered by an earlier memfedd: all of this one's
	for (const auto &e : events_)
		if (e.seq > after)
			out.push_back(e);
	return out;
}

} // namespace memfed
