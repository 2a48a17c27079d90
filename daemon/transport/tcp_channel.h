// TcpChannel: a Channel (channel.h) to one module over TCP, driven by an
// EventLoop's io_uring.
//
// connect() opens the socket (TCP_NODELAY) and does the HELLO exchange with
// blocking I/O (a control-path step, bounded by a timeout); afterwards all
// I/O goes through the loop. Requests get a slot in a preallocated table
// (request_id = slot index + generation), so the steady path allocates
// nothing. Each traffic class has its own send queue and every send batch
// is filled fault-class first, so a fault never queues behind bulk work in
// the channel (it can still wait for the one batch already in the kernel,
// which is capped at kMaxBatchBytes).
//
// READ responses normally arrive in the order the requests went out. While
// they do, a receive scatters each expected response's header into a
// buffer of its own and its pages straight into the caller's dst, so the
// pages are never copied in user space ("landing"). A response that arrives
// out of that order (deferred by the module, an error, a control reply)
// ends the landing: the bytes received so far move to a receive buffer in
// order, responses are parsed from there, and a READ's pages are copied
// into dst (or, when most of a large payload is still on its way, received
// into it). Landing resumes once that buffer is empty. The payload crc is
// checked before completion; until a request completes successfully its dst
// holds unspecified bytes (another response's bytes may land there first).
//
// Over TLS (Options::tls; the normal case between nodes): connect() runs
// the version gate, the TLS 1.3 handshake and the HELLO through SyncClient,
// then the channel takes over the session. Each send batch is encrypted as
// a whole (small pieces gathered into full records) into one send buffer.
// Received records are decrypted a response at a time: headers (and
// control payloads) into the receive buffer, and once a READ response's
// header is parsed, its pages straight into dst (a record is opened in
// place there, one pass from the receive buffer into the page; its tag is
// checked before the request can complete). Landing is off under
// TLS (ciphertext cannot be scattered by the kernel). A record that
// fails its authentication tag (bytes altered in transit) breaks the
// connection: every pending request completes with kUnavailable, so no
// page of a damaged record is ever handed to a caller as data. The session rekeys on its
// byte and time limits (tls_context.h).
//
// A module that stops answering without closing the connection (stopped,
// hung, a path that drops everything) is found by Options::request_timeout_ms:
// when requests wait and nothing at all has been received for that long, the
// connection is treated as lost. It is a silence timer for the connection,
// not a deadline per request: a module answering slowly is not cut off.
//
// On connection loss (peer closed, I/O error, protocol violation by the
// peer, the silence timer) every pending request completes with kUnavailable and later requests
// complete with kUnavailable on the next loop iteration. A request the wire
// protocol does not allow (count 0 or over kMaxPagesPerRequest, an unaligned
// offset, an unknown type or class) is not sent: it completes with
// kInvalidArgument on the next loop iteration and the connection stays up.
//
// Sequenced writes (Options::session, request_session.h): each WRITE and
// WRITE_VERSIONED carries the session's next sequence number (a
// WireSequence before its payload), so the module never applies it twice
// and refuses it if it arrives after the session moved to a newer
// connection (daemon/service/session_cache.h). Reads are never sequenced.
//
// Thread-safety: connect() may run on any thread; everything else, including
// destruction and all completions, runs on the loop thread.
//
// Destruction completes pending requests with kUnavailable. While the
// channel still has I/O in the kernel, the destructor runs the loop
// (run_once) until the kernel has let go of the channel's and the callers'
// buffers, so other components' completions may run inside it. A broken
// channel (connected() false, its requests completed) has nothing in flight
// and is destroyed without running the loop. REQUIRES: destroyed on the loop
// thread or while the loop is not running, never from one of its own
// completions.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "daemon/transport/byte_buffer.h"
#include "daemon/transport/channel.h"
#include "daemon/transport/event_loop.h"
#include "daemon/transport/request_session.h"
#include "daemon/trust/tls_session.h"

namespace memfed
{

class TcpChannel : public Channel
{
public:
	struct Options {
		uint32_t capabilities = 0;    // announced in our HELLO
		unsigned initial_slots = 256; // grows (allocating) if exceeded
		int connect_timeout_ms = 5000;
		// This node's TLS; null: plaintext (tests, benchmark baseline).
		std::shared_ptr<trust::TlsContext> tls;
		// The DSCP the connection's packets carry, both ways (dscp.h).
		// A pager opens one connection per class (class_channel.h); a
		// TcpChannel still carries requests of any class it is given.
		wire::TrafficClass conn_class = wire::TrafficClass::kFault;
		// Requests wait and nothing is received for this long: the
		// connection is lost. 0: wait forever.
		unsigned request_timeout_ms = 0;
		// The write session (request_session.h) this connection carries:
		// every WRITE and WRITE_VERSIONED is sent sequenced in it. Given
		// back (RequestSession::release) when the channel breaks or is
		// destroyed. Null: writes go unsequenced.
		std::shared_ptr<RequestSession> session;
	};
	static constexpr size_t kMaxBatchBytes = 256 * 1024;

	static Result<std::unique_ptr<TcpChannel>>
	connect(EventLoop *loop, const std::string &host_port, ModuleId self, Options opts);
	static Result<std::unique_ptr<TcpChannel>>
	connect(EventLoop *loop, const std::string &host_port, ModuleId self)
	{
		return connect(loop, host_port, self, Options());
	}
	~TcpChannel() override;

	const PeerInfo &peer() const override { return peer_; }
	bool connected() const override { return fd_ >= 0 && !broken_; }
	void read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                uint32_t count, void *dst, Completion *done) override;
	void write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                 uint32_t count, const void *src, Completion *done) override;
	void call(const wire::Header &hdr, std::span<const uint8_t> payload,
	          Completion *done) override;
	void write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
	                     uint32_t count, const wire::WireVersionedWrite &prefix,
	                     const void *src, Completion *done) override;

	// Requests sent or queued and not yet completed.
	size_t in_flight() const { return in_flight_; }
	// READ payload bytes received straight into callers' buffers (the rest
	// were copied there from the receive buffer).
	uint64_t bytes_received_into_dst() const { return bytes_into_dst_; }
	// Closes the connection as if the peer had gone: pending requests
	// complete with kUnavailable.
	void close();
	// The write session it carries (Options::session; null once broken).
	// Another path to the same module that this channel's writes are
	// ordered with (RdmaChannel's write SENDs) may number writes in it.
	RequestSession *session() const { return session_.get(); }
	// Sends a write again as `seq` of the session, with kFlagRetry: WRITE
	// of `count` pages from `src`, or WRITE_VERSIONED if `prefix` is not
	// null. The module answers it from its session cache if it applied it
	// before, and applies it only if it never did and nothing newer of the
	// session was applied since (session_cache.h). REQUIRES: session()
	// sent `seq` (else it completes with kInvalidArgument).
	void retry_write(uint64_t seq, wire::TrafficClass tc, uint32_t region_id,
	                 uint64_t fa_offset, uint32_t count, const wire::WireVersionedWrite *prefix,
	                 const void *src, Completion *done);

private:
	class SendOp;
	class RecvOp;
	class TimerOp;
	struct Slot;

	TcpChannel(EventLoop *loop, int fd, PeerInfo peer, ModuleId self, unsigned slots,
	           std::unique_ptr<trust::TlsSession> tls, unsigned request_timeout_ms,
	           std::shared_ptr<RequestSession> session);
	// Sends a WRITE (prefix empty) or WRITE_VERSIONED, sequenced as `seq`
	// (0: the session's next) when the channel carries a session.
	void send_write(wire::Header &h, std::span<const uint8_t> prefix, const void *src,
	                uint64_t seq, bool retry, Completion *done);
	bool tls_send();
	bool tls_receive(size_t n);
	uint32_t alloc_slot();
	void enqueue(wire::Header &h, std::span<const uint8_t> payload, const void *pages,
	             void *dst, Completion *done);
	void arm_timer(uint64_t in_ns);
	void on_timer(int res);
	void fail_later(Completion *done, uint8_t type, Status st);
	void kick_send();
	void on_send(int res);
	void arm_recv();
	void on_recv(int res);
	bool deliver(size_t n);
	bool plan_landing();
	bool land(size_t n);
	void unland();
	bool parse_responses();
	Status check_pages(const wire::Header &h, std::span<const uint8_t> pages);
	void finish(uint32_t idx, const Status &st, const wire::Header &h,
	            std::span<const uint8_t> payload);
	void broken(const std::string &why);
	void maybe_finish_close();

	EventLoop *loop_;
	int fd_;
	PeerInfo peer_;
	std::shared_ptr<RequestSession> session_;
	ModuleId self_;
	bool broken_ = false;
	std::string unavailable_why_;
	size_t in_flight_ = 0;

	std::vector<std::unique_ptr<Slot>> slots_; // Slots never move
	std::vector<uint32_t> free_;
	// Per-class FIFO of slot indices waiting to be sent.
	struct Queue {
		std::vector<uint32_t> items;
		size_t head = 0;
		bool empty() const { return head == items.size(); }
	};
	Queue queues_[wire::kTrafficClassMax + 1];

	std::unique_ptr<SendOp> send_op_;
	bool sending_ = false;
	std::vector<iovec> iov_;
	// Header-only requests of the batch in the kernel, back to back
	// (reserved for kMaxIov headers: never reallocates under a send).
	std::vector<uint8_t> hdr_batch_;
	size_t iov_at_ = 0;

	std::unique_ptr<RecvOp> recv_op_;
	bool recv_armed_ = false;

	// The silence timer (request_timeout_ms): armed while requests wait.
	std::unique_ptr<TimerOp> timer_op_;
	uint64_t timeout_ns_;
	unsigned timer_cqes_ = 0;                // timeout and timeout-remove CQEs to come
	bool timer_armed_ = false;               // a timeout is in the kernel, not removed
	uint64_t last_heard_ns_ = 0;             // the last receive, or the wait's start
	bool confirming_ = false;                // a silence seen once, checked again
	bool in_recv_ = false;                   // completing responses: batch new sends
	std::unique_ptr<trust::TlsSession> tls_; // null: plaintext
	ByteBuffer tls_tx_;                      // records being sent
	size_t tls_sent_ = 0;
	ByteBuffer rx_;
	// Receiving a READ payload straight into the caller's buffer.
	uint32_t direct_slot_ = UINT32_MAX;
	wire::Header direct_hdr_{};
	size_t direct_done_ = 0;
	uint64_t bytes_into_dst_ = 0;

	// READs on the wire, in the order sent (entries already answered are
	// skipped when met): the order their responses are expected in.
	struct Sent {
		uint32_t idx;
		uint64_t request_id;
	};
	std::vector<Sent> sent_;
	size_t sent_head_ = 0;
	// The landing plan: expected READ responses, oldest first, each with
	// the bytes of it received so far.
	struct Landing {
		Landing(uint32_t i, uint64_t id, size_t n) : idx(i), request_id(id), len(n) {}
		uint32_t idx;
		uint64_t request_id;
		size_t len;                     // payload bytes expected
		size_t hdr_done = 0;            // header bytes received into hdr
		size_t pay_done = 0;            // payload bytes received into the slot's dst
		bool matched = false;           // the header is this request's success response
		uint8_t hdr[wire::kHeaderSize]; // hdr_done bytes of it are valid
	};
	std::vector<Landing> landing_;
	size_t land_head_ = 0;
	bool landing_recv_ = false; // the armed receive scatters into landing_
	std::vector<iovec> rx_iov_;
	msghdr rx_msg_{};
};

} // namespace memfed
