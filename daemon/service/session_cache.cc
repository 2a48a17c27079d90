// SessionCache: the per-session window of sequenced writes (session_cache.h).
#include "daemon/service/session_cache.h"

#include <cstring>

namespace memfed
{

size_t SessionCache::KeyHash::operator()(const Key &k) const
{
	uint64_t h;
	std::memcpy(&h, k.node.data(), sizeof(h));
	return size_t(h ^ (k.session * 0x9e3779b97f4a7c15ull));
}

void SessionCache::make_room(uint64_t now_ns)
{
	// Idle past the expiry first; then, if still full, the one idle longest.
	for (auto it = sessions_.begin(); it != sessions_.end();) {
		if (now_ns - it->second.last_used_ns > limits_.idle_ns) {
			it = sessions_.erase(it);
			counts_.expired++;
		} else {
			++it;
		}
	}
	while (!sessions_.empty() && sessions_.size() >= limits_.max_sessions) {
		auto oldest = sessions_.begin();
		for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
			if (it->second.last_used_ns < oldest->second.last_used_ns)
				oldest = it;
		sessions_.erase(oldest);
		counts_.expired++;
	}
}

SessionCache::Admission SessionCache::admit(const Key &key, uint64_t seq, bool retry, uint64_t conn,
                                            uint64_t now_ns)
{
	using V = Admission::Verdict;
	MutexLock lk(&mu_);
	auto refuse = [&](uint64_t *counter, std::string why) {
		(*counter)++;
		return Admission{V::kRefused, Status(Code::kBusy, std::move(why)), 0};
	};
	const std::string what =
	        "write " + std::to_string(seq) + " of session " + std::to_string(key.session);
	auto it = sessions_.find(key);
	if (it != sessions_.end() && now_ns - it->second.last_used_ns > limits_.idle_ns) {
		sessions_.erase(it); // expired: as if forgotten
		counts_.expired++;
		it = sessions_.end();
	}
	if (it == sessions_.end()) {
		if (retry)
			return refuse(
			        &counts_.refused_unknown,
			        what + " is a retry, but this module does not know the session "
			               "(restarted, or the session was idle too long): not "
			               "applied, since it may have been; re-read or write again");
		if (sessions_.size() >= limits_.max_sessions)
			make_room(now_ns);
		it = sessions_.emplace(key, Session{}).first;
		it->second.conn = conn;
	}
	Session &s = it->second;
	s.last_used_ns = now_ns;
	Entry &e = s.window[seq % kWindow];
	bool seen = e.seq == seq && seq + kWindow > s.high;
	if (seen && e.done) {
		counts_.retries_answered++;
		Status st = e.code == Code::kOk
		                    ? Status::ok()
		                    : Status(e.code, what + " failed when first received (" +
		                                             code_name(e.code) +
		                                             "); not applied again");
		return Admission{V::kAnswered, st, e.applied};
	}
	if (seen)
		return refuse(&counts_.refused_in_progress,
		              what + " is still being applied; ask again");
	if (conn < s.conn)
		return refuse(&counts_.refused_superseded,
		              what + " came on a connection its session has left (a late "
		                     "request of a dropped connection): not applied");
	if (s.high >= kWindow && seq <= s.high - kWindow)
		return refuse(&counts_.refused_unknown,
		              what + " is older than the session's window (newest " +
		                      std::to_string(s.high) +
		                      "): not applied, since it may have "
		                      "been; re-read or write again");
	if (retry && seq < s.high)
		return refuse(&counts_.refused_unknown,
		              what + " is a retry of a write never received, and a newer one (" +
		                      std::to_string(s.high) +
		                      ") was applied since: not applied over it; re-read or "
		                      "write again");
	s.conn = conn;
	if (seq > s.high)
		s.high = seq;
	e = Entry{seq, false, Code::kOk, 0};
	counts_.sequenced++;
	return Admission{};
}

void SessionCache::record(const Key &key, uint64_t seq, Code code, uint32_t applied)
{
	MutexLock lk(&mu_);
	auto it = sessions_.find(key);
	if (it == sessions_.end())
		return;
	Entry &e = it->second.window[seq % kWindow];
	if (e.seq != seq)
		return;
	e.done = true;
	e.code = code;
	e.applied = applied;
}

SessionCounts SessionCache::counts() const
{
	MutexLock lk(&mu_);
	SessionCounts c = counts_;
	c.sessions = sessions_.size();
	return c;
}

} // namespace memfed
