// TcpServer: the module side of the TCP wire transport.
//
// Listens on host:port, accepts any number of connections and, per
// connection, reads wire messages, validates each header and payload
// (codec.h), and hands every valid request to a RequestHandler. Responses are
// queued on the connection and written while the next requests are read
// (pipelining); requests of one connection are handled in order, connections
// are independent. A peer that breaks the protocol is disconnected with one
// LOG_WARN naming the peer and the reason; a request that failed validation
// never reaches the handler.
//
// With a TlsContext in the ServerIdentity (the normal case between nodes),
// a connection follows protocol.h's sequence: the plaintext version gate
// (a HELLO answered with kCapTls; a peer older than wire version 3 gets an
// error naming the upgrade, then the connection closes), the TLS 1.3
// handshake (the peer's key must be trusted, tls_context.h), then
// everything below inside TLS: received records are decrypted into the
// receive buffer and parsed as in plaintext, responses are encrypted as
// they are sent. No request is served outside TLS. Without a TlsContext
// the connection is plaintext from the first byte (framing tests, the
// benchmark's baseline).
//
// HELLO is answered by the server itself from the ServerIdentity given at
// construction: the first message on a connection must be a HELLO request,
// sent within the HELLO timeout (which bounds the gate and the TLS
// handshake too);
// the server picks the highest version both sides speak (none in common: an
// error response, then close) and answers with the identity's module ID,
// capabilities and capacity. Every later request must carry the negotiated
// version. The handler sees every other request, with the peer's module ID
// (the HELLO's src_module) in ConnInfo.
//
// A handler may defer a request (Reply::defer(), e.g. a WRITE handed to a
// thread that persists it) and answer it later from any thread through the
// DeferredReply; the connection keeps reading and answering later requests
// meanwhile, so responses may leave out of request order (clients match them
// by request_id). Deferred requests count against the connection's
// backpressure limit.
//
// Thread-safety: all methods, and all handler calls, run on the loop thread,
// except DeferredReply::complete(), which any thread may call.
// REQUIRES: destroyed on the loop thread or when the loop is not running,
// not from a handler call (the destructor runs the loop until every
// operation of the server has completed, so other components' completions
// may run inside it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <unordered_map>

#include "daemon/common/ids.h"
#include "daemon/common/status.h"
#include "daemon/transport/byte_buffer.h"
#include "daemon/transport/event_loop.h"
#include "daemon/trust/tls_context.h"
#include "daemon/wire/protocol.h"

namespace memfed
{

// What the handler knows about the peer that sent a request.
struct ConnInfo {
	// Connection number, unique in the process and growing: a connection
	// accepted later (by any TcpServer of the process) has a larger one.
	uint64_t id = 0;
	std::string peer;          // "ip:port", for logs
	ModuleId module;           // src_module of the peer's HELLO
	uint32_t capabilities = 0; // from the peer's HELLO
	uint8_t version = 0;       // negotiated wire version
	// Over TLS: the peer's authenticated key and its name in TrustedPeers
	// ("" if none, or for this node's own key). Authorize by these.
	bool authenticated = false;
	trust::PublicKey peer_key{};
	std::string peer_name;
};

class TcpServer;

// Shared by a TcpServer and its outstanding DeferredReplies: lets a reply
// completed after the server is gone be dropped safely.
struct DeferredTarget;

// A server other than TcpServer that hands requests to a RequestHandler
// (the RDMA write receiver, daemon/rdma/rdma_write_receiver.h) gets its
// deferred answers through a sink: called on the thread that completes the
// DeferredReply, with the connection id the Reply was made with, the
// request, and the answer (the status message if it failed).
using DeferredSink = std::function<void(uint64_t conn_id, const wire::Header &req, Code code,
                                        std::span<const uint8_t> payload)>;
std::shared_ptr<DeferredTarget> make_deferred_sink(DeferredSink sink);

// A request whose response is given later (Reply::defer()). Move-only. A
// DeferredReply destroyed without complete() answers kInternal, so a request
// is never left unanswered.
class DeferredReply
{
public:
	DeferredReply() = default;
	DeferredReply(DeferredReply &&o) noexcept = default;
	DeferredReply &operator=(DeferredReply &&o) noexcept;
	DeferredReply(const DeferredReply &) = delete;
	DeferredReply &operator=(const DeferredReply &) = delete;
	~DeferredReply();

	bool valid() const { return target_ != nullptr; }
	const wire::Header &request() const { return req_; }
	// Sends the response, from any thread: `st`'s code and message if it
	// failed, else OK with `payload` (copied; <= kMaxPayload). Dropped if
	// the connection or the server is gone by then. At most once; the
	// DeferredReply is invalid afterwards.
	void complete(const Status &st, std::span<const uint8_t> payload = {});

private:
	friend class Reply;
	std::shared_ptr<DeferredTarget> target_;
	uint64_t conn_id_ = 0;
	wire::Header req_{};
};

// The response to one request, filled by the handler. Starts as OK with an
// empty payload, count/offset/region_id echoing the request.
//
// The payload lives in the connection's send buffer, which is reused across
// requests: a READ handler calls payload_buffer(count * kPageSize) and writes
// the pages there, so the steady-state READ path allocates nothing.
class Reply
{
public:
	// A writable payload of exactly `len` bytes (<= kMaxPayload), replacing
	// any earlier one. Valid until handle() returns.
	std::span<uint8_t> payload_buffer(size_t len);
	// Copies `bytes` as the payload.
	void set_payload(std::span<const uint8_t> bytes);
	// The crc32c of the final payload, when the handler knows it without
	// reading the payload (e.g. combined from crcs stored with the pages):
	// the server then does not compute it. A later payload_buffer(),
	// set_payload() or fail() forgets it.
	void set_payload_crc(uint32_t crc)
	{
		payload_crc_ = crc;
		has_payload_crc_ = true;
	}
	// Fails the request: the payload becomes the status message (the
	// code travels in the header's status field).
	void fail(const Status &st);

	// Whether defer() is allowed (false for in-process callers that need
	// the answer inline).
	bool can_defer() const { return target_ != nullptr; }
	// Defers the response: handle() returns without one, and the request
	// is answered when the returned DeferredReply completes. REQUIRES:
	// can_defer(); nothing else is done with this Reply afterwards.
	DeferredReply defer();
	bool deferred() const { return deferred_; }

	bool ok() const { return code_ == Code::kOk; }
	Code code() const { return code_; }
	size_t payload_len() const { return payload_len_; }

	uint32_t count = 0;
	uint64_t offset = 0;
	uint32_t region_id = 0;

private:
	friend class TcpServer;
	friend class LocalChannel;      // serves in-process requests through the same handler
	friend class RdmaWriteReceiver; // serves RDMA write SENDs through the same handler
	Reply(ByteBuffer *out, size_t payload_at) : out_(out), payload_at_(payload_at) {}
	ByteBuffer *out_;
	size_t payload_at_; // offset of the payload in out_'s readable bytes
	size_t payload_len_ = 0;
	Code code_ = Code::kOk;
	uint32_t payload_crc_ = 0;
	bool has_payload_crc_ = false;
	// Set by the TcpServer: where defer() sends the answer.
	const std::shared_ptr<DeferredTarget> *target_ = nullptr;
	uint64_t conn_id_ = 0;
	const wire::Header *req_ = nullptr;
	bool deferred_ = false;
};

class RequestHandler
{
public:
	virtual ~RequestHandler() = default;
	// Called on the loop thread for each validated request (never HELLO).
	// Fill `reply` (status, count, offset, payload). Must not block long.
	virtual void handle(const ConnInfo &conn, const wire::Header &req,
	                    std::span<const uint8_t> payload, Reply &reply) = 0;
};

// What the server announces in its HELLO response.
struct ServerIdentity {
	ModuleId module;
	uint32_t capabilities = wire::kCapModule;
	uint64_t capacity_bytes = 0;
	// TLS for every connection; null: plaintext (tests, benchmark baseline).
	std::shared_ptr<trust::TlsContext> tls;
};

class TcpServer
{
public:
	// Listens on `host_port` ("127.0.0.1:7700"; port 0 picks a free port,
	// see port()). kBusy if the port is taken. `handler` must outlive the
	// server.
	static Result<std::unique_ptr<TcpServer>> listen(EventLoop *loop,
	                                                 const std::string &host_port,
	                                                 const ServerIdentity &identity,
	                                                 RequestHandler *handler);
	~TcpServer();
	TcpServer(const TcpServer &) = delete;
	TcpServer &operator=(const TcpServer &) = delete;

	uint16_t port() const { return port_; }
	// "host:port" actually bound.
	std::string endpoint() const;
	size_t connections() const { return conns_.size(); }
	// A connection that has not sent its HELLO within `ms` (default 10 s)
	// is closed with a warning; 0 disables. Applies to new connections.
	void set_hello_timeout_ms(int ms) { hello_timeout_ms_ = ms; }

private:
	class AcceptOp;
	class Conn;
	friend class Conn;
	friend class AcceptOp;

	// Out of line: the unique_ptr members need complete types.
	TcpServer(EventLoop *loop, const ServerIdentity &id, RequestHandler *h);
	void arm_accept();
	void on_accept(int res);
	void reap(Conn *c);
	// On the loop thread: sends a deferred request's response.
	void deliver(uint64_t conn_id, const wire::Header &req, Code code,
	             std::span<const uint8_t> payload);
	friend class DeferredReply;

	EventLoop *loop_;
	ServerIdentity identity_;
	std::set<std::string> duplicates_logged_; // keys refused as a second pool of our ID
	RequestHandler *handler_;
	std::string host_;
	uint16_t port_ = 0;
	int listen_fd_ = -1;
	std::unique_ptr<AcceptOp> accept_op_;
	bool accept_armed_ = false;
	bool accept_starved_ = false; // out of fds: warned, pausing between tries
	bool closing_ = false;
	int hello_timeout_ms_ = 10000;
	std::unordered_map<Conn *, std::unique_ptr<Conn>> conns_;
	std::unordered_map<uint64_t, Conn *> by_id_; // for deferred replies
	std::shared_ptr<DeferredTarget> deferred_target_;
};

} // namespace memfed
