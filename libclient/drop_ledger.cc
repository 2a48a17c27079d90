#include "libclient/drop_ledger.h"

#include <algorithm>

#include "daemon/common/clock.h"

namespace memfed::client
{

uint64_t DropLedger::begin(uint64_t addr, uint64_t length)
{
	std::unique_lock<std::mutex> lk(mu_);
	cv_.wait(lk, [this] { return !remapping_; });
	inflight_.push_back({addr, length});
	return attaches_;
}

void DropLedger::end(uint64_t addr, uint64_t length, uint64_t token)
{
	uint64_t now = mono_ns();
	std::lock_guard<std::mutex> lk(mu_);
	auto it = std::find(inflight_.begin(), inflight_.end(), Span{addr, length});
	if (it != inflight_.end())
		inflight_.erase(it);
	// A pager attached meanwhile may have read the event before its map.
	if (attaches_ != token || remapping_) {
		unsent_.push_back({addr, length});
	} else {
		// Past the reserve the vector grows here, not on the evictor.
		if (unsettled_.size() + 2 > unsettled_.capacity())
			unsettled_.reserve(std::max(reserve_, unsettled_.capacity() * 2));
		unsettled_.push_back({addr, length, ++seq_, now});
	}
	cv_.notify_all();
}

void DropLedger::remap_begin()
{
	std::lock_guard<std::mutex> lk(mu_);
	attaches_++;
	remapping_ = true;
}

void DropLedger::remap_end()
{
	std::lock_guard<std::mutex> lk(mu_);
	remapping_ = false;
	cv_.notify_all();
}

bool DropLedger::wait_inflight(std::chrono::milliseconds timeout)
{
	std::unique_lock<std::mutex> lk(mu_);
	return cv_.wait_for(lk, timeout, [this] { return inflight_.empty(); });
}

std::vector<Span> DropLedger::to_report() const
{
	std::lock_guard<std::mutex> lk(mu_);
	std::vector<Span> out = unsent_;
	for (const Unsettled &u : unsettled_)
		out.push_back({u.addr, u.length});
	return out;
}

void DropLedger::reported()
{
	std::lock_guard<std::mutex> lk(mu_);
	unsent_.clear();
	unsettled_.clear(); // keeps the reserved capacity
}

std::optional<std::pair<std::vector<Span>, uint64_t>> DropLedger::settle_ranges() const
{
	std::vector<Span> ranges;
	uint64_t upto;
	{
		std::lock_guard<std::mutex> lk(mu_);
		if (remapping_)
			return std::nullopt;
		for (const Unsettled &u : unsettled_)
			ranges.push_back({u.addr, u.length});
		upto = seq_;
	}
	if (ranges.empty())
		return std::make_pair(std::move(ranges), upto);
	std::sort(ranges.begin(), ranges.end());
	size_t k = 0;
	for (size_t i = 1; i < ranges.size(); i++) {
		if (ranges[i].first <= ranges[k].first + ranges[k].second)
			ranges[k].second = std::max(ranges[k].first + ranges[k].second,
			                            ranges[i].first + ranges[i].second) -
			                   ranges[k].first;
		else
			ranges[++k] = ranges[i];
	}
	ranges.resize(k + 1);
	return std::make_pair(std::move(ranges), upto);
}

bool DropLedger::settled(uint64_t upto)
{
	std::lock_guard<std::mutex> lk(mu_);
	unsettled_.erase(std::remove_if(unsettled_.begin(), unsettled_.end(),
	                                [upto](const Unsettled &u) { return u.seq <= upto; }),
	                 unsettled_.end());
	return !unsettled_.empty();
}

void DropLedger::forget(uint64_t addr, uint64_t length, uint64_t before_ns)
{
	std::lock_guard<std::mutex> lk(mu_);
	uint64_t end = addr + length;
	for (size_t i = 0; i < unsettled_.size();) {
		auto [sa, sn, seq, at] = unsettled_[i];
		uint64_t se = sa + sn;
		if (se <= addr || sa >= end || at >= before_ns) {
			i++;
			continue;
		}
		bool left = sa<addr, right = se> end;
		if (left && right) {
			if (unsettled_.size() < unsettled_.capacity()) {
				unsettled_[i] = {sa, addr - sa, seq, at};
				unsettled_.push_back({end, se - end, seq, at});
			}
			i++;
		} else if (left) {
			unsettled_[i++] = {sa, addr - sa, seq, at};
		} else if (right) {
			unsettled_[i++] = {end, se - end, seq, at};
		} else {
			unsettled_[i] = unsettled_.back();
			unsettled_.pop_back();
		}
	}
}

void DropLedger::unlock_in_child()
{
	inflight_.clear();
	mu_.unlock();
}

} // namespace memfed::client
