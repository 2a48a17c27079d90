// ReplicaKeeper: a thread that keeps every replicated region's copies
// compared and caught up (replica_keeper.h).
#include "daemon/service/replica_keeper.h"

#include <chrono>

#include "daemon/common/log.h"
#include "daemon/service/replicated_channel.h"

namespace memfed
{

namespace
{
constexpr int kTickMs = 250;
constexpr auto kMaintainEvery = std::chrono::milliseconds(1000);
} // namespace

ReplicaKeeper::ReplicaKeeper(Federation *fed, std::function<void()> sweep)
    : fed_(fed), sweep_(std::move(sweep))
{
	auto loop = EventLoop::create(256);
	if (!loop) {
		LOG_ERROR("replica", "no event loop for the replica keeper: %s; lost copies are "
		                     "caught up only while a program maps their region",
		          loop.status().to_string().c_str());
		return;
	}
	loop_ = std::move(*loop);
	thread_ = std::thread([this] { run(); });
}

ReplicaKeeper::~ReplicaKeeper()
{
	stop_.store(true);
	if (loop_)
		loop_->stop();
	if (thread_.joinable())
		thread_.join();
}

void ReplicaKeeper::watch(std::shared_ptr<ReplicaSet> set)
{
	std::lock_guard<std::mutex> lk(mu_);
	added_.push_back(std::move(set));
}

void ReplicaKeeper::forget(uint64_t group)
{
	std::lock_guard<std::mutex> lk(mu_);
	removed_.push_back(group);
}

void ReplicaKeeper::run()
{
	auto next = std::chrono::steady_clock::now();
	while (!stop_.load()) {
		loop_->run_once(kTickMs);
		auto now = std::chrono::steady_clock::now();
		if (now < next)
			continue;
		next = now + kMaintainEvery;
		std::vector<std::shared_ptr<ReplicaSet>> added;
		std::vector<uint64_t> removed;
		{
			std::lock_guard<std::mutex> lk(mu_);
			added.swap(added_);
			removed.swap(removed_);
		}
		for (uint64_t g : removed)
			channels_.erase(g);
		for (auto &set : added) {
			auto &ch = channels_[set->group()];
			if (!ch)
				ch = std::make_unique<ReplicatedChannel>(loop_.get(), set, fed_);
		}
		for (auto &[g, ch] : channels_)
			ch->maintain();
		if (sweep_)
			sweep_();
	}
	// Channels complete what they have in flight as they go, on this thread.
	channels_.clear();
}

} // namespace memfed
