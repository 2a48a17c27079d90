#include "daemon/rdma/rdma_write_receiver.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <vector>

#include "daemon/common/log.h"
#include "daemon/rdma/cq_settle.h"
#include "daemon/transport/byte_buffer.h"
#include "daemon/wire/codec.h"

namespace memfed
{

namespace
{
constexpr uint32_t kSends = 2 * RdmaWriteReceiver::kDepth; // answer buffers per queue pair
constexpr uint32_t kMaxConns = 256;
constexpr int kCqSize = int(kMaxConns * (RdmaWriteReceiver::kDepth + kSends));
constexpr uint64_t kSendBit = 1u << 15;

// wr_id: the connection's serial, whether it is an answer, the buffer.
uint64_t wr_id(uint64_t serial, bool send, uint32_t idx)
{
	return serial << 16 | (send ? kSendBit : 0) | idx;
}
} // namespace

struct RdmaWriteReceiver::Conn {
	uint64_t serial = 0;
	Identity who;
	std::unique_ptr<uint8_t[]> buf;
	ibv_mr *mr = nullptr;
	bool fenced = false; // on who.loop only

	std::mutex mu;
	ibv_qp *qp = nullptr;                     // guarded by mu; null once detached
	std::vector<uint32_t> free_send;          // guarded by mu
	std::deque<std::vector<uint8_t>> waiting; // guarded by mu: answers for a free buffer

	static constexpr size_t kRecvBytes = size_t{kDepth} * wire::kRdmaWriteMessageMax;
	static constexpr size_t kBytes = kRecvBytes + size_t{kSends} * wire::kRdmaAckMax;
	uint8_t *recv_buf(uint32_t i) { return buf.get() + size_t{i} * wire::kRdmaWriteMessageMax; }
	uint8_t *send_buf(uint32_t i)
	{
		return buf.get() + kRecvBytes + size_t{i} * wire::kRdmaAckMax;
	}
	~Conn()
	{
		if (mr != nullptr)
			ibv_dereg_mr(mr);
	}
};

Result<std::unique_ptr<RdmaWriteReceiver>>
RdmaWriteReceiver::create(ibv_context *verbs, ibv_pd *pd, ModuleId self, RequestHandler *inner)
{
	std::unique_ptr<RdmaWriteReceiver> r(new RdmaWriteReceiver());
	r->inner_ = inner;
	r->self_ = self;
	r->pd_ = pd;
	r->comp_ = ibv_create_comp_channel(verbs);
	r->cq_ = r->comp_ ? ibv_create_cq(verbs, kCqSize, nullptr, r->comp_, 0) : nullptr;
	if (r->cq_ == nullptr)
		return Status(Code::kUnavailable, std::string("rdma: the write receiver's "
		                                              "completion queue: ") +
		                                          strerror(errno));
	if (ibv_req_notify_cq(r->cq_, 0) != 0)
		return Status(Code::kUnavailable, "rdma: ibv_req_notify_cq failed");
	fcntl(r->comp_->fd, F_SETFL, fcntl(r->comp_->fd, F_GETFL) | O_NONBLOCK);
	r->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->stop_fd_ < 0)
		return Status(Code::kInternal, std::string("eventfd: ") + strerror(errno));
	RdmaWriteReceiver *p = r.get();
	r->alive_->r = p;
	r->target_ = make_deferred_sink([alive = r->alive_](uint64_t serial,
	                                                    const wire::Header &req, Code code,
	                                                    std::span<const uint8_t> payload) {
		std::lock_guard lk(alive->mu);
		if (alive->r != nullptr)
			alive->r->answer(serial, req, code, payload);
	});
	r->thread_ = std::thread([p] { p->main(); });
	return r;
}

RdmaWriteReceiver::~RdmaWriteReceiver()
{
	{
		std::lock_guard lk(alive_->mu);
		alive_->r = nullptr;
	}
	if (thread_.joinable()) {
		uint64_t one = 1;
		(void)!write(stop_fd_, &one, sizeof(one));
		thread_.join();
	}
	conns_.clear();
	settle_cq_events(cq_, comp_, kCqSettleMs);
	if (cq_ != nullptr)
		ibv_destroy_cq(cq_);
	if (comp_ != nullptr)
		ibv_destroy_comp_channel(comp_);
	if (stop_fd_ >= 0)
		close(stop_fd_);
}

void RdmaWriteReceiver::init_qp_attr(ibv_qp_init_attr *qa) const
{
	qa->send_cq = cq_;
	qa->recv_cq = cq_;
	qa->cap.max_send_wr = kSends;
	qa->cap.max_recv_wr = kDepth;
	qa->cap.max_send_sge = 1;
	qa->cap.max_recv_sge = 1;
}

Status RdmaWriteReceiver::attach(rdma_cm_id *id, Identity who)
{
	auto c = std::make_shared<Conn>();
	c->who = std::move(who);
	c->qp = id->qp;
	c->buf.reset(new uint8_t[Conn::kBytes]);
	int access = IBV_ACCESS_LOCAL_WRITE; // never remote write: peers SEND, not WRITE
	c->mr = ibv_reg_mr(pd_, c->buf.get(), Conn::kBytes, access);
	if (c->mr == nullptr)
		return Status(Code::kUnavailable, std::string("rdma: registering write receive "
		                                              "buffers: ") +
		                                          strerror(errno) + " (ulimit -l)");
	for (uint32_t i = 0; i < kSends; i++)
		c->free_send.push_back(i);
	{
		std::lock_guard lk(mu_);
		if (conns_.size() >= kMaxConns)
			return Status(Code::kBusy, "rdma: " + std::to_string(kMaxConns) +
			                                   " queue pairs are connected already");
		c->serial = next_serial_++;
		conns_[c->serial] = c;
	}
	id->context = reinterpret_cast<void *>(c->serial);
	for (uint32_t i = 0; i < kDepth; i++)
		repost(*c, i);
	return Status::ok();
}

void RdmaWriteReceiver::detach(rdma_cm_id *id)
{
	auto serial = reinterpret_cast<uint64_t>(id->context);
	std::shared_ptr<Conn> c;
	{
		std::lock_guard lk(mu_);
		auto it = conns_.find(serial);
		if (it != conns_.end()) {
			c = it->second;
			conns_.erase(it);
		}
	}
	if (c != nullptr) {
		std::lock_guard lk(c->mu);
		c->qp = nullptr;
		c->waiting.clear();
	}
	if (id->qp != nullptr)
		rdma_destroy_qp(id);
}

std::shared_ptr<RdmaWriteReceiver::Conn> RdmaWriteReceiver::find(uint64_t serial)
{
	std::lock_guard lk(mu_);
	auto it = conns_.find(serial);
	return it == conns_.end() ? nullptr : it->second;
}

void RdmaWriteReceiver::fence(const ConnInfo &conn)
{
	std::vector<std::shared_ptr<Conn>> hit;
	{
		std::lock_guard lk(mu_);
		for (auto &[serial, c] : conns_)
			if (c->who.conn.id == conn.id && c->who.conn.peer == conn.peer)
				hit.push_back(c);
	}
	// The flag is read on this same loop (process()): every message that
	// reaches the loop after this is dropped.
	for (auto &c : hit)
		c->fenced = true;
	LOG_INFO("rdma", "RDMA writes of %s fenced (%zu queue pairs): it re-issues them over TLS",
	         conn.peer.c_str(), hit.size());
}

RdmaWriteReceiver::Counters RdmaWriteReceiver::counters() const
{
	std::lock_guard lk(mu_);
	return counters_;
}

void RdmaWriteReceiver::set_receive_hook_for_test(std::function<void()> hook)
{
	std::lock_guard lk(mu_);
	receive_hook_ = std::move(hook);
}

void RdmaWriteReceiver::refused(const char *what, const std::string &why, bool device)
{
	auto now = std::chrono::steady_clock::now();
	uint64_t before;
	{
		std::lock_guard lk(mu_);
		Limit &l = limits_[device ? 1 : 0];
		if (now - l.last < std::chrono::seconds(1)) {
			l.unlogged++;
			return;
		}
		l.last = now;
		before = l.unlogged;
		l.unlogged = 0;
	}
	LOG_WARN("rdma", "%s: %s (%lu more not logged since the last line)", what, why.c_str(),
	         (unsigned long)before);
}

void RdmaWriteReceiver::main()
{
	for (;;) {
		pollfd fds[2] = {{comp_->fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (fds[1].revents != 0)
			return;
		void *ctx = nullptr;
		ibv_cq *cq = nullptr;
		while (ibv_get_cq_event(comp_, &cq, &ctx) == 0)
			ibv_ack_cq_events(cq, 1);
		ibv_req_notify_cq(cq_, 0);
		ibv_wc wc[16];
		int n;
		while ((n = ibv_poll_cq(cq_, 16, wc)) > 0)
			for (int i = 0; i < n; i++)
				on_wc(wc[i]);
	}
}

void RdmaWriteReceiver::on_wc(const ibv_wc &wc)
{
	uint64_t serial = wc.wr_id >> 16;
	bool send = (wc.wr_id & kSendBit) != 0;
	auto idx = uint32_t(wc.wr_id & (kSendBit - 1));
	std::shared_ptr<Conn> c = find(serial);
	if (c == nullptr)
		return; // detached meanwhile
	if (wc.status != IBV_WC_SUCCESS) {
		if (send) {
			std::lock_guard lk(c->mu);
			c->free_send.push_back(idx);
		}
		if (wc.status == IBV_WC_WR_FLUSH_ERR)
			return; // the queue pair is going down: its posted work is flushed
		// A SEND longer than the receive buffer: a local length error
		// (soft-RoCE fails the receive with a local QP operation error, or
		// with the invalid request it NAKs).
		bool too_long = !send && (wc.status == IBV_WC_LOC_LEN_ERR ||
		                          wc.status == IBV_WC_LOC_QP_OP_ERR ||
		                          wc.status == IBV_WC_REM_INV_REQ_ERR);
		{
			std::lock_guard lk(mu_);
			counters_.qp_errors++;
			counters_.malformed += too_long;
		}
		refused(send ? "RDMA write answer failed" : "RDMA write receive failed",
		        std::string(ibv_wc_status_str(wc.status)) + " (status " +
		                std::to_string(int(wc.status)) + ") on the queue pair of " +
		                c->who.conn.peer +
		                (too_long ? " (a SEND longer than a write message: refused, the "
		                            "queue pair breaks, the peer falls back to TLS)"
		                          : ""),
		        true);
		return;
	}
	if (send) {
		std::lock_guard lk(c->mu);
		c->free_send.push_back(idx);
		if (!c->waiting.empty() && c->qp != nullptr) {
			std::vector<uint8_t> msg = std::move(c->waiting.front());
			c->waiting.pop_front();
			send_locked(*c, std::move(msg));
		}
		return;
	}
	if (idx >= kDepth || c->who.loop == nullptr)
		return;
	std::function<void()> hook;
	{
		std::lock_guard lk(mu_);
		hook = receive_hook_;
	}
	if (hook)
		hook();
	uint32_t len = wc.byte_len;
	c->who.loop->post([this, c, idx, len] { process(c, idx, len); });
}

void RdmaWriteReceiver::process(const std::shared_ptr<Conn> &c, uint32_t idx, uint32_t len)
{
	bool gone;
	{
		std::lock_guard lk(c->mu);
		gone = c->qp == nullptr;
	}
	if (gone || c->fenced) {
		{
			std::lock_guard lk(mu_);
			counters_.dropped++;
		}
		refused("RDMA write dropped, not applied",
		        gone ? "its queue pair of " + c->who.conn.peer +
		                        " is disconnected: the peer re-issues or fails it"
		             : "its queue pair was fenced by " + c->who.conn.peer +
		                        " (RDMA_FENCE): the peer re-issues it over TLS");
		return repost(*c, idx);
	}
	std::span<const uint8_t> msg(c->recv_buf(idx), len);
	wire::Header h{};
	std::span<const uint8_t> payload;
	Status st = wire::decode_rdma_write(msg, &h, &payload);
	if (st && h.version != c->who.conn.version)
		st = Status(Code::kProtocol, "RDMA write message with wire version " +
		                                     std::to_string(h.version) +
		                                     " after negotiating version " +
		                                     std::to_string(c->who.conn.version));
	if (!st) {
		{
			std::lock_guard lk(mu_);
			counters_.malformed++;
		}
		refused(("RDMA write message from " + c->who.conn.peer + " refused").c_str(),
		        st.message());
		// Echo what can be echoed: the request id, if there is a header.
		wire::Header req{};
		req.type = uint8_t(wire::MsgType::kWrite);
		req.version = wire::kWireVersion;
		if (len >= wire::kHeaderSize)
			req.request_id = wire::decode_header(msg.data()).request_id;
		repost(*c, idx);
		size_t n = std::min(st.message().size(), wire::kMaxErrorMessage);
		return answer(c->serial, req, Code::kProtocol,
		              {reinterpret_cast<const uint8_t *>(st.message().data()), n});
	}
	ByteBuffer out;
	Reply reply(&out, 0);
	reply.count = h.count;
	reply.offset = h.offset;
	reply.region_id = h.region_id;
	reply.target_ = &target_;
	reply.conn_id_ = c->serial;
	reply.req_ = &h;
	inner_->handle(c->who.conn, h, payload, reply);
	// The write path copied the pages: the buffer takes the next message.
	repost(*c, idx);
	if (!reply.deferred())
		answer(c->serial, h, reply.code(), {out.read_ptr(), reply.payload_len()});
}

void RdmaWriteReceiver::repost(Conn &c, uint32_t idx)
{
	std::lock_guard lk(c.mu);
	if (c.qp == nullptr)
		return;
	ibv_sge sge{reinterpret_cast<uint64_t>(c.recv_buf(idx)), wire::kRdmaWriteMessageMax,
	            c.mr->lkey};
	ibv_recv_wr wr{};
	wr.wr_id = wr_id(c.serial, false, idx);
	wr.sg_list = &sge;
	wr.num_sge = 1;
	ibv_recv_wr *bad = nullptr;
	if (ibv_post_recv(c.qp, &wr, &bad) != 0) {
		{
			std::lock_guard lk2(mu_);
			counters_.qp_errors++;
		}
		refused("RDMA write receive not posted",
		        std::string(strerror(errno)) + " on the queue pair of " + c.who.conn.peer);
	}
}

void RdmaWriteReceiver::answer(uint64_t serial, const wire::Header &req, Code code,
                               std::span<const uint8_t> payload)
{
	{
		std::lock_guard lk(mu_);
		if (code == Code::kOk) {
			counters_.writes++;
			counters_.pages += req.count;
		} else if (code != Code::kProtocol) {
			counters_.failed++;
		}
	}
	std::shared_ptr<Conn> c = find(serial);
	if (c == nullptr)
		return; // disconnected: the peer re-issues the write over TLS
	wire::Header h{};
	h.version = req.version;
	h.type = req.type;
	h.tclass = req.tclass;
	h.hop_limit = wire::kDefaultHopLimit;
	h.flags = wire::kFlagResponse;
	h.status = uint16_t(code);
	h.src_module = self_.value;
	h.dst_module = req.src_module;
	h.request_id = req.request_id;
	h.offset = req.offset;
	h.count = req.count;
	h.region_id = req.region_id;
	if (payload.size() > wire::kRdmaAckMax - wire::kHeaderSize)
		payload = payload.first(wire::kRdmaAckMax - wire::kHeaderSize);
	std::vector<uint8_t> msg(wire::kHeaderSize + payload.size());
	wire::encode_header(h, payload, msg.data());
	if (!payload.empty())
		std::memcpy(msg.data() + wire::kHeaderSize, payload.data(), payload.size());
	std::lock_guard lk(c->mu);
	if (c->qp != nullptr)
		send_locked(*c, std::move(msg));
}

void RdmaWriteReceiver::send_locked(Conn &c, std::vector<uint8_t> msg)
{
	if (c.free_send.empty()) {
		c.waiting.push_back(std::move(msg));
		return;
	}
	uint32_t idx = c.free_send.back();
	c.free_send.pop_back();
	std::memcpy(c.send_buf(idx), msg.data(), msg.size());
	ibv_sge sge{reinterpret_cast<uint64_t>(c.send_buf(idx)), uint32_t(msg.size()), c.mr->lkey};
	ibv_send_wr wr{};
	wr.wr_id = wr_id(c.serial, true, idx);
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.opcode = IBV_WR_SEND;
	wr.send_flags = IBV_SEND_SIGNALED;
	ibv_send_wr *bad = nullptr;
	if (ibv_post_send(c.qp, &wr, &bad) != 0) {
		c.free_send.push_back(idx);
		{
			std::lock_guard lk(mu_);
			counters_.qp_errors++;
		}
		refused("RDMA write answer not sent",
		        std::string(strerror(errno)) + " on the queue pair of " + c.who.conn.peer,
		        true);
	}
}

} // namespace memfed
