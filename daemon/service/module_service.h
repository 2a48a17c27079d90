// ModuleService: the memory-module role on the wire. Serves READ, WRITE,
// REGION_*, STAT and the versioned messages of replicated regions
// (WRITE_VERSIONED, READ_VERSIONED, READ_VERSIONS) from peers out of the
// local ModuleStore. A WRITE_VERSIONED takes the WRITE path below (deferred,
// group-committed, answered once durable, with the pages it applied); a
// READ_VERSIONED or READ_VERSIONS is ordered against queued WRITEs as a
// READ is.
//
// Fault traffic never waits for persistence: a WRITE received from the TCP
// server is deferred to the service's writer thread, which takes every write
// queued meanwhile, commits them as one group (ModuleStore::write_pages_batch,
// one redo-log persist for the group) and only then answers them, so each
// acknowledgement still means durable. READs are answered at once on the loop
// thread, except a READ that overlaps a write not yet applied: it is queued
// behind that write and answered by the writer, so a READ always sees every
// WRITE the module received before it. In-process callers (LocalChannel)
// hand their WRITEs, and whatever must follow them, to the same writer
// through submit_local(): they are committed in the same groups and answered
// once durable, on the writer thread. Requests handled with a Reply that
// cannot defer are served synchronously.
//
// Authorization (region_authz.h): a region created over the wire belongs to
// the node whose key TLS authenticated for the connection and the uid in the
// request's spec; that node's creates count against its node quota
// ("quota.node_*", quota.h). Every request naming a region is checked
// against its owner and grants before it is served: READ and the versioned
// reads need read, WRITE, WRITE_VERSIONED and REGION_SET_LENGTH write,
// REGION_DELETE and grant changes admin; an asked REGION_LOOKUP checks the
// uid the node vouches for. REGION_LIST and STAT are open to every trusted
// node; an asked REGION_LIST says what the uid it names may do with each
// region, so the node can show its user only those they may read. A
// refusal is a kPermission naming the region, the key, the uid and the grant
// that would allow it; refusals are counted by reason (read, write, admin,
// node quota: memfedctl stats, memfed_module_refusals_total) and logged (at
// most one line a second, with the number left out since the last line).
//
// Sequenced writes (protocol.h, kFlagSequenced) pass the session cache
// (session_cache.h) before anything else is done with them: a retry of a
// write already applied is answered with its recorded result, a late one
// of a connection its writer has left is refused, and only a write the
// cache admits is applied. Its answer is recorded once durable, before the
// writer answers it.
//
// Thread-safety: handle() of deferrable requests runs on the one EventLoop
// thread of the module's TcpServer; handle() of non-deferrable requests,
// submit_local(), stat() and queued() may run on any thread. The store is thread-safe, so
// control ops may use it concurrently. The destructor commits and answers
// every queued write before it returns.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "daemon/service/quota.h"
#include "daemon/service/region_authz.h"
#include "daemon/service/session_cache.h"
#include "daemon/store/pool.h"
#include "daemon/transport/tcp_server.h"

namespace memfed
{

// Why the module refused a request: its authorization lacked the read, write
// or administer (delete, grant, revoke) right it needed, a create would
// exceed the asking node's quota or (asked through this node's control
// socket) the local user's uid quota, or a one-sided RDMA read came with a
// key that is not (or no longer) good for the address it read (the RDMA
// server learns of it from the device: daemon/rdma/rdma_server.h).
enum class Refusal { kRead, kWrite, kAdmin, kNodeQuota, kUidQuota, kRdmaKey, kCount };
// Refusals counted per reason (ModuleService::refusals).
struct RefusalCounts {
	uint64_t read = 0;
	uint64_t write = 0;
	uint64_t admin = 0;
	uint64_t node_quota = 0;
	uint64_t uid_quota = 0;
	uint64_t rdma_key = 0;
};

// RegionInfo (store) -> WireRegion and back to the federation's view.
wire::WireRegion to_wire(const RegionInfo &r);

// A request of an in-process caller for the writer thread (submit_local).
// Owned by the caller; must stay alive until finished() has run.
class LocalRequest
{
public:
	enum class Kind {
		kWrite,   // `count` pages from `src` at `offset` of `region_id`;
		          // versioned if `version` != 0 (ModuleStore::write_pages_versioned)
		kRead,    // `count` pages into `dst`, after the WRITEs queued before it
		kOrdered, // nothing: finished() runs after the WRITEs queued before it
	};
	Kind kind = Kind::kWrite;
	uint32_t region_id = 0;
	uint64_t offset = 0;
	uint32_t count = 0;
	const void *src = nullptr;
	void *dst = nullptr;
	// A versioned kWrite: the page version, the mode, and (set with
	// `status`) the pages applied.
	uint64_t version = 0;
	VersionedMode mode = VersionedMode::kNewer;
	uint32_t applied = 0;
	// The outcome (kWrite: durable or failed; kRead: read or failed).
	Status status;
	// Runs on the writer thread once `status` is set (kOrdered: when its
	// turn comes). The request is the caller's again from here on.
	virtual void finished() = 0;

protected:
	~LocalRequest() = default;
};

class ModuleService : public RequestHandler
{
public:
	explicit ModuleService(ModuleStore *store);
	~ModuleService() override;
	ModuleService(const ModuleService &) = delete;
	ModuleService &operator=(const ModuleService &) = delete;

	void handle(const ConnInfo &conn, const wire::Header &req, std::span<const uint8_t> payload,
	            Reply &reply) override;
	wire::WireStat stat() const;
	// Queues `r` for the writer thread behind every request queued so far;
	// r->finished() runs there. No allocation once the queue has grown to
	// its working size.
	void submit_local(LocalRequest *r);
	// Requests waiting for the writer thread (not yet taken into a group).
	size_t queued() const;

	// This node's key: connections authenticated with it are this node's
	// own (region_authz.h), and regions with a zero owner key are shown as
	// owned by it. Set before the first request.
	void set_node_key(const NodeKeyBytes &key) { own_key_ = key; }
	// The node quotas in force (a reload may change them); `config_path`
	// is named in refusals.
	void set_quota(const QuotaConfig &q, const std::string &config_path);
	// For this node's own user `uid` (the control socket's SO_PEERCRED):
	// the wire::kAccess* rights it has on local region `name`, decided as for
	// a request of this node's key vouching for `uid` (so a region another
	// node owns gives this node's users only what was granted to this
	// node); a refusal when `want` is not all held, counted and logged.
	Result<uint8_t> local_user_rights(const std::string &name, uint32_t uid, uint8_t want);
	// The wire::kAccess* rights of user `uid` of node `key` (this node's
	// own key: a local user) on region `r`, without counting a refusal:
	// what an asked REGION_LIST shows (region ls).
	uint8_t rights_for(const NodeKeyBytes &key, uint32_t uid, const RegionInfo &r);
	// This node's key (set_node_key).
	const NodeKeyBytes &node_key() const { return own_key_; }
	// REGION_ACCESS (show, grant, revoke) of this node's user req.asker_uid.
	Result<wire::WireAccessList> local_access(const wire::WireAccessRequest &req);
	// Requests refused since the start, by reason: authorization (what
	// was wanted: read, write, administer), node quotas and RDMA keys.
	RefusalCounts refusals() const;
	// Sequenced writes (session_cache.h): admitted, answered from the
	// cache, refused; sessions remembered.
	SessionCounts sessions() const { return sessions_.counts(); }
	// Whether the peer of `conn` may read region `region_id`, decided, and
	// a refusal counted and logged, exactly as for its READ (the RDMA
	// server's RDMA_REGION: daemon/rdma/rdma_server.h).
	Status authorize_read(const ConnInfo &conn, uint32_t region_id);
	// Counts a refusal and logs it, rate-limited (at most a line a second,
	// with how many were not logged).
	void log_refusal(const Status &st, Refusal why);

	// Test only: the writer thread calls `hook` after taking a group and
	// before committing it (a test holds the writer there to show that
	// reads are served meanwhile). Set before the first request.
	void set_writer_hook_for_test(std::function<void()> hook)
	{
		writer_hook_ = std::move(hook);
	}

private:
	// A request for the writer: a WRITE, a READ that waits for one, or a
	// REGION_DELETE or REGION_SET_LENGTH that must not overtake the WRITEs
	// queued before it; from a connection (`reply`) or in-process (`local`).
	struct Job {
		enum class Kind { kRead, kWrite, kDelete, kSetLength, kLocalOrdered };
		DeferredReply reply;
		LocalRequest *local = nullptr;
		Kind kind = Kind::kRead;
		std::vector<uint8_t> pages; // a WRITE's payload (WRITE_VERSIONED: its pages)
		uint64_t version = 0;       // a WRITE_VERSIONED's version and mode
		VersionedMode mode = VersionedMode::kNewer;
		uint64_t seq = 0; // a WRITE's place in the queue (1, 2, ...)
		// A sequenced WRITE (wire_seq != 0): where its answer is recorded.
		SessionCache::Key session;
		uint64_t wire_seq = 0;
		std::string region, by; // a DELETE's region name and requester
		wire::WireSetLength set_length{};
	};
	// The fa range of a WRITE not yet applied.
	struct PendingRange {
		uint64_t begin, end, seq;
	};

	void enqueue(Job job);
	// A WRITE or WRITE_VERSIONED from a connection: deferred to the writer.
	void defer_write(const wire::Header &req, std::span<const uint8_t> pages, uint64_t version,
	                 VersionedMode mode, const SessionCache::Key &session, uint64_t wire_seq,
	                 Reply &reply);
	// A WRITE or WRITE_VERSIONED (its payload without the sequence), once
	// admitted: deferred to the writer, or applied here if `reply` cannot
	// defer; a sequenced one's answer is recorded in sessions_.
	void write(const wire::Header &req, std::span<const uint8_t> payload,
	           const SessionCache::Key &session, uint64_t seq, Reply &reply);
	// READ_VERSIONED / READ_VERSIONS of `req` into `out` (exactly the
	// response payload); *crc: READ_VERSIONED's payload crc (stored crcs,
	// checked against the copy: kCorrupt if a page is damaged).
	Status read_versioned(const wire::Header &req, std::span<uint8_t> out, uint32_t *crc);
	Status read_versions(const wire::Header &req, std::span<uint8_t> out);
	bool overlaps_pending_write(uint64_t fa, uint32_t count);
	Requester requester_of(const ConnInfo &conn) const;
	// OK if `q` has `want` on the region (by id or by name), else the
	// refusal, counted and logged.
	Status authorize(const Requester &q, uint32_t region_id, uint8_t want);
	Status authorize(const Requester &q, const RegionInfo &r, const RegionAccess &a,
	                 uint8_t want);
	std::string owner_text(const NodeKeyBytes &owner) const;
	void region_create(const ConnInfo &conn, const Requester &q,
	                   std::span<const uint8_t> payload, Reply &reply);
	void region_lookup(const Requester &q, std::span<const uint8_t> payload, Reply &reply);
	void region_access(const Requester &q, std::span<const uint8_t> payload, Reply &reply);
	Result<wire::WireAccessList> access_op(const Requester &asker,
	                                       const wire::WireAccessRequest &req);
	// `a` with a zero owner key (this module's node) replaced by own_key_.
	RegionAccess normalized(RegionAccess a) const;
	bool any_pending_write();
	Status delete_region(const std::string &name, const std::string &by);
	Result<RegionInfo> set_length(const wire::WireSetLength &s);
	void writer_main();
	void commit(std::vector<Job> &group);
	void commit_segment(std::span<Job> jobs);

	ModuleStore *store_;
	std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
	std::function<void()> writer_hook_;
	NodeKeyBytes own_key_{};
	mutable std::mutex quota_mu_;
	QuotaConfig quota_;       // guarded by quota_mu_
	std::string config_path_; // guarded by quota_mu_
	std::atomic<uint64_t> refusals_[size_t(Refusal::kCount)] = {};
	SessionCache sessions_;
	std::mutex log_mu_;
	std::chrono::steady_clock::time_point last_refusal_log_{}; // guarded by log_mu_
	uint64_t refusals_unlogged_ = 0;                           // guarded by log_mu_

	// Loop thread only.
	std::vector<PendingRange> pending_; // in seq order
	uint64_t next_seq_ = 1;
	// Highest seq whose write the store has applied (written by the writer).
	std::atomic<uint64_t> applied_seq_{0};

	mutable std::mutex mu_;
	std::condition_variable cv_;
	std::vector<Job> queue_; // guarded by mu_; swapped with the writer's group
	bool stopping_ = false;  // guarded by mu_
	std::thread writer_;
};

} // namespace memfed
