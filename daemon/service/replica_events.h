// ReplicaEvents: the recent changes of replicated regions' copies on this
// node (a copy lost, catching up, in sync, replaced by a new copy elsewhere,
// or dropped because another node replaced it), numbered, for `memfedctl
// watch --replicas` to follow (control op "replica.events").
//
// A ring of the last kKeep events; a reader that falls further behind than
// that misses the oldest ones. Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/common/ids.h"

namespace memfed
{

struct ReplicaEvent {
	uint64_t seq = 0; // from 1, strictly increasing
	uint64_t unix_ms = 0;
	std::string region;
	ModuleId module;   // the copy's module
	std::string event; // "lost", "catching up", "in sync", "replaced", "dropped"
	std::string was;   // its state before ("" for replaced, dropped)
	std::string why;
	unsigned in_sync = 0; // copies in sync after the change
	unsigned wanted = 0;
};

class ReplicaEvents
{
public:
	static constexpr size_t kKeep = 1024;

	// Numbers and keeps `e` (its seq and unix_ms are set here).
	void push(ReplicaEvent e);
	// The events numbered above `after` (UINT64_MAX: none), oldest first;
	// *next is the number to pass as `after` next time.
	std::vector<ReplicaEvent> after(uint64_t after, uint64_t *next) const;

private:
	mutable std::mutex mu_;
	std::deque<ReplicaEvent> events_; // guarded by mu_
	uint64_t last_ = 0;               // guarded by mu_
};

} // namespace memfed
