// RdmaServer: the module side of the RDMA transport (issue 12, step 1).
//
// Design. A module that listens for RDMA (memfedd --rdma-listen ADDR) keeps
// serving everything over its TLS TcpServer; RDMA only adds one-sided reads
// of its pool, which cost the module's CPU nothing:
//   - Registration: ONE memory region covers the pool from the start of its
//     meta area to the end of its data area (daemon/store/layout.h), with
//     IBV_ACCESS_REMOTE_READ only. Nothing is ever registered for remote
//     write or atomics: every write goes through the module's durable
//     redo-log path (over TLS, or SENT on the queue pair: below). Pages never move, so the remote
//     address of a page is fixed (pool_addr + FA offset) and its PageMeta (version, crc) lies in
//     the same registration, for the reader's torn-read check.
//   - Hand-out: the key, the pool's address and geometry and a one-time
//     connect token go out only in answer to RDMA_CONNECT over TLS, and
//     only to an authenticated peer (ConnInfo::authenticated); the extent
//     of a region only in answer to RDMA_REGION, from the region table.
//   - Connection: rdma_cm, one RC queue pair per pager channel. The connect
//     request's private data must be a WireRdmaHello carrying an unexpired
//     token this server handed out (each token works once, for 30 s);
//     anything else (wrong size, magic, version, unknown token) is rejected
//     and counted. The module posts on it only the receives and answers
//     of write-back (below).
//   - Revocation by deregistration, not memory windows: after a region is
//     deleted or shrunk (reregister(), called by ModuleService once the
//     freed pages are zeroed) the whole pool is registered again and the
//     old registration dropped, so every key handed out before dies: a read
//     with it fails on the responder (remote access error), the reader's QP
//     breaks and it falls back to TCP, whose answer is authoritative, and
//     it fetches the new key. Why not memory windows: soft-RoCE's type-2
//     windows would give per-region keys, but a pool *file* frees space by
//     punching holes, and a registration pins the pages it was made over:
//     the punched pages stay pinned under the old registration, holding the
//     old bytes, while the file gets fresh zero pages. Only a new
//     registration reaches the new pages, so a window bound to the old one
//     could not show the zeros anyway. Cost: a delete re-pins the pool.
// Limitations of this step, named: one key for the whole pool, so an
// authenticated peer holding it can read any region's pages (the reader
// checks extents; the module does not check per region); a region freed
// through the module node's own control socket (not through ModuleService)
// does not re-register (its punched pages stay pinned with their old bytes,
// which fail the readers' crc check against the zeroed or rewritten meta,
// so those reads end on TCP); RoCE packets are neither encrypted nor
// authenticated, so RDMA is for networks where that is acceptable.
//
// Write-back over RDMA (issue 12, item 4): the queue pairs also carry
// two-sided writes, received and applied through the ModuleService by the
// RdmaWriteReceiver (rdma_write_receiver.h); a token remembers the TLS
// connection (and its loop) that got it, and the queue pair connected with
// it keeps that identity. RDMA_FENCE from a connection fences its queue
// pairs. Still nothing is registered for remote write.
//
// Thread-safety: handle() runs on the TcpServer's loop thread; the rdma_cm
// events are handled on this server's own thread; reregister() and the
// accessors may run on any thread.
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
#include <set>
#include <string>
#include <thread>

#include "daemon/rdma/rdma_write_receiver.h"
#include "daemon/store/layout.h"
#include "daemon/store/pool.h"
#include "daemon/transport/tcp_server.h"

namespace memfed
{

class RdmaServer : public RequestHandler
{
public:
	struct Counters {
		uint64_t connections = 0; // accepted
		uint64_t refused = 0;     // connect requests or key requests refused
		uint64_t reregistrations = 0;
		RdmaWriteReceiver::Counters writes; // write-back over RDMA
	};

	// Listens with rdma_cm on `host_port` (an address of an RDMA device; port
	// 0 picks one) and registers `store`'s pool. Requests other than
	// RDMA_CONNECT / RDMA_REGION go to `inner` (the ModuleService), which
	// must outlive the server, as must `store`.
	static Result<std::unique_ptr<RdmaServer>>
	listen(const std::string &host_port, ModuleStore *store, RequestHandler *inner);
	~RdmaServer() override;
	RdmaServer(const RdmaServer &) = delete;
	RdmaServer &operator=(const RdmaServer &) = delete;

	void handle(const ConnInfo &conn, const wire::Header &req, std::span<const uint8_t> payload,
	            Reply &reply) override;
	// Registers the pool anew and drops the old registration: every key
	// handed out so far stops working. Call after pages were freed.
	Status reregister();

	std::string endpoint() const { return endpoint_; }
	uint32_t rkey() const; // 0 while the pool is not registered
	Counters counters() const;
	// Test only: the write receiver (its test hook).
	RdmaWriteReceiver *writes_for_test() { return writes_.get(); }

private:
	RdmaServer() = default;
	Status register_pool();
	void cm_main();
	void on_connect_request(rdma_cm_id *id, const void *data, uint8_t len);
	// The identity the token was handed to; nullopt if unknown, used or expired.
	std::optional<RdmaWriteReceiver::Identity> take_token(const uint8_t *token);
	struct Token {
		std::chrono::steady_clock::time_point expires;
		RdmaWriteReceiver::Identity who;
	};

	ModuleStore *store_ = nullptr;
	RequestHandler *inner_ = nullptr;
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
	ibv_mr *mr_ = nullptr;                                              // guarded by mu_
	std::map<std::array<uint8_t, wire::kRdmaTokenSize>, Token> tokens_; // guarded by mu_
	std::unique_ptr<RdmaWriteReceiver> writes_;
	std::set<rdma_cm_id *> conns_; // cm thread only
	Counters counters_;            // guarded by mu_
};

} // namespace memfed
