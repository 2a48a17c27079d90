// RdmaWriteReceiver: the module side of write-back over RDMA (issue 12,
// item 4). It owns the receive side of the RdmaServer's queue pairs.
//
// Two-sided, by SEND of the whole message, not RDMA WRITE into a staging
// ring plus a commit SEND: a SEND lands in a buffer the module chose and
// posted for exactly one message, so nothing of the module is ever
// registered for remote write (neither pool pages nor a ring whose slots a
// buggy or hostile peer could overwrite while the module reads them), the
// message arrives whole or not at all (no commit protocol, no ring
// indices to validate), and one SEND is one round trip, like a ring write
// plus its commit. Its cost is a receive buffer per write in flight per
// queue pair (kDepth * 1 MiB): bounded, and the module copies the pages
// out of it at once (the write path keeps its own copy), so the buffer is
// posted again before the write is even durable.
//
// What a SEND carries, and its answer: protocol.h ("Write-back over RDMA").
// Each received message is validated whole (codec.h decode_rdma_write:
// length against the header, header and payload crcs, type, count against
// payload length); the region id, offset and range, the versioned prefix and
// the rights are checked by the ModuleService as for a TCP request. A
// malformed message is answered with kProtocol (echoing its request id when
// it has a header), counted, logged at most once a second, and nothing of it
// is applied; the queue pair stays up. A message too long for the receive
// buffer fails in the device (a local length error): the queue pair breaks,
// the peer falls back to TCP, and that too is counted and logged.
//
// The same path as TCP: each message is handed, on the EventLoop of the TLS
// connection whose RDMA_CONNECT got the queue pair's token (Identity), to
// the RequestHandler (the ModuleService) with that connection's ConnInfo,
// so the authenticated peer key is the one whose rights are checked, and
// the write is deferred to the writer thread, group-committed with the TCP
// writes (redo log, page versions) and answered once durable, by a SEND
// from whichever thread completes it.
//
// Fencing (RDMA_FENCE): a pager whose RDMA side broke sends RDMA_FENCE over
// that TLS connection before it re-issues its unanswered writes over TCP.
// fence() (on that loop) marks every queue pair of the connection fenced;
// a message of a fenced queue pair that reaches the loop after that is
// dropped, never applied (so is one whose queue pair is gone: its peer
// re-issues or fails every write it has no answer for). A message handed to the handler before the
// fence is queued on the writer before the re-issued copy, which rewrites the same bytes. So a
// write is applied once in effect either way: never after the re-issued copy or a newer write that
// follows it (rdma_channel.h).
//
// Thread-safety: attach(), detach() on the RdmaServer's cm thread; fence()
// on a TLS connection's loop; the receiver's own thread polls the
// completion queue; answers are sent from any thread. REQUIRES: the loops
// of the identities stop before the receiver is destroyed.
#pragma once

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "daemon/common/ids.h"
#include "daemon/transport/event_loop.h"
#include "daemon/transport/tcp_server.h"

namespace memfed
{

class RdmaWriteReceiver
{
public:
	// Receives posted per queue pair: the writes a peer may have unanswered.
	static constexpr uint32_t kDepth = 4;

	// Who a queue pair belongs to: the TLS connection that got its token.
	struct Identity {
		ConnInfo conn;
		EventLoop *loop = nullptr; // that connection's loop
	};
	struct Counters {
		uint64_t writes = 0;    // WRITE / WRITE_VERSIONED received and answered OK
		uint64_t pages = 0;     // their pages
		uint64_t failed = 0;    // answered with an error by the write path
		uint64_t malformed = 0; // refused by validation (kProtocol), or too long
		uint64_t dropped = 0;   // not applied: their queue pair was fenced or is gone
		uint64_t qp_errors = 0; // receives or answers that failed in the device
	};

	static Result<std::unique_ptr<RdmaWriteReceiver>>
	create(ibv_context *verbs, ibv_pd *pd, ModuleId self, RequestHandler *inner);
	~RdmaWriteReceiver();
	RdmaWriteReceiver(const RdmaWriteReceiver &) = delete;
	RdmaWriteReceiver &operator=(const RdmaWriteReceiver &) = delete;

	// Fills the queue pair attributes a connection needs (CQs, depths).
	void init_qp_attr(ibv_qp_init_attr *qa) const;
	// After rdma_create_qp, before rdma_accept: registers the connection's
	// buffers and posts its receives.
	Status attach(rdma_cm_id *id, Identity who);
	// Destroys the connection's queue pair (instead of rdma_destroy_qp):
	// nothing is posted on it afterwards, answers still due are dropped.
	void detach(rdma_cm_id *id);
	// RDMA_FENCE from `conn` (on its loop): its queue pairs are fenced.
	void fence(const ConnInfo &conn);
	Counters counters() const;
	// Test only: runs on the receiver's thread before each received
	// message is handed to its loop (a test holds messages there to show
	// that a fence drops them).
	void set_receive_hook_for_test(std::function<void()> hook);

private:
	struct Conn;
	RdmaWriteReceiver() = default;
	void main();
	void on_wc(const ibv_wc &wc);
	// On the connection's loop: validate and hand message `idx` on.
	void process(const std::shared_ptr<Conn> &c, uint32_t idx, uint32_t len);
	void repost(Conn &c, uint32_t idx);
	void answer(uint64_t serial, const wire::Header &req, Code code,
	            std::span<const uint8_t> payload);
	void send_locked(Conn &c, std::vector<uint8_t> msg);
	// Logs at most one line a second per kind (a message refused by
	// validation; a device-level error), counting the lines left out.
	void refused(const char *what, const std::string &why, bool device = false);
	std::shared_ptr<Conn> find(uint64_t serial);

	RequestHandler *inner_ = nullptr;
	ModuleId self_;
	ibv_pd *pd_ = nullptr;
	ibv_comp_channel *comp_ = nullptr;
	ibv_cq *cq_ = nullptr;
	int stop_fd_ = -1;
	std::thread thread_;
	std::shared_ptr<DeferredTarget> target_;
	// What the sink reaches: cleared by the destructor, so an answer that
	// comes after it (a DeferredReply outliving the receiver) is dropped.
	struct Alive {
		std::mutex mu;
		RdmaWriteReceiver *r = nullptr;
	};
	std::shared_ptr<Alive> alive_ = std::make_shared<Alive>();

	mutable std::mutex mu_;
	uint64_t next_serial_ = 1;                        // guarded by mu_
	std::map<uint64_t, std::shared_ptr<Conn>> conns_; // by serial; guarded by mu_
	Counters counters_;                               // guarded by mu_
	std::function<void()> receive_hook_;              // guarded by mu_
	struct Limit {
		std::chrono::steady_clock::time_point last{};
		uint64_t unlogged = 0;
	};
	Limit limits_[2]; // guarded by mu_: [0] refused messages, [1] device errors
};

} // namespace memfed
