// ReplicaSet: what this node knows of one replicated region's copies.
//
// A replicated region is K ordinary regions of the same name on K modules
// of distinct nodes, each region entry carrying the same replica group (a
// random 40-bit number chosen at create) and K. Programs reach it through a
// *virtual module*: the group written as a module ID with the group bit of
// its first octet set (03:xx:xx:xx:xx:xx), which no module ID ever has
// (module IDs are unicast, ids.h). The region's pages are addressed there
// from offset 0; ReplicatedChannel (replicated_channel.h) turns each request
// into requests to the replicas, at each one's own region id and offset.
// The pager, the region service and the CLI are unchanged: they see a module.
//
// Page versions (daemon/store/layout.h, the version area) order the writes.
// The writer takes each write's version from this set's clock: the larger of
// CLOCK_REALTIME in ns and the last version plus one, so versions grow across
// restarts of the writer without any state of its own. A replica applies a
// page only when its version is newer than the one it holds, so a late or
// repeated write never undoes a newer one, and a copy for catch-up or repair
// never overwrites a newer page.
//
// Each replica is in one of three states, as this node sees it:
//   in sync      it has every acknowledged write; reads may go to it;
//   catching up  it is back (or newly met) and receives every write, while
//                a pass compares its page versions with an in-sync replica's
//                and copies what differs; not read from until the pass ends;
//   lost         a request to it failed (connection lost, region gone); it is
//                neither written nor read, and is retried every few seconds.
// The states live only here: versions are the truth on the modules, and a
// node that starts afresh compares them again (every replica but the first
// starts catching up), so a replica that missed writes while it was away is
// never read before it has them.
//
// Thread-safety: every method is thread-safe. Channels of several pager
// threads share one set; `generation()` changes whenever a state does, so
// a channel rereads the states only then.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/common/thread_annotations.h"
#include "daemon/service/replica_events.h"

namespace memfed
{

// The virtual module of replica group `group` (its low 40 bits).
ModuleId replica_set_module(uint64_t group);
// The region id a replicated region has at its virtual module (nonzero).
inline uint32_t replica_set_region_id(uint64_t group)
{
	return uint32_t(group) | 1;
}
// True for a replica set's virtual module, false for a real module's ID.
bool is_replica_set(ModuleId module);
// A fresh random replica group (40 bits, nonzero).
uint64_t new_replica_group();
// Now, in ms since the epoch: the clock of the copies' "since" times.
uint64_t unix_ms();
// The largest number of copies a region may have.
constexpr unsigned kMaxReplicas = 8;

// One copy of a replicated region: which module holds it, and where.
struct ReplicaLocation {
	ModuleId module;
	uint32_t region_id = 0;
	uint64_t fa_offset = 0;
	uint32_t preference = 0; // lower is nearer: 0 for this node's module, else 1 + metric
};

class ReplicaSet
{
public:
	enum class State : uint8_t { kInSync, kCatchingUp, kLost };
	static const char *state_name(State s);

	struct Replica {
		ReplicaLocation loc;
		State state = State::kCatchingUp;
		std::string why;             // why it is lost or catching up
		uint64_t since_unix_ms = 0;  // when it entered that state
		uint64_t pages_to_check = 0; // catch-up: pages whose versions are compared
		uint64_t pages_checked = 0;
		uint64_t pages_copied = 0; // catch-up and repair copies into it
		// Its lag: since when it is out of sync (0 while in sync), the
		// pages written meanwhile that it could not take (it was lost: an
		// upper bound of what it lacks, a page written twice counts twice),
		// and, while catching up, the pages found to differ and not yet
		// copied.
		uint64_t out_of_sync_since_unix_ms = 0;
		uint64_t pages_missed = 0;
		uint64_t pages_to_copy = 0;
		// It left sync when no other copy was in sync, so it holds every
		// acknowledged write (a write is acknowledged only once a copy in
		// sync has it, and there has been none since): when it answers
		// again it is in sync at once, and the others catch up from it.
		bool last_in_sync = false;
	};
	struct Counters {
		uint64_t writes = 0;         // fanned-out write requests
		uint64_t reads_retried = 0;  // reads answered by another replica after a failure
		uint64_t pages_repaired = 0; // damaged pages rewritten from a good copy
		uint64_t pages_caught_up = 0;
		uint64_t replicas_lost = 0;     // transitions to lost
		uint64_t replicas_replaced = 0; // lost copies rebuilt on another module
	};

	// `events` (optional, outliving the set) gets each state change.
	ReplicaSet(uint64_t group, std::string name, uint64_t size_bytes, unsigned wanted,
	           ReplicaEvents *events = nullptr);

	uint64_t group() const { return group_; }
	ModuleId module() const { return replica_set_module(group_); }
	const std::string &name() const { return name_; }
	uint64_t size_bytes() const { return size_bytes_; }
	uint64_t pages() const { return size_bytes_ / 4096; }
	unsigned wanted() const { return wanted_; }

	// The version for the next write: never 0, strictly above every version
	// handed out or observed.
	uint64_t next_version();
	// A version seen on a module (catch-up, a refused write): later versions
	// are above it.
	void observe_version(uint64_t v);

	// Adds replicas found by a lookup (a new one starts catching up unless it
	// is the first of the set); updates where a known one lives.
	void merge(const std::vector<ReplicaLocation> &found);
	std::vector<Replica> snapshot() const;
	uint64_t generation() const { return gen_.load(std::memory_order_acquire); }

	// State changes; each logs one line and bumps the generation.
	void set_state(ModuleId module, State s, const std::string &why);
	// Catch-up progress of `module`: pages compared of pages to compare,
	// and pages found to differ and not yet copied.
	void set_progress(ModuleId module, uint64_t to_check, uint64_t checked, uint64_t to_copy);
	void add_copied(ModuleId module, uint64_t pages, bool repair);
	// A write of `pages` pages that `module` could not take (it is lost).
	void add_missed(ModuleId module, uint64_t pages);

	// Re-replication (NodeFederation, on the keeper's thread): the copy on
	// `lost` leaves the set, and `fresh`, a new empty copy on another
	// module, joins it catching up (a whole-region catch-up fills it).
	void replace(ModuleId lost, const ReplicaLocation &fresh, const std::string &why);
	// The lost copy on `lost` leaves the set without a new one joining it:
	// another node replaced it (the set has its K copies without it).
	// Logs `why`; false if the set has no copy there.
	bool drop(ModuleId lost, const std::string &why);
	// Why a lost copy cannot be rebuilt elsewhere ("" once it can, or is):
	// logged when it changes; region show shows it.
	void set_rebuild_note(const std::string &why);
	// When this node last asked the modules for the set's copies (the
	// keeper, while a copy is lost).
	uint64_t last_reread_unix_ms() const { return last_reread_ms_.load(); }
	void set_last_reread_unix_ms(uint64_t ms) { last_reread_ms_.store(ms); }
	// When this node last tried to rebuild a lost copy of the set.
	uint64_t last_rebuild_try_unix_ms() const { return last_rebuild_try_ms_.load(); }
	void set_last_rebuild_try_unix_ms(uint64_t ms) { last_rebuild_try_ms_.store(ms); }
	std::string rebuild_note() const;

	// Claims the job of catching replicas up (one channel does it at a time);
	// false if another holds it. `owner` is any unique token.
	bool claim_catch_up(const void *owner);
	void release_catch_up(const void *owner);

	unsigned in_sync() const;
	bool degraded() const { return in_sync() < wanted_; }
	Counters counters() const;
	void count_write() { writes_.fetch_add(1, std::memory_order_relaxed); }
	void count_read_retry() { reads_retried_.fetch_add(1, std::memory_order_relaxed); }

private:
	Replica *find(ModuleId module) REQUIRES(mu_);
	void note_event(const char *event, ModuleId module, const char *was, const std::string &why)
	        REQUIRES(mu_);

	const uint64_t group_;
	const std::string name_;
	const uint64_t size_bytes_;
	const unsigned wanted_;
	ReplicaEvents *const events_;
	std::atomic<uint64_t> clock_{0};
	std::atomic<uint64_t> gen_{1};
	std::atomic<const void *> catch_up_owner_{nullptr};
	std::atomic<uint64_t> last_reread_ms_{0}, last_rebuild_try_ms_{0};
	std::atomic<uint64_t> writes_{0}, reads_retried_{0};
	mutable Mutex mu_;
	std::vector<Replica> replicas_ GUARDED_BY(mu_);
	uint64_t pages_repaired_ GUARDED_BY(mu_) = 0;
	uint64_t pages_caught_up_ GUARDED_BY(mu_) = 0;
	uint64_t replicas_lost_ GUARDED_BY(mu_) = 0;
	uint64_t replicas_replaced_ GUARDED_BY(mu_) = 0;
	std::string rebuild_note_ GUARDED_BY(mu_);
};

} // namespace memfed
