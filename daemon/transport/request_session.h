// RequestSession: the writer's side of sequenced writes (protocol.h,
// kFlagSequenced; the module's side is daemon/service/session_cache.h).
//
// A session is a random 64-bit id and a counter of the writes sent in it.
// It is one stream of writes to one module: at most one live channel
// carries it at a time, and when that channel breaks the session passes to
// the next channel opened to the module, so the writes a writer sends after
// a reconnection continue the numbering of those before it. The module then
// refuses whatever still arrives on the connection the session left (a
// write the writer has already re-sent or superseded) and answers a retry of
// a write it applied (same session and seq, kFlagRetry) from its cache.
//
// RequestSessions::process() hands sessions out per module: acquire() gives
// a session no live channel holds (a released one first, else a new one),
// RequestSession::release() gives it back (a TcpChannel does so when it breaks or is
// destroyed: it sends nothing more). The pager's bulk connection to a module
// holds one (daemon/service/node_federation.cc); two live channels to one
// module hold two.
//
// Thread-safety: acquire() and release() may run on any thread; next_seq()
// on the thread of the one channel holding the session (the handover goes
// through the registry's mutex).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/common/thread_annotations.h"

namespace memfed
{

class RequestSession
{
public:
	explicit RequestSession(uint64_t id) : id_(id) {}
	uint64_t id() const { return id_; }
	// The next write's number: 1, 2, ...
	uint64_t next_seq() { return ++last_seq_; }
	uint64_t last_seq() const { return last_seq_; }
	// Gives the session back: the next RequestSessions::acquire() for its
	// module may take it. The holder sends nothing in it afterwards.
	void release() { held_.store(false, std::memory_order_release); }

private:
	friend class RequestSessions;
	const uint64_t id_;
	uint64_t last_seq_ = 0;
	// Handed over with release/acquire: the next holder sees last_seq_.
	std::atomic<bool> held_{false};
};

class RequestSessions
{
public:
	// The process's registry.
	static RequestSessions &process();

	// A session to `module` that no live channel holds, now held.
	std::shared_ptr<RequestSession> acquire(ModuleId module);

private:
	Mutex mu_;
	std::map<uint64_t, std::vector<std::shared_ptr<RequestSession>>> by_module_ GUARDED_BY(mu_);
};

} // namespace memfed
