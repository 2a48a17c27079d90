#include "daemon/transport/tcp_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "daemon/common/log.h"
#include "daemon/transport/dscp.h"
#include "daemon/transport/endpoint.h"
#include "daemon/trust/tls_session.h"
#include "daemon/wire/codec.h"

namespace memfed
{

namespace
{
constexpr const char *kComp = "tcp_server";
// Receive chunk: many pipelined requests per recv.
constexpr size_t kRecvChunk = 64 * 1024;
// Stop reading a connection whose unsent replies exceed this; resume once
// they are written (a peer that never reads cannot make us buffer forever).
constexpr size_t kSendHighWater = 4 * 1024 * 1024;
// Likewise for the requests of a connection deferred and not yet answered
// (their payloads are held by the handler).
constexpr size_t kDeferHighWater = 8 * 1024 * 1024;

// What a deferred request holds against its connection's limit.
size_t defer_cost(const wire::Header &req)
{
	size_t c = wire::kHeaderSize + req.payload_len;
	if (req.type == static_cast<uint8_t>(wire::MsgType::kRead))
		c += size_t{req.count} * wire::kPageSize;
	return c;
}

// What a peer whose HELLO offers no version this module speaks is told.
std::string version_refusal(const wire::HelloRequest &req)
{
	if (req.max_version < wire::kWireMinVersion)
		return "wire version " + std::to_string(req.max_version) +
		       " is refused: this module requires version " +
		       std::to_string(wire::kWireMinVersion) +
		       " (authenticated and encrypted); upgrade the peer";
	return "no common wire version: peer speaks " + std::to_string(req.min_version) + ".." +
	       std::to_string(req.max_version) + ", this module " +
	       std::to_string(wire::kWireMinVersion) + ".." + std::to_string(wire::kWireVersion);
}
} // namespace

struct DeferredTarget {
	std::mutex mu;
	TcpServer *srv = nullptr; // null once the server is being destroyed
	EventLoop *loop = nullptr;
	DeferredSink sink; // set: answers go there instead (make_deferred_sink)
};

std::shared_ptr<DeferredTarget> make_deferred_sink(DeferredSink sink)
{
	auto t = std::make_shared<DeferredTarget>();
	t->sink = std::move(sink);
	return t;
}

DeferredReply Reply::defer()
{
	DeferredReply d;
	d.target_ = *target_;
	d.conn_id_ = conn_id_;
	d.req_ = *req_;
	deferred_ = true;
	return d;
}

DeferredReply &DeferredReply::operator=(DeferredReply &&o) noexcept
{
	if (this != &o) {
		if (valid())
			complete(Status(Code::kInternal, "deferred request dropped by the module"));
		target_ = std::move(o.target_);
		conn_id_ = o.conn_id_;
		req_ = o.req_;
	}
	return *this;
}

DeferredReply::~DeferredReply()
{
	if (valid())
		complete(Status(Code::kInternal, "deferred request dropped by the module"));
}

void DeferredReply::complete(const Status &st, std::span<const uint8_t> payload)
{
	std::shared_ptr<DeferredTarget> t = std::move(target_);
	if (!t)
		return;
	Code code = st.code();
	std::vector<uint8_t> bytes;
	if (code != Code::kOk) {
		size_t n = std::min(st.message().size(), wire::kMaxErrorMessage);
		bytes.assign(st.message().data(), st.message().data() + n);
	} else {
		bytes.assign(payload.begin(), payload.end());
	}
	if (t->sink)
		return t->sink(conn_id_, req_, code, bytes);
	std::lock_guard lk(t->mu);
	if (t->srv == nullptr)
		return;
	t->loop->post([t, id = conn_id_, req = req_, code, bytes = std::move(bytes)] {
		TcpServer *srv;
		{
			std::lock_guard lk2(t->mu);
			srv = t->srv;
		}
		if (srv != nullptr)
			srv->deliver(id, req, code, bytes);
	});
}

std::span<uint8_t> Reply::payload_buffer(size_t len)
{
	out_->truncate(payload_at_);
	uint8_t *p = out_->append(len);
	payload_len_ = len;
	has_payload_crc_ = false;
	return {p, len};
}

void Reply::set_payload(std::span<const uint8_t> bytes)
{
	auto dst = payload_buffer(bytes.size());
	if (!bytes.empty())
		std::memcpy(dst.data(), bytes.data(), bytes.size());
}

void Reply::fail(const Status &st)
{
	if (st.is_ok())
		return;
	code_ = st.code();
	size_t n = std::min(st.message().size(), wire::kMaxErrorMessage);
	set_payload({reinterpret_cast<const uint8_t *>(st.message().data()), n});
}

// The accept operation, or the pause before the next one when the process
// is out of file descriptors.
class TcpServer::AcceptOp : public IoOp
{
public:
	explicit AcceptOp(TcpServer *s) : srv_(s) {}
	void complete(int res, uint32_t) override
	{
		if (!pausing) {
			srv_->on_accept(res);
			return;
		}
		pausing = false;
		srv_->accept_armed_ = false;
		if (!srv_->closing_)
			srv_->arm_accept();
	}
	bool pausing = false;
	__kernel_timespec pause{0, 100 * 1000 * 1000};

private:
	TcpServer *srv_;
};

// One accepted connection. At most one recv and one send are in flight;
// replies accumulate in tx_[fill_] while tx_[1 - fill_] is being sent.
class TcpServer::Conn
{
public:
	Conn(TcpServer *srv, int fd, uint64_t id)
	    : srv_(srv), fd_(fd), recv_op_(this), send_op_(this)
	{
		info_.id = id;
		info_.peer = peer_name(fd);
	}
	~Conn()
	{
		if (fd_ >= 0)
			::close(fd_);
	}

	void start()
	{
		arm_recv();
		int ms = srv_->hello_timeout_ms_;
		if (ms > 0) {
			hello_op_.ts.tv_sec = ms / 1000;
			hello_op_.ts.tv_nsec = (ms % 1000) * 1000000LL;
			io_uring_sqe *s = srv_->loop_->sqe(&hello_op_);
			io_uring_prep_timeout(s, &hello_op_.ts, 0, 0);
			hello_armed_ = true;
			ops_++;
		}
	}
	// Stops all I/O; the server reaps the connection once its operations
	// have completed.
	void begin_close()
	{
		if (closing_)
			return;
		closing_ = true;
		shutdown(fd_, SHUT_RDWR);
		disarm_hello_timer();
	}
	bool idle() const { return ops_ == 0; }
	uint64_t id() const { return info_.id; }

private:
	struct RecvOp : IoOp {
		explicit RecvOp(Conn *c) : c(c) {}
		void complete(int res, uint32_t) override { c->on_recv(res); }
		Conn *c;
	};
	struct HelloTimerOp : IoOp {
		explicit HelloTimerOp(Conn *c) : c(c) {}
		void complete(int res, uint32_t) override { c->on_hello_timer(res); }
		Conn *c;
		__kernel_timespec ts{};
	};
	struct SendOp : IoOp {
		explicit SendOp(Conn *c) : c(c) {}
		void complete(int res, uint32_t) override { c->on_send(res); }
		Conn *c;
	};

	std::string who() const
	{
		std::string w = info_.peer;
		if (info_.module.valid())
			w += " (module " + info_.module.to_string() + ")";
		if (info_.authenticated)
			w += " key " +
			     trust::TrustedPeers::describe(info_.peer_key, info_.peer_name);
		return w;
	}

	bool tls_mode() const { return srv_->identity_.tls != nullptr; }

	void protocol_error(const Status &st)
	{
		LOG_WARN(kComp, "disconnecting %s: %s", who().c_str(), st.message().c_str());
		begin_close();
	}

	bool backpressured() const
	{
		return tx_[fill_].readable() >= kSendHighWater ||
		       deferred_bytes_ >= kDeferHighWater;
	}

	// After the peer's EOF: close once every complete request is answered
	// and the answers are sent.
	void close_if_done()
	{
		if (peer_eof_ && !closing_ && !sending_ && tx_[fill_].readable() == 0 &&
		    deferred_ == 0 && !(tls_ && tls_->output_pending()))
			begin_close();
	}

	void arm_recv()
	{
		if (closing_ || draining_ || peer_eof_ || recv_armed_ || backpressured())
			return;
		io_uring_sqe *s = srv_->loop_->sqe(&recv_op_);
		if (tls_) {
			// Ciphertext, into the session's input.
			ByteBuffer &in = tls_->input();
			in.ensure_writable(kRecvChunk);
			io_uring_prep_recv(s, fd_, in.write_ptr(), in.writable(), 0);
		} else {
			size_t want = kRecvChunk;
			if (have_hdr_ && hdr_.payload_len > rx_.readable())
				want = std::max(want, size_t{hdr_.payload_len} - rx_.readable());
			rx_.ensure_writable(want);
			io_uring_prep_recv(s, fd_, rx_.write_ptr(), rx_.writable(), 0);
		}
		recv_armed_ = true;
		ops_++;
	}

	void on_recv(int res)
	{
		recv_armed_ = false;
		ops_--;
		if (!closing_) {
			if (res == 0) {
				LOG_DEBUG(kComp, "%s closed the connection", who().c_str());
				// Maybe a half-close: answer what was received, then close.
				peer_eof_ = true;
				process();
				flush();
				close_if_done();
			} else if (res < 0) {
				LOG_INFO(kComp, "connection from %s lost: %s", who().c_str(),
				         strerror(-res));
				begin_close();
			} else if (tls_) {
				tls_->input().commit(res);
				drive_tls();
				flush();
				arm_recv();
			} else {
				rx_.commit(res);
				process();
				flush();
				arm_recv();
			}
		}
		settle();
	}

	void on_send(int res)
	{
		sending_ = false;
		ops_--;
		if (!closing_) {
			if (res < 0) {
				LOG_INFO(kComp, "sending to %s failed: %s", who().c_str(),
				         strerror(-res));
				begin_close();
			} else {
				sent_ += res;
				ByteBuffer &b = tx_[1 - fill_];
				if (sent_ < b.readable()) {
					submit_send();
				} else {
					b.clear();
					if (draining_) {
						flush();
						if (!sending_)
							begin_close();
					} else {
						process();
						flush();
						arm_recv();
						close_if_done();
					}
				}
			}
		}
		settle();
	}

	void disarm_hello_timer()
	{
		if (!hello_armed_)
			return;
		io_uring_sqe *s = srv_->loop_->sqe(nullptr);
		io_uring_prep_timeout_remove(s, reinterpret_cast<uint64_t>(&hello_op_), 0);
		hello_armed_ = false; // its completion (-ECANCELED) is still counted in ops_
	}

	void on_hello_timer(int res)
	{
		ops_--;
		if (res == -ETIME && hello_armed_ && !closing_ && !hello_done_) {
			hello_armed_ = false;
			LOG_WARN(kComp, "disconnecting %s: no HELLO within %d ms%s", who().c_str(),
			         srv_->hello_timeout_ms_,
			         !gate_done_ || !tls_mode()
			                 ? ""
			                 : (tls_ && tls_->established()
			                            ? " (after the TLS handshake)"
			                            : " (TLS handshake unfinished)"));
			begin_close();
		}
		hello_armed_ = false;
		settle();
	}

	// Last statement of every completion: may delete this.
	void settle()
	{
		if (closing_ && ops_ == 0)
			srv_->reap(this);
	}

	void flush()
	{
		if (sending_ || closing_)
			return;
		if (tls_) {
			// Replies are encrypted as they leave: tx_[fill_] holds
			// plaintext, tx_[1 - fill_] the records being sent.
			ByteBuffer &plain = tx_[fill_];
			if (plain.readable() > 0 && tls_->established()) {
				Status st = tls_->encrypt({plain.read_ptr(), plain.readable()});
				if (!st.is_ok())
					return protocol_error(st);
			}
			plain.clear();
			ByteBuffer &out = tx_[1 - fill_];
			out.clear();
			tls_->take_output(out);
			if (out.readable() == 0)
				return;
			sent_ = 0;
			submit_send();
			return;
		}
		if (tx_[fill_].readable() == 0)
			return;
		fill_ = 1 - fill_;
		sent_ = 0;
		submit_send();
	}

	void submit_send()
	{
		ByteBuffer &b = tx_[1 - fill_];
		io_uring_sqe *s = srv_->loop_->sqe(&send_op_);
		io_uring_prep_send(s, fd_, b.read_ptr() + sent_, b.readable() - sent_,
		                   MSG_NOSIGNAL);
		sending_ = true;
		ops_++;
	}

public:
	// The response to a deferred request of this connection.
	void deliver(const wire::Header &req, Code code, std::span<const uint8_t> payload)
	{
		deferred_--;
		deferred_bytes_ -= defer_cost(req);
		if (closing_)
			return;
		size_t start;
		Reply reply = begin_reply(req, &start);
		if (code == Code::kOk)
			reply.set_payload(payload);
		else
			reply.fail(Status(code, std::string(payload.begin(), payload.end())));
		finish_reply(req, start, reply);
		process();
		flush();
		arm_recv();
		close_if_done();
	}

private:
	// Handles every complete request in rx_, in order.
	void process()
	{
		while (!closing_ && !draining_ && !backpressured()) {
			if (!have_hdr_) {
				if (rx_.readable() < wire::kHeaderSize)
					return;
				Status st = wire::validate_header(
				        {rx_.read_ptr(), wire::kHeaderSize}, &hdr_);
				if (!st.is_ok())
					return protocol_error(st);
				if (hdr_.flags & wire::kFlagResponse)
					return protocol_error(
					        Status(Code::kProtocol,
					               std::string("sent a ") +
					                       wire::msg_type_name(hdr_.type) +
					                       " response to a server"));
				rx_.consume(wire::kHeaderSize);
				have_hdr_ = true;
			}
			if (rx_.readable() < hdr_.payload_len)
				return;
			std::span<const uint8_t> payload(rx_.read_ptr(), hdr_.payload_len);
			Status st = wire::check_payload(hdr_, payload);
			if (!st.is_ok())
				return protocol_error(st);
			dispatch(payload);
			if (closing_)
				return;
			rx_.consume(hdr_.payload_len);
			have_hdr_ = false;
			if (gate_done_ && !tls_ && tls_mode() && !draining_)
				return start_tls();
		}
	}

	// The version gate passed: what follows is TLS, including any bytes
	// the peer sent right behind its gate HELLO.
	void start_tls()
	{
		tls_ = std::make_unique<trust::TlsSession>(srv_->identity_.tls,
		                                           trust::TlsRole::kServer, info_.peer);
		if (rx_.readable() > 0) {
			std::memcpy(tls_->input().append(rx_.readable()), rx_.read_ptr(),
			            rx_.readable());
			rx_.clear();
		}
		drive_tls();
	}

	// Advances the handshake with the ciphertext received, then decrypts
	// what it can into rx_ and handles the requests there.
	void drive_tls()
	{
		if (!tls_->established()) {
			trust::TlsStep step = tls_->handshake();
			if (step == trust::TlsStep::kFailed)
				return tls_failed();
			if (step == trust::TlsStep::kWantRead)
				return;
			info_.authenticated = true;
			info_.peer_key = tls_->peer_key();
			info_.peer_name = tls_->peer_name();
			LOG_DEBUG(kComp, "TLS with %s established", who().c_str());
		}
		for (;;) {
			rx_.ensure_writable(kRecvChunk);
			auto n = tls_->decrypt(rx_.write_ptr(), rx_.writable());
			if (!n)
				return tls_failed();
			if (*n == 0)
				break;
			rx_.commit(*n);
		}
		process();
	}

	// The session failed (refused key, tampering, not TLS, ...): send what
	// it has queued (an alert), then close. The session has logged a key
	// it refused; anything else is logged here.
	void tls_failed()
	{
		const Status &st = tls_->status();
		if (tls_->refused_peer())
			LOG_DEBUG(kComp, "closing %s: %s", who().c_str(), st.message().c_str());
		else
			LOG_WARN(kComp, "disconnecting %s: %s", who().c_str(),
			         st.message().c_str());
		draining_ = true;
		tx_[fill_].clear();
		flush();
		if (!sending_)
			begin_close();
	}

	void dispatch(std::span<const uint8_t> payload)
	{
		bool hello = hdr_.type == static_cast<uint8_t>(wire::MsgType::kHello);
		if (!hello_done_) {
			if (!hello)
				return protocol_error(
				        Status(Code::kProtocol,
				               std::string("first message must be HELLO, got ") +
				                       wire::msg_type_name(hdr_.type)));
			if (tls_mode() && !gate_done_)
				return do_gate(payload);
			return do_hello(payload);
		}
		if (hello)
			return protocol_error(Status(Code::kProtocol, "HELLO repeated"));
		if (hdr_.version != info_.version)
			return protocol_error(
			        Status(Code::kProtocol, "message with wire version " +
			                                        std::to_string(hdr_.version) +
			                                        " after negotiating version " +
			                                        std::to_string(info_.version)));
		size_t start;
		Reply reply = begin_reply(hdr_, &start);
		reply.target_ = &srv_->deferred_target_;
		reply.conn_id_ = info_.id;
		reply.req_ = &hdr_;
		srv_->handler_->handle(info_, hdr_, payload, reply);
		if (reply.deferred()) {
			tx_[fill_].truncate(start);
			deferred_++;
			deferred_bytes_ += defer_cost(hdr_);
			return;
		}
		finish_reply(hdr_, start, reply);
	}

	// A reply to `req` at the end of the send buffer, echoing its pages;
	// *start gets where its header goes (finish_reply writes it).
	Reply begin_reply(const wire::Header &req, size_t *start)
	{
		ByteBuffer &out = tx_[fill_];
		*start = out.readable();
		out.append(wire::kHeaderSize);
		Reply reply(&out, *start + wire::kHeaderSize);
		reply.count = req.count;
		reply.offset = req.offset;
		reply.region_id = req.region_id;
		return reply;
	}

	void finish_reply(const wire::Header &req, size_t start, Reply &reply)
	{
		ByteBuffer &out = tx_[fill_];
		wire::Header h{};
		h.magic = wire::kWireMagic;
		h.version = info_.version;
		h.type = req.type;
		h.tclass = req.tclass;
		h.hop_limit = wire::kDefaultHopLimit;
		h.flags = wire::kFlagResponse;
		h.status = static_cast<uint16_t>(reply.code());
		h.src_module = srv_->identity_.module.value;
		h.dst_module = req.src_module;
		h.request_id = req.request_id;
		h.offset = reply.offset;
		h.count = reply.count;
		h.region_id = reply.region_id;
		h.payload_len = static_cast<uint32_t>(reply.payload_len());
		Status bad = wire::validate_fields(h);
		if (!bad.is_ok() || reply.payload_len() > wire::kMaxPayload) {
			// A handler bug must not put an invalid message on the wire.
			LOG_ERROR(kComp, "handler built an invalid %s response: %s",
			          wire::msg_type_name(req.type), bad.message().c_str());
			reply.fail(Status(Code::kInternal, "module built an invalid response"));
			h.status = static_cast<uint16_t>(Code::kInternal);
			h.payload_len = static_cast<uint32_t>(reply.payload_len());
		}
		uint8_t *base = out.read_ptr() + start;
		if (reply.has_payload_crc_ && h.status == static_cast<uint16_t>(Code::kOk)) {
			h.payload_crc = h.payload_len == 0 ? 0 : reply.payload_crc_;
			wire::encode_header_raw(h, base);
			return;
		}
		std::span<const uint8_t> payload(base + wire::kHeaderSize, h.payload_len);
		wire::encode_header(h, payload, base);
	}

	// The plaintext version gate (protocol.h): only a version check, then
	// TLS. Nothing of the module is told before the peer is authenticated.
	void do_gate(std::span<const uint8_t> payload)
	{
		auto req = wire::decode_hello_request(payload);
		if (!req)
			return protocol_error(req.status());
		ByteBuffer &out = tx_[fill_];
		size_t start = out.readable();
		out.append(wire::kHeaderSize);
		Reply reply(&out, start + wire::kHeaderSize);
		if (req->min_version > wire::kWireVersion ||
		    req->max_version < wire::kWireMinVersion) {
			std::string msg = version_refusal(*req);
			LOG_WARN(kComp, "disconnecting %s: %s", who().c_str(), msg.c_str());
			// In the header version the peer sent, so an old peer can
			// read it (HELLO headers may carry any version).
			info_.version = hdr_.version;
			reply.fail(Status(Code::kProtocol, msg));
			finish_reply(hdr_, start, reply);
			draining_ = true; // send the error, then close
			return;
		}
		info_.version = wire::kWireVersion;
		mark_connection();
		wire::HelloResponse resp;
		resp.version = wire::kWireVersion;
		resp.capabilities = wire::kCapTls;
		auto p = reply.payload_buffer(wire::kHelloResponseSize);
		wire::encode_hello_response(resp, p.data());
		finish_reply(hdr_, start, reply);
		flush(); // in plaintext: the session starts after this
		gate_done_ = true;
	}

	// Our side of the connection carries the DSCP of the class its HELLO
	// names (dscp.h), like the peer's side.
	void mark_connection()
	{
		auto tc = static_cast<wire::TrafficClass>(hdr_.tclass);
		if (Status st = mark_socket(fd_, tc); !st)
			LOG_WARN(kComp, "%s: %s; its replies go unmarked", who().c_str(),
			         st.message().c_str());
	}

	// A peer whose HELLO says it is this module, from another node's key:
	// a second pool with this module ID. Refused, never served; logged once
	// per key. "" when the peer is not that.
	std::string duplicate_module()
	{
		const auto &tls = srv_->identity_.tls;
		if (!tls || !info_.authenticated || !(info_.module == srv_->identity_.module) ||
		    info_.peer_key == tls->own_key())
			return "";
		std::string msg =
		        "module ID " + info_.module.to_string() + " is this module's (key " +
		        trust::encode_key(tls->own_key()) + "), but the node at " + info_.peer +
		        " (key " + trust::TrustedPeers::describe(info_.peer_key, info_.peer_name) +
		        ") says it is that module too: two pools share one module ID; refused at "
		        "HELLO, never merged. Give one of them its own ID: start that node on a "
		        "new "
		        "pool (memfedd --pool NEW_FILE --module-id ID)";
		if (srv_->duplicates_logged_.insert(trust::encode_key(info_.peer_key)).second)
			LOG_ERROR(kComp, "%s", msg.c_str());
		return msg;
	}

	void do_hello(std::span<const uint8_t> payload)
	{
		auto req = wire::decode_hello_request(payload);
		if (!req)
			return protocol_error(req.status());
		uint16_t lo = std::max<uint16_t>(req->min_version, wire::kWireMinVersion);
		uint16_t hi = std::min<uint16_t>(req->max_version, wire::kWireVersion);
		ByteBuffer &out = tx_[fill_];
		size_t start = out.readable();
		out.append(wire::kHeaderSize);
		Reply reply(&out, start + wire::kHeaderSize);
		info_.version = wire::kWireVersion;
		if (lo > hi) {
			std::string msg = version_refusal(*req);
			LOG_WARN(kComp, "disconnecting %s: %s", who().c_str(), msg.c_str());
			reply.fail(Status(Code::kProtocol, msg));
			finish_reply(hdr_, start, reply);
			draining_ = true; // send the error, then close
			return;
		}
		info_.version = static_cast<uint8_t>(hi);
		info_.module = ModuleId{hdr_.src_module};
		mark_connection();
		if (std::string dup = duplicate_module(); !dup.empty()) {
			reply.fail(Status(Code::kAlreadyExists, dup));
			finish_reply(hdr_, start, reply);
			draining_ = true; // send the error, then close
			return;
		}
		info_.capabilities = req->capabilities;
		wire::HelloResponse resp;
		resp.version = hi;
		resp.capabilities = srv_->identity_.capabilities;
		resp.capacity_bytes = srv_->identity_.capacity_bytes;
		auto p = reply.payload_buffer(wire::kHelloResponseSize);
		wire::encode_hello_response(resp, p.data());
		finish_reply(hdr_, start, reply);
		hello_done_ = true;
		disarm_hello_timer();
		LOG_DEBUG(kComp, "HELLO from %s, version %u", who().c_str(), info_.version);
	}

	TcpServer *srv_;
	int fd_;
	ConnInfo info_;
	RecvOp recv_op_;
	SendOp send_op_;
	HelloTimerOp hello_op_{this};
	bool hello_armed_ = false;
	int ops_ = 0;
	bool closing_ = false;
	bool draining_ = false; // no more requests; close once replies are sent
	bool peer_eof_ = false; // the peer sent FIN: finish what it sent, then close
	bool hello_done_ = false;
	bool gate_done_ = false;                 // TLS mode: the version gate was answered
	std::unique_ptr<trust::TlsSession> tls_; // from the gate on (TLS mode)
	bool recv_armed_ = false;
	bool sending_ = false;
	ByteBuffer rx_{kRecvChunk * 2};
	bool have_hdr_ = false;
	wire::Header hdr_{};
	ByteBuffer tx_[2];
	int fill_ = 0;
	size_t sent_ = 0;
	size_t deferred_ = 0; // deferred requests not yet answered
	size_t deferred_bytes_ = 0;
};

Result<std::unique_ptr<TcpServer>> TcpServer::listen(EventLoop *loop, const std::string &host_port,
                                                     const ServerIdentity &identity,
                                                     RequestHandler *handler)
{
	auto ep = Endpoint::parse(host_port);
	if (!ep)
		return ep.status();
	auto fd = listen_tcp(*ep);
	if (!fd)
		return fd.status();
	std::unique_ptr<TcpServer> s(new TcpServer(loop, identity, handler));
	s->listen_fd_ = *fd;
	s->host_ = ep->host;
	s->port_ = local_port(*fd);
	s->accept_op_ = std::make_unique<AcceptOp>(s.get());
	s->arm_accept();
	LOG_INFO(kComp, "listening on %s", s->endpoint().c_str());
	return s;
}

std::string TcpServer::endpoint() const
{
	return Endpoint{host_, port_}.to_string();
}

TcpServer::~TcpServer()
{
	{
		std::lock_guard lk(deferred_target_->mu);
		deferred_target_->srv = nullptr; // later deferred replies are dropped
	}
	closing_ = true;
	if (accept_armed_) {
		io_uring_sqe *s = loop_->sqe(nullptr);
		io_uring_prep_cancel(s, accept_op_.get(), 0);
	}
	for (auto &kv : conns_)
		kv.second->begin_close();
	// Reap every operation that points into this server before freeing it.
	std::vector<Conn *> idle;
	for (auto &kv : conns_)
		if (kv.second->idle())
			idle.push_back(kv.first);
	for (Conn *c : idle)
		reap(c);
	while (accept_armed_ || !conns_.empty())
		loop_->run_once(100);
	if (listen_fd_ >= 0)
		::close(listen_fd_);
}

void TcpServer::arm_accept()
{
	io_uring_sqe *s = loop_->sqe(accept_op_.get());
	io_uring_prep_accept(s, listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
	accept_armed_ = true;
}

void TcpServer::on_accept(int res)
{
	accept_armed_ = false;
	if (closing_) {
		if (res >= 0)
			::close(res);
		return;
	}
	if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
		// Retrying at once would spin: pause, keep serving the connections
		// we have.
		if (!accept_starved_)
			LOG_WARN(kComp,
			         "accept on %s: %s; new connections wait (raise the open-files "
			         "limit: ulimit -n, or LimitNOFILE= for the service)",
			         endpoint().c_str(), strerror(-res));
		accept_starved_ = true;
		accept_op_->pausing = true;
		io_uring_sqe *s = loop_->sqe(accept_op_.get());
		io_uring_prep_timeout(s, &accept_op_->pause, 0, 0);
		accept_armed_ = true;
		return;
	}
	if (res < 0) {
		if (res != -EINTR && res != -ECONNABORTED && res != -EAGAIN)
			LOG_WARN(kComp, "accept on %s failed: %s", endpoint().c_str(),
			         strerror(-res));
	} else {
		accept_starved_ = false;
		set_nodelay(res);
		// Numbered process-wide, growing: a module's session cache tells
		// a late request of an older connection by it (session_cache.h).
		static std::atomic<uint64_t> next_conn_id{1};
		uint64_t id = next_conn_id.fetch_add(1, std::memory_order_relaxed);
		auto c = std::make_unique<Conn>(this, res, id);
		Conn *raw = c.get();
		conns_.emplace(raw, std::move(c));
		by_id_.emplace(id, raw);
		raw->start();
	}
	arm_accept();
}

void TcpServer::reap(Conn *c)
{
	by_id_.erase(c->id());
	conns_.erase(c);
}

void TcpServer::deliver(uint64_t conn_id, const wire::Header &req, Code code,
                        std::span<const uint8_t> payload)
{
	auto it = by_id_.find(conn_id);
	if (it != by_id_.end())
		it->second->deliver(req, code, payload);
}

TcpServer::TcpServer(EventLoop *loop, const ServerIdentity &id, RequestHandler *h)
    : loop_(loop), identity_(id), handler_(h), deferred_target_(std::make_shared<DeferredTarget>())
{
	deferred_target_->srv = this;
	deferred_target_->loop = loop;
}

} // namespace memfed
