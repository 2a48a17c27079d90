// ReplicaSet: the states of one replicated region's copies (replica_set.h).
#include "daemon/service/replica_set.h"

#include <sys/random.h>

#include <algorithm>
#include <chrono>

#include "daemon/common/log.h"

namespace memfed
{

namespace
{
constexpr uint64_t kGroupMask = (uint64_t{1} << 40) - 1;
// First octet 0x03: locally administered, and the group (multicast) bit set.
constexpr uint64_t kSetPrefix = uint64_t{0x03} << 40;

uint64_t realtime_ns()
{
	return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
	                        std::chrono::system_clock::now().time_since_epoch())
	                        .count());
}
} // namespace

uint64_t unix_ms()
{
	return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
	                        std::chrono::system_clock::now().time_since_epoch())
	                        .count());
}

ModuleId replica_set_module(uint64_t group)
{
	return ModuleId{kSetPrefix | (group & kGroupMask)};
}

bool is_replica_set(ModuleId module)
{
	return module.valid() && (module.value >> 40 & 0x01) != 0;
}

uint64_t new_replica_group()
{
	uint64_t v = 0;
	while (v == 0)
		if (getrandom(&v, sizeof(v), 0) == sizeof(v))
			v &= kGroupMask;
	return v;
}

const char *ReplicaSet::state_name(State s)
{
	switch (s) {
	case State::kInSync:
		return "in sync";
	case State::kCatchingUp:
		return "catching up";
	case State::kLost:
		return "lost";
	}
	return "?";
}

ReplicaSet::ReplicaSet(uint64_t group, std::string name, uint64_t size_bytes, unsigned wanted,
                       ReplicaEvents *events)
    : group_(group & kGroupMask), name_(std::move(name)), size_bytes_(size_bytes),
      wanted_(std::clamp(wanted, 1u, kMaxReplicas)), events_(events)
{
}

void ReplicaSet::note_event(const char *event, ModuleId module, const char *was,
                            const std::string &why)
{
	if (!events_)
		return;
	ReplicaEvent e;
	e.region = name_;
	e.module = module;
	e.event = event;
	e.was = was;
	e.why = why;
	for (const auto &x : replicas_)
		e.in_sync += x.state == State::kInSync;
	e.wanted = wanted_;
	events_->push(std::move(e));
}

uint64_t ReplicaSet::next_version()
{
	uint64_t now = realtime_ns();
	uint64_t last = clock_.load(std::memory_order_relaxed);
	uint64_t next;
	do {
		next = std::max(now, last + 1);
	} while (!clock_.compare_exchange_weak(last, next, std::memory_order_relaxed));
	return next;
}

void ReplicaSet::observe_version(uint64_t v)
{
	uint64_t last = clock_.load(std::memory_order_relaxed);
	while (last < v && !clock_.compare_exchange_weak(last, v, std::memory_order_relaxed)) {
	}
}

ReplicaSet::Replica *ReplicaSet::find(ModuleId module)
{
	for (auto &r : replicas_)
		if (r.loc.module == module)
			return &r;
	return nullptr;
}

void ReplicaSet::merge(const std::vector<ReplicaLocation> &found)
{
	MutexLock lk(&mu_);
	bool changed = false;
	for (const auto &loc : found) {
		Replica *r = find(loc.module);
		if (r) {
			if (r->loc.region_id != loc.region_id ||
			    r->loc.fa_offset != loc.fa_offset) {
				// The region was made anew on that module: compare it afresh.
				r->loc = loc;
				r->state = State::kCatchingUp;
				r->why = "a new copy on this module";
				r->last_in_sync = false; // what it held is gone
				r->since_unix_ms = unix_ms();
				r->out_of_sync_since_unix_ms = r->since_unix_ms;
				r->pages_missed = r->pages_to_copy = 0;
				changed = true;
			}
			r->loc.preference = loc.preference;
			continue;
		}
		if (replicas_.size() >= kMaxReplicas)
			break;
		Replica n;
		n.loc = loc;
		// The first copy met is taken as it is; every other one is compared
		// with it before it is read from (see the top of replica_set.h).
		n.state = replicas_.empty() ? State::kInSync : State::kCatchingUp;
		n.why = replicas_.empty() ? "" : "not yet compared";
		n.since_unix_ms = unix_ms();
		n.out_of_sync_since_unix_ms = replicas_.empty() ? 0 : n.since_unix_ms;
		replicas_.push_back(std::move(n));
		changed = true;
	}
	std::stable_sort(replicas_.begin(), replicas_.end(),
	                 [](const Replica &a, const Replica &b) {
		                 return a.loc.preference < b.loc.preference;
	                 });
	if (changed)
		gen_.fetch_add(1, std::memory_order_acq_rel);
}

std::vector<ReplicaSet::Replica> ReplicaSet::snapshot() const
{
	MutexLock lk(&mu_);
	return replicas_;
}

void ReplicaSet::set_state(ModuleId module, State s, const std::string &why)
{
	MutexLock lk(&mu_);
	Replica *r = find(module);
	if (!r || r->state == s)
		return;
	State was = r->state;
	unsigned others_in_sync = 0;
	for (const auto &x : replicas_)
		others_in_sync += &x != r && x.state == State::kInSync;
	std::string reason = why;
	if (s == State::kCatchingUp && r->last_in_sync && others_in_sync == 0) {
		// Nothing to catch up from, and nothing it lacks: see last_in_sync.
		s = State::kInSync;
		reason = "the last copy in sync answers again: it holds every acknowledged write";
	}
	if (s == State::kLost && was == State::kInSync && others_in_sync == 0)
		r->last_in_sync = true;
	if (s == State::kInSync)
		for (auto &x : replicas_)
			x.last_in_sync = false;
	r->state = s;
	r->why = reason;
	r->since_unix_ms = unix_ms();
	if (s == State::kLost)
		replicas_lost_++;
	if (s != State::kCatchingUp) {
		r->pages_to_check = 0;
		r->pages_checked = 0;
		r->pages_to_copy = 0;
	}
	// The lag: from when it first left sync until it is back in sync.
	if (s == State::kInSync) {
		r->out_of_sync_since_unix_ms = 0;
		r->pages_missed = 0;
	} else if (r->out_of_sync_since_unix_ms == 0) {
		r->out_of_sync_since_unix_ms = r->since_unix_ms;
	}
	unsigned live = 0;
	for (const auto &x : replicas_)
		live += x.state == State::kInSync;
	log_line(s == State::kLost ? LogLevel::kWarn : LogLevel::kInfo, "replica",
	         "region '%s': the copy on module %s is %s (was %s)%s%s; %u of %u in sync",
	         name_.c_str(), module.to_string().c_str(), state_name(s), state_name(was),
	         reason.empty() ? "" : ": ", reason.c_str(), live, wanted_);
	note_event(state_name(s), module, state_name(was), reason);
	gen_.fetch_add(1, std::memory_order_acq_rel);
}

void ReplicaSet::set_progress(ModuleId module, uint64_t to_check, uint64_t checked,
                              uint64_t to_copy)
{
	MutexLock lk(&mu_);
	if (Replica *r = find(module)) {
		r->pages_to_check = to_check;
		r->pages_checked = checked;
		r->pages_to_copy = to_copy;
	}
}

void ReplicaSet::add_missed(ModuleId module, uint64_t pages)
{
	MutexLock lk(&mu_);
	if (Replica *r = find(module))
		r->pages_missed += pages;
}

void ReplicaSet::replace(ModuleId lost, const ReplicaLocation &fresh, const std::string &why)
{
	MutexLock lk(&mu_);
	std::erase_if(replicas_, [&](const Replica &r) { return r.loc.module == lost; });
	Replica *r = find(fresh.module);
	if (!r) {
		replicas_.push_back(Replica{});
		r = &replicas_.back();
	}
	r->loc = fresh;
	r->state = State::kCatchingUp;
	r->why = why;
	r->since_unix_ms = r->out_of_sync_since_unix_ms = unix_ms();
	r->pages_to_check = r->pages_checked = r->pages_copied = 0;
	r->pages_missed = r->pages_to_copy = 0;
	std::stable_sort(replicas_.begin(), replicas_.end(),
	                 [](const Replica &a, const Replica &b) {
		                 return a.loc.preference < b.loc.preference;
	                 });
	replicas_replaced_++;
	rebuild_note_.clear();
	note_event("replaced", lost, "", "by a new copy on module " + fresh.module.to_string());
	note_event(state_name(State::kCatchingUp), fresh.module, "", why);
	gen_.fetch_add(1, std::memory_order_acq_rel);
}

bool ReplicaSet::drop(ModuleId lost, const std::string &why)
{
	MutexLock lk(&mu_);
	if (std::erase_if(replicas_, [&](const Replica &r) { return r.loc.module == lost; }) == 0)
		return false;
	LOG_INFO("replica", "region '%s': the copy on module %s leaves the set: %s", name_.c_str(),
	         lost.to_string().c_str(), why.c_str());
	note_event("dropped", lost, "", why);
	rebuild_note_.clear();
	gen_.fetch_add(1, std::memory_order_acq_rel);
	return true;
}

void ReplicaSet::set_rebuild_note(const std::string &why)
{
	MutexLock lk(&mu_);
	if (why == rebuild_note_)
		return;
	rebuild_note_ = why;
	if (!why.empty())
		LOG_WARN("replica", "region '%s' stays degraded: %s", name_.c_str(), why.c_str());
}

std::string ReplicaSet::rebuild_note() const
{
	MutexLock lk(&mu_);
	return rebuild_note_;
}

void ReplicaSet::add_copied(ModuleId module, uint64_t pages, bool repair)
{
	MutexLock lk(&mu_);
	if (Replica *r = find(module))
		r->pages_copied += pages;
	(repair ? pages_repaired_ : pages_caught_up_) += pages;
}

bool ReplicaSet::claim_catch_up(const void *owner)
{
	const void *none = nullptr;
	return catch_up_owner_.compare_exchange_strong(none, owner) || none == owner;
}

void ReplicaSet::release_catch_up(const void *owner)
{
	const void *o = owner;
	catch_up_owner_.compare_exchange_strong(o, nullptr);
}

unsigned ReplicaSet::in_sync() const
{
	MutexLock lk(&mu_);
	unsigned n = 0;
	for (const auto &r : replicas_)
		n += r.state == State::kInSync;
	return n;
}

ReplicaSet::Counters ReplicaSet::counters() const
{
	MutexLock lk(&mu_);
	Counters c;
	c.writes = writes_.load(std::memory_order_relaxed);
	c.reads_retried = reads_retried_.load(std::memory_order_relaxed);
	c.pages_repaired = pages_repaired_;
	c.pages_caught_up = pages_caught_up_;
	c.replicas_lost = replicas_lost_;
	c.replicas_replaced = replicas_replaced_;
	return c;
}

} // namespace memfed
