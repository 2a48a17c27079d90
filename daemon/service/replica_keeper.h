// ReplicaKeeper: the thread that looks after the copies of every replicated
// region this node has met, whether or not a program maps it.
//
// It holds one ReplicatedChannel per replica set on an EventLoop of its own
// and, once a second, lets each retry its lost copies and compare and copy
// the ones catching up (replicated_channel.h). The pager's channels do the
// same while they serve faults; ReplicaSet::claim_catch_up keeps one
// channel at a time at it, so the two never copy the same pages twice over.
//
// Thread-safety: watch() and forget() may be called from any thread; all
// else runs on the keeper's own thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/service/federation.h"
#include "daemon/service/replica_set.h"
#include "daemon/transport/event_loop.h"

namespace memfed
{

class ReplicatedChannel;

class ReplicaKeeper
{
public:
	// `sweep` runs on the keeper's thread once a second too (the
	// federation's deletes of copies that were unreachable).
	ReplicaKeeper(Federation *fed, std::function<void()> sweep);
	~ReplicaKeeper(); // stops the thread; channels go with it

	// Starts looking after `set` (again: no change).
	void watch(std::shared_ptr<ReplicaSet> set);
	// Stops looking after replica group `group` (its region was deleted).
	void forget(uint64_t group);

private:
	void run();

	Federation *fed_;
	std::function<void()> sweep_;
	std::unique_ptr<EventLoop> loop_;
	std::mutex mu_;
	std::vector<std::shared_ptr<ReplicaSet>> added_; // guarded by mu_
	std::vector<uint64_t> removed_;			 // guarded by mu_
	std::map<uint64_t, std::unique_ptr<ReplicatedChannel>> channels_; // keeper thread only
	std::atomic<bool> stop_{false};
	std::thread thread_;
};

} // namespace memfed
