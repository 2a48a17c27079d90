// SessionCache: what a module remembers of each writer's session, so that a
// sequenced write (protocol.h, kFlagSequenced) is never applied twice.
//
// The problem. A writer whose connection to the module drops (its silence
// timer, a broken path, a route that moved) does not know whether the
// writes it had in flight were applied. What it sends next goes on a new
// connection; meanwhile the module may still hold, in the old connection's
// socket or its own queue, requests it has not read yet. Applying such a
// late request after a newer write of the same page (write v1, its answer
// lost; v2 on the new connection, applied; then v1 from the old one)
// brings the page back to the old bytes, and re-applying a write whose
// answer was lost is wrong for anything not idempotent.
//
// The scheme, after NFSv4.1 sessions (RFC 8881, "exactly once semantics"):
// a writer picks a random 64-bit session id and numbers its writes in it;
// the pair (session, seq) is the write's identity, the same on every
// connection the writer sends it on. A session is one stream of writes: the
// writer lets one live connection at a time carry it
// (daemon/transport/request_session.h). The module keeps, per (authenticated
// node key, session):
//   - the newest connection that carried it (connection ids grow over the
//     process's life: ConnInfo::id, tcp_server.h);
//   - `high`, the highest seq accepted, and a window of the last kWindow
//     seqs below and at it, each in progress (handed to the writer, not yet
//     durable) or done (with its answer: code, and pages applied for
//     WRITE_VERSIONED).
// A sequenced request (session S, seq n, on connection C) is then (every
// refusal is a kBusy naming the reason, never applied; not kUnavailable,
// which would tell the writer its connection is lost):
//   - answered from the cache, not applied, when n is done (a retry whose
//     answer was lost, or a late copy of one): counted as a retry answered;
//   - refused while n is in progress ("still being applied; ask again");
//   - refused when C is older than S's newest connection and n is not done:
//     a late request of a connection the writer has left, whose writes the
//     writer has already re-sent or superseded. Never applied;
//   - refused when n has fallen out of the window (n <= high - kWindow): the
//     module cannot tell whether it was applied;
//   - a retry (kFlagRetry) of an n not seen, with n < high: refused, since
//     a newer write of the session was accepted since and the old bytes
//     could overwrite it; the writer re-reads or re-sends what it holds now;
//   - otherwise applied, and n recorded in progress, then done with its
//     answer once durable (record()). Requests of one connection may arrive
//     in any order (a channel sends its classes' queues by priority): a new
//     n below high on the session's newest connection is applied.
// The module's writer applies writes in the order they were admitted (one
// loop thread admits, one writer thread commits in queue order), so a
// request admitted before a newer one is applied before it.
//
// When the state is gone. Sessions idle longer than the expiry (default
// 10 min; a writer re-sends within seconds) are forgotten, and when the
// table is full (default 4096 sessions) the one idle longest is. A module
// restart forgets them all: the state lives in memory only (decided; the
// redo log makes each write durable, but the answer of a write applied just
// before a crash is lost with the process, and a high-water mark written
// with every write would cost a log record per write). Either way, a request
// of an unknown session that is not a retry starts the session afresh (it
// cannot be a late one: the connections that could carry those died with
// the process or were idle past the expiry); a retry of an unknown session
// is refused (naming the reason), never applied: the writer
// re-reads or re-sends what it holds now under a new sequence. So a
// restarted module refuses the old sessions' retries, as asked.
//
// Costs. kWindow entries of 16 bytes per session (1 KiB); a mutex taken
// twice per sequenced write (admit on the loop thread, record on the writer
// thread), never on a read: reads are idempotent and never sequenced.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "daemon/common/status.h"
#include "daemon/common/thread_annotations.h"
#include "daemon/trust/node_key.h"

namespace memfed
{

// Counters since the start (memfedctl stats, memfed_module_session_*).
struct SessionCounts {
	uint64_t sequenced = 0;           // sequenced writes admitted to be applied
	uint64_t retries_answered = 0;    // answered from the cache, not applied again
	uint64_t refused_superseded = 0;  // late, from a connection the session left
	uint64_t refused_in_progress = 0; // asked again while still being applied
	uint64_t refused_unknown = 0;     // retries the module cannot place
	uint64_t sessions = 0;            // sessions remembered now
	uint64_t expired = 0;             // sessions forgotten (idle or table full)
};

class SessionCache
{
public:
	static constexpr uint32_t kWindow = 64;
	static constexpr size_t kDefaultMaxSessions = 4096;
	static constexpr uint64_t kDefaultIdleNs = 600ull * 1000 * 1000 * 1000;

	struct Limits {
		size_t max_sessions = kDefaultMaxSessions;
		uint64_t idle_ns = kDefaultIdleNs;
	};
	SessionCache() = default;
	explicit SessionCache(Limits l) : limits_(l) {}

	// Who sent a sequenced request.
	struct Key {
		trust::PublicKey node{}; // the connection's authenticated key
		uint64_t session = 0;
		bool operator==(const Key &o) const
		{
			return node == o.node && session == o.session;
		}
	};
	// What to do with it.
	struct Admission {
		enum class Verdict { kApply, kAnswered, kRefused } verdict = Verdict::kApply;
		Status status;        // kAnswered: the recorded answer; kRefused: why
		uint32_t applied = 0; // kAnswered of a WRITE_VERSIONED: pages applied
	};
	// Decides request (key, seq) received on connection `conn` at `now_ns`
	// (the scheme above); kApply records it in progress.
	Admission admit(const Key &key, uint64_t seq, bool retry, uint64_t conn, uint64_t now_ns);
	// The answer of an admitted request, once durable (or failed). Dropped
	// if the session has been forgotten or the seq left the window since.
	void record(const Key &key, uint64_t seq, Code code, uint32_t applied);

	SessionCounts counts() const;

private:
	struct Entry {
		uint64_t seq = 0; // 0: empty
		bool done = false;
		Code code = Code::kOk;
		uint32_t applied = 0;
	};
	struct Session {
		uint64_t conn = 0;
		uint64_t high = 0;
		uint64_t last_used_ns = 0;
		std::array<Entry, kWindow> window{}; // seq % kWindow
	};
	struct KeyHash {
		size_t operator()(const Key &k) const;
	};
	// REQUIRES: mu_ held. Room for one more session.
	void make_room(uint64_t now_ns) REQUIRES(mu_);

	const Limits limits_{};
	mutable Mutex mu_;
	std::unordered_map<Key, Session, KeyHash> sessions_ GUARDED_BY(mu_);
	SessionCounts counts_ GUARDED_BY(mu_);
};

} // namespace memfed
