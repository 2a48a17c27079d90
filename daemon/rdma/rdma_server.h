// RdmaServer: the module side of the RDMA transport (issue 12).
//
// Design. A module that listens for RDMA (memfedd --rdma-listen ADDR) keeps
// serving everything over its TLS TcpServer; RDMA only adds one-sided reads
// of its regions, which cost the module's CPU nothing:
//   - Registration: per region, made lazily at the first RDMA_REGION a peer
//     may have answered, and kept while the region lives: two memory
//     regions (MRs), one over the region's data extent and one over the
//     slice of the meta area holding its pages' PageMeta entries (version,
//     crc; the reader's torn-read check), both IBV_ACCESS_REMOTE_READ only.
//     Nothing is ever registered for remote write or atomics: every write
//     goes through the module's durable redo-log path (over TLS, or SENT
//     on the queue pair: below). Pages never
//     move, so a page's remote address is fixed while its region lives. A
//     key is good for its region's bytes only: the device checks every READ
//     against the bounds of the MR its key names, so a key of region A used
//     at region B's address is refused by the device (remote access error).
//     Registering pins the whole extent, which populates it: on a thin
//     pool (daemon/store/layout.h) a region larger than the pool's capacity
//     (a program's heap: 64 GiB by default) is never registered, since its
//     pin would fill memory with pages never written; RDMA_REGION refuses
//     it (kUnavailable, saying why) and its pages are read over TCP.
//   - Hand-out: a one-time connect token and the rdma_cm endpoint go out
//     only in answer to RDMA_CONNECT over TLS, and only to an authenticated
//     peer (ConnInfo::authenticated); a region's extent, addresses and keys
//     only in answer to RDMA_REGION, and only if that peer may READ the
//     region: ModuleService::authorize_read, the READ path's own check,
//     which counts and logs a refusal as a READ's (reason read). A READ
//     carries no uid, so neither does the decision: the node's key and its
//     grants decide, as for a READ.
//   - Connection: rdma_cm, one RC queue pair per pager channel. The connect
//     request's private data must be a WireRdmaHello carrying an unexpired
//     token this server handed out (each token works once, for 30 s);
//     anything else (wrong size, magic, version, unknown token) is rejected
//     and counted. The module posts on it only the receives and answers
//     of write-back (below).
//   - Revocation by deregistration: ModuleStore::set_on_access_lost runs
//     for a region whatever path changes it (a peer over the wire, this
//     node's control socket, replication): at a delete before its pages are
//     freed, after a truncate zeroed pages, after a grant lost a right. The
//     region's MRs are deregistered there, so every key handed out for it
//     dies at once: a read with one fails on the responder (remote access
//     error), the reader's QP breaks, it falls back to TCP, whose answer is
//     authoritative (and refuses a reader whose grant is gone), and it asks
//     RDMA_REGION again, which registers the region anew (new keys) if it
//     still lives and the reader may still read it. Other regions' keys are
//     untouched: nothing re-pins the pool.
//   - Why per-region MRs, not memory windows: soft-RoCE's type-2 windows
//     would give per-region keys over one pool-wide MR, but a pool *file*
//     frees space by punching holes, and a registration pins the pages it
//     was made over: the punched pages stay pinned under the old
//     registration, holding the old bytes, while the file gets fresh zero
//     pages. A window bound to a pool-wide MR made before a delete would
//     show a region made later in that space the old bytes, and only
//     re-pinning the whole pool would fix that. An MR made for a region
//     after its allocation (and after a truncate) pins the region's current
//     pages, so it reaches the right bytes, and dropping it costs nothing
//     for the other regions.
//   - Forged and stale keys: a one-sided READ with a bad key never reaches
//     the module's CPU; the device refuses it and moves the responder QP to
//     the error state. The server counts it (ModuleService refusals, reason
//     rdma_key: memfedctl stats, memfed_module_refusals_total) and logs it
//     with the peer the QP's token was handed to, from the device's
//     affiliated asynchronous events (IBV_EVENT_QP_ACCESS_ERR and the other
//     QP errors; ibv_get_async_event) or, for devices that raise none
//     (soft-RoCE in Linux 6.1 moves the QP to the error state without an
//     event), from the QP found in the error state when the reader
//     disconnects. One count per connection: its QP is dead after the first.
// Write-back over RDMA (issue 12, item 4): the queue pairs also carry
// two-sided writes, received and applied through the ModuleService by the
// RdmaWriteReceiver (rdma_write_receiver.h); a token remembers the TLS
// connection (and its loop) that got it, and the queue pair connected with
// it keeps that identity. RDMA_FENCE from a connection fences its queue
// pairs. Still nothing is registered for remote write.
// Limitation, named: RoCE packets are neither encrypted nor authenticated,
// so RDMA is for networks where that is acceptable.
//
// Thread-safety: handle() runs on the TcpServer's loop thread; the rdma_cm
// and device events are handled on this server's own thread; the store's
// access-lost callback and the accessors may run on any thread.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "daemon/rdma/rdma_write_receiver.h"
#include "daemon/service/module_service.h"
#include "daemon/store/layout.h"
#include "daemon/store/pool.h"
#include "daemon/transport/tcp_server.h"

namespace memfed
{

class RdmaServer : public RequestHandler
{
public:
	struct Counters {
		uint64_t connections = 0;   // accepted
		uint64_t refused = 0;       // connect requests or key requests refused here
		uint64_t registrations = 0; // regions registered (each: two MRs)
		uint64_t revocations = 0;   // regions whose registration was dropped
		uint64_t key_errors = 0;    // QPs broken by a bad key (also rdma_key refusals)
		RdmaWriteReceiver::Counters writes; // write-back over RDMA
	};
	// A region's registration as RDMA_REGION hands it out.
	struct RegionKeys {
		uint64_t data_addr = 0, meta_addr = 0;
		uint32_t data_rkey = 0, meta_rkey = 0;
	};

	// Listens with rdma_cm on `host_port` (an address of an RDMA device; port
	// 0 picks one) for reads of `store`'s regions. Requests other than
	// RDMA_CONNECT / RDMA_REGION go to `service`, which also decides who may
	// read a region and counts refusals. Both must outlive the server.
	static Result<std::unique_ptr<RdmaServer>>
	listen(const std::string &host_port, ModuleStore *store, ModuleService *service);
	~RdmaServer() override;
	RdmaServer(const RdmaServer &) = delete;
	RdmaServer &operator=(const RdmaServer &) = delete;

	void handle(const ConnInfo &conn, const wire::Header &req, std::span<const uint8_t> payload,
	            Reply &reply) override;

	std::string endpoint() const { return endpoint_; }
	// Region `region_id`'s registration, if it has one now.
	std::optional<RegionKeys> keys(uint32_t region_id) const;
	Counters counters() const;
	// Test only: the write receiver (its test hook).
	RdmaWriteReceiver *writes_for_test() { return writes_.get(); }

private:
	struct RegionMrs {
		ibv_mr *data = nullptr, *meta = nullptr;
	};
	struct Token {
		std::chrono::steady_clock::time_point expires;
		std::string peer;             // who it was handed to, for logs
		RdmaWriteReceiver::Identity who; // its connection, for write-back
	};
	struct Conn {
		std::string peer;
		bool counted = false; // a bad-key refusal counted for its QP
	};

	RdmaServer() = default;
	// RDMA_REGION: `region_id`'s keys, registering it first if needed.
	Result<RegionKeys> region_keys(uint32_t region_id, RegionInfo *info);
	// Drops `region_id`'s registration (ModuleStore::set_on_access_lost).
	void revoke(uint32_t region_id);
	static void deregister(RegionMrs m);
	void cm_main();
	void on_async_event();
	// Counts and logs a bad-key refusal on `id`'s QP, once per connection.
	void count_key_refusal(rdma_cm_id *id, const char *how);
	void on_connect_request(rdma_cm_id *id, const void *data, uint8_t len);
	// What the token was handed with; nullopt if unknown, used or expired.
	std::optional<Token> take_token(const uint8_t *token);

	ModuleStore *store_ = nullptr;
	ModuleService *service_ = nullptr;
	store::Geometry geo_;
	uint8_t *base_ = nullptr;
	std::string endpoint_;

	rdma_event_channel *events_ = nullptr;
	rdma_cm_id *listen_id_ = nullptr;
	ibv_pd *pd_ = nullptr;
	ibv_cq *cq_ = nullptr; // shared by the passive QPs; nothing is posted
	int stop_fd_ = -1;
	std::thread thread_;

	mutable std::mutex mu_;
	std::map<uint32_t, RegionMrs> mrs_; // guarded by mu_; by region id
	// Bumped by each revoke(): a registration made while one ran is dropped.
	uint64_t revoke_epoch_ = 0;                                         // guarded by mu_
	std::map<std::array<uint8_t, wire::kRdmaTokenSize>, Token> tokens_; // guarded by mu_
	std::unique_ptr<RdmaWriteReceiver> writes_;
	std::map<rdma_cm_id *, Conn> conns_;                                // cm thread only
	Counters counters_;                                                 // guarded by mu_
};

} // namespace memfed
