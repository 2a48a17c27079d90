#include "daemon/rdma/rdma_channel.h"

#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "daemon/common/crc32c.h"
#include "daemon/common/log.h"
#include "daemon/common/thread_annotations.h"
#include "daemon/rdma/cq_settle.h"
#include "daemon/rdma/rdma_address.h"
#include "daemon/store/layout.h"
#include "daemon/wire/codec.h"
#include "daemon/wire/rdma_codec.h"

namespace memfed
{

namespace
{
using wire::kPageSize;
constexpr size_t kMetaBytes = wire::kMaxPagesPerRequest * sizeof(store::PageMeta);
constexpr size_t kSlotBytes = 2 * kMetaBytes + size_t{wire::kMaxPagesPerRequest} * kPageSize;
constexpr unsigned kInitiatorDepth = 16;
constexpr size_t kWriteBytes = wire::kRdmaWriteMessageMax;
constexpr size_t kAckBytes = wire::kRdmaAckMax;

// wr_id: what it is (top byte), then for a READ its slot and which of the
// three READs of its request, for a write SEND its write slot, for a
// receive its answer buffer.
constexpr uint64_t kKindShift = 56;
constexpr uint64_t kWriteSend = 1, kAckRecv = 2;
uint64_t wr_id(unsigned slot, unsigned which)
{
	return uint64_t{slot} << 2 | which;
}
uint64_t wr_id_of(uint64_t kind, unsigned index)
{
	return kind << kKindShift | index;
}

bool overlap(uint64_t a, uint32_t an, uint64_t b, uint32_t bn)
{
	return a < b + uint64_t{bn} * kPageSize && b < a + uint64_t{an} * kPageSize;
}

wire::Header read_response(uint32_t region_id, uint64_t fa, uint32_t count, Code code)
{
	wire::Header h{};
	h.type = uint8_t(wire::MsgType::kRead);
	h.flags = wire::kFlagResponse;
	h.status = uint16_t(code);
	h.region_id = region_id;
	h.offset = fa;
	h.count = count;
	return h;
}
} // namespace

class RdmaChannel::PollOp : public IoOp
{
public:
	explicit PollOp(RdmaChannel *c) : c_(c) {}
	void complete(int res, uint32_t) override { c_->on_poll(res); }

private:
	RdmaChannel *c_;
};

class RdmaChannel::TimerOp : public IoOp
{
public:
	explicit TimerOp(RdmaChannel *c) : c_(c) {}
	void complete(int res, uint32_t) override { c_->on_timer(res); }

private:
	RdmaChannel *c_;
};

class RdmaChannel::CancelOp : public IoOp
{
public:
	void complete(int, uint32_t) override {}
};

class RdmaChannel::ConnectReply : public Completion
{
public:
	explicit ConnectReply(RdmaChannel *c) : c_(c) {}
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t> p) override
	{
		c_->on_connect_reply(st, p);
	}

private:
	RdmaChannel *c_;
};

// A write of this channel in flight over TCP: counted, so that the channel
// switches to RDMA only once they are answered.
class RdmaChannel::TcpWrite : public Completion
{
public:
	explicit TcpWrite(RdmaChannel *c) : c_(c) {}
	void on_reply(const Status &st, const wire::Header &h, std::span<const uint8_t> p) override
	{
		Completion *d = done;
		RdmaChannel *c = c_;
		c->tcp_writes_--;
		c->free_tcp_writes_.push_back(this);
		if (!c->closing_)
			c->pump_writes();
		d->on_reply(st, h, p);
	}
	Completion *done = nullptr;

private:
	RdmaChannel *c_;
};

class RdmaChannel::FenceReply : public Completion
{
public:
	explicit FenceReply(RdmaChannel *c) : c_(c) {}
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		if (!st)
			LOG_WARN("rdma", "module %s: RDMA_FENCE failed: %s",
			         c_->peer().module.to_string().c_str(), st.message().c_str());
	}

private:
	RdmaChannel *c_;
};

class RdmaChannel::RegionReply : public Completion
{
public:
	RegionReply(RdmaChannel *c, uint32_t id, uint64_t epoch) : c_(c), id_(id), epoch_(epoch) {}
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t> p) override
	{
		if (epoch_ == c_->epoch_)
			c_->on_region_reply(id_, st, p);
		done = true;
	}
	bool done = false;

private:
	RdmaChannel *c_;
	uint32_t id_;
	uint64_t epoch_;
};

namespace
{
// Every live channel's counters, and the sums of those gone.
struct CounterList {
	Mutex mu;
	std::set<const RdmaChannel::Counters *> live GUARDED_BY(mu);
	RdmaChannel::Counters retired GUARDED_BY(mu);
};

CounterList &counter_list()
{
	static CounterList *list = new CounterList; // never destroyed: channels may outlive statics
	return *list;
}
} // namespace

void RdmaChannel::Counters::add(const Counters &o)
{
	reads += o.reads;
	pages += o.pages;
	bytes += o.bytes;
	torn_retries += o.torn_retries;
	fallbacks += o.fallbacks;
	errors += o.errors;
	refused += o.refused;
	connects += o.connects;
	writes += o.writes;
	pages_written += o.pages_written;
	write_fallbacks += o.write_fallbacks;
	fences += o.fences;
	bulk_to_tcp += o.bulk_to_tcp;
}

RdmaChannel::Counters RdmaChannel::totals()
{
	CounterList &l = counter_list();
	MutexLock lk(&l.mu);
	Counters sum = l.retired;
	for (const Counters *c : l.live)
		sum.add(*c);
	return sum;
}

RdmaChannel::Listed::Listed(const Counters *c) : c_(c)
{
	CounterList &l = counter_list();
	MutexLock lk(&l.mu);
	l.live.insert(c_);
}

RdmaChannel::Listed::~Listed()
{
	CounterList &l = counter_list();
	MutexLock lk(&l.mu);
	l.live.erase(c_);
	l.retired.add(*c_);
}

std::unique_ptr<RdmaChannel> RdmaChannel::wrap(EventLoop *loop, std::unique_ptr<TcpChannel> tcp,
                                               Options opts)
{
	return std::unique_ptr<RdmaChannel>(new RdmaChannel(loop, std::move(tcp), opts));
}

RdmaChannel::RdmaChannel(EventLoop *loop, std::unique_ptr<TcpChannel> tcp, Options opts)
    : loop_(loop), tcp_(std::move(tcp)), opts_(opts),
      connect_reply_(std::make_unique<ConnectReply>(this)),
      poll_op_(std::make_unique<PollOp>(this)), cancel_op_(std::make_unique<CancelOp>()),
      timer_op_(std::make_unique<TimerOp>(this)), fence_reply_(std::make_unique<FenceReply>(this))
{
	if (opts_.slots == 0)
		opts_.slots = 1;
	slots_.resize(opts_.slots);
	if (opts_.mode == Mode::kRdma && (peer().capabilities & wire::kCapRdma) == 0)
		LOG_ERROR("rdma",
		          "module %s at %s does not offer RDMA (start it with --rdma-listen): "
		          "its pages come over TCP",
		          peer().module.to_string().c_str(), peer().endpoint.c_str());
}

RdmaChannel::~RdmaChannel()
{
	if (counters_.connects != 0)
		LOG_INFO("rdma",
		         "module %s: %lu reads, %lu pages over RDMA; %lu writes, %lu pages written "
		         "over RDMA; %lu torn-read retries, %lu read and %lu write fallbacks to "
		         "TCP, %lu RDMA failures, %lu reads refused",
		         peer().module.to_string().c_str(), (unsigned long)counters_.reads,
		         (unsigned long)counters_.pages, (unsigned long)counters_.writes,
		         (unsigned long)counters_.pages_written,
		         (unsigned long)counters_.torn_retries, (unsigned long)counters_.fallbacks,
		         (unsigned long)counters_.write_fallbacks, (unsigned long)counters_.errors,
		         (unsigned long)counters_.refused);
	// Reads in flight over RDMA, and unanswered writes (behind a fence, as
	// after a failure), then the queued ones, go to the TCP channel, whose
	// close answers or fails them all: every request completes (the
	// Channel contract).
	in_flight_to_tcp();
	closing_ = true;
	for (const Write &w : wq_)
		write_over_tcp(w, false);
	wq_.clear();
	// The kernel may still hold the poll (until its cancel is reaped), and
	// the TcpChannel may still answer our control requests: both point here.
	while (poll_armed_ || timer_armed_)
		loop_->run_once(100);
	tcp_.reset();
}

void RdmaChannel::try_rdma()
{
	if (state_ != State::kIdle || opts_.mode == Mode::kTcp || !tcp_->connected() ||
	    (peer().capabilities & wire::kCapRdma) == 0 || !peer().authenticated)
		return;
	if (std::chrono::steady_clock::now() < next_try_)
		return;
	state_ = State::kAsking;
	wire::Header h{};
	h.type = uint8_t(wire::MsgType::kRdmaConnect);
	h.tclass = uint8_t(wire::TrafficClass::kControl);
	tcp_->call(h, {}, connect_reply_.get());
}

void RdmaChannel::on_connect_reply(const Status &st, std::span<const uint8_t> payload)
{
	if (!st)
		return fail("module refused RDMA_CONNECT: " + st.message());
	auto c = wire::decode_rdma_connect(payload);
	if (!c)
		return fail(c.status().message());
	Status s = setup(*c);
	if (!s)
		return fail(s.message());
	state_ = State::kUp;
	why_.clear();
	counters_.connects++;
	LOG_INFO("rdma", "module %s: page reads over RDMA from %s, %s",
	         peer().module.to_string().c_str(), c->endpoint,
	         write_depth_ > 0
	                 ? ("writes over RDMA (" + std::to_string(write_depth_) + " in flight)")
	                           .c_str()
	                 : "writes over TLS (the module takes none over RDMA)");
	pump_writes();
}

Status RdmaChannel::wait_cm_event(rdma_cm_event_type want, const char *step)
{
	pollfd p{events_->fd, POLLIN, 0};
	int n = poll(&p, 1, opts_.connect_timeout_ms);
	if (n <= 0)
		return Status(Code::kUnavailable, std::string(step) + ": no answer within " +
		                                          std::to_string(opts_.connect_timeout_ms) +
		                                          " ms");
	rdma_cm_event *ev = nullptr;
	if (rdma_get_cm_event(events_, &ev) != 0)
		return Status(Code::kUnavailable,
		              std::string(step) + ": rdma_get_cm_event: " + strerror(errno));
	rdma_cm_event_type got = ev->event;
	int status = ev->status;
	rdma_ack_cm_event(ev);
	if (got != want)
		return Status(Code::kUnavailable, std::string(step) + ": " + rdma_event_str(got) +
		                                          " (status " + std::to_string(status) +
		                                          ")");
	return Status::ok();
}

Status RdmaChannel::setup(const wire::WireRdmaConnect &c)
{
	auto addr = resolve_rdma_address(c.endpoint, "module RDMA endpoint");
	if (!addr)
		return addr.status();
	events_ = rdma_create_event_channel();
	if (events_ == nullptr)
		return Status(Code::kUnavailable,
		              std::string("no rdma_cm here (") + strerror(errno) + ")");
	fcntl(events_->fd, F_SETFL, fcntl(events_->fd, F_GETFL) | O_NONBLOCK);
	if (rdma_create_id(events_, &id_, nullptr, RDMA_PS_TCP) != 0)
		return Status(Code::kUnavailable,
		              std::string("rdma_create_id: ") + strerror(errno));
	if (rdma_resolve_addr(id_, nullptr, reinterpret_cast<sockaddr *>(&addr->ss),
	                      opts_.connect_timeout_ms) != 0)
		return Status(Code::kUnavailable, std::string("rdma_resolve_addr ") + c.endpoint +
		                                          ": " + strerror(errno));
	MF_RETURN_IF_ERROR(wait_cm_event(RDMA_CM_EVENT_ADDR_RESOLVED,
	                                 "resolving the module's RDMA address (no local RDMA "
	                                 "device reaches it?)"));
	if (rdma_resolve_route(id_, opts_.connect_timeout_ms) != 0)
		return Status(Code::kUnavailable,
		              std::string("rdma_resolve_route: ") + strerror(errno));
	MF_RETURN_IF_ERROR(wait_cm_event(RDMA_CM_EVENT_ROUTE_RESOLVED, "resolving the RDMA route"));
	// A finite ACK timeout (4.096 us * 2^16 = 268 ms, 7 retries): without
	// one a READ to a module that died is never answered nor failed (RoCE
	// paths may carry a timeout of 0, which means forever).
	uint8_t ack_timeout = 16;
	if (rdma_set_option(id_, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &ack_timeout,
	                    sizeof(ack_timeout)) != 0)
		return Status(Code::kUnavailable,
		              std::string("rdma_set_option(ACK_TIMEOUT): ") + strerror(errno));

	write_depth_ = std::min<unsigned>(c.write_depth, opts_.write_slots);
	pd_ = ibv_alloc_pd(id_->verbs);
	comp_ = pd_ ? ibv_create_comp_channel(id_->verbs) : nullptr;
	unsigned wrs = opts_.slots * 3 + write_depth_ + 4;
	unsigned recvs = std::max(1u, write_depth_);
	cq_ = comp_ ? ibv_create_cq(id_->verbs, int(wrs + recvs), nullptr, comp_, 0) : nullptr;
	if (cq_ == nullptr)
		return Status(Code::kUnavailable,
		              std::string("RDMA device resources (pd, cq): ") + strerror(errno));
	fcntl(comp_->fd, F_SETFL, fcntl(comp_->fd, F_GETFL) | O_NONBLOCK);
	ibv_qp_init_attr qa{};
	qa.send_cq = cq_;
	qa.recv_cq = cq_;
	qa.qp_type = IBV_QPT_RC;
	qa.sq_sig_all = 0;
	qa.cap.max_send_wr = wrs;
	qa.cap.max_recv_wr = recvs;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(id_, pd_, &qa) != 0)
		return Status(Code::kUnavailable,
		              std::string("rdma_create_qp: ") + strerror(errno));
	// Read slots, then write messages, then the write answers' buffers.
	staging_.assign(size_t{opts_.slots} * kSlotBytes + write_depth_ * (kWriteBytes + kAckBytes),
	                0);
	int access = IBV_ACCESS_LOCAL_WRITE; // an int: see RdmaServer::register_pool
	mr_ = ibv_reg_mr(pd_, staging_.data(), staging_.size(), access);
	if (mr_ == nullptr)
		return Status(Code::kUnavailable, std::string("registering the staging buffer: ") +
		                                          strerror(errno) + " (ulimit -l)");
	wslots_.assign(write_depth_, WriteSlot{});
	for (unsigned i = 0; i < write_depth_; i++) {
		ibv_sge sge{reinterpret_cast<uint64_t>(ack_base(i)), uint32_t(kAckBytes),
		            mr_->lkey};
		ibv_recv_wr wr{};
		wr.wr_id = wr_id_of(kAckRecv, i);
		wr.sg_list = &sge;
		wr.num_sge = 1;
		ibv_recv_wr *bad = nullptr;
		if (ibv_post_recv(id_->qp, &wr, &bad) != 0)
			return Status(Code::kUnavailable,
			              std::string("posting write answer receives: ") +
			                      strerror(errno));
	}

	wire::WireRdmaHello hello{};
	hello.magic = wire::kRdmaHelloMagic;
	hello.version = wire::kWireVersion;
	std::memcpy(hello.token, c.token, sizeof(hello.token));
	rdma_conn_param p{};
	p.private_data = &hello;
	p.private_data_len = sizeof(hello);
	p.initiator_depth = kInitiatorDepth;
	p.responder_resources = 0;
	p.retry_count = 7;
	p.rnr_retry_count = 7;
	if (rdma_connect(id_, &p) != 0)
		return Status(Code::kUnavailable, std::string("rdma_connect: ") + strerror(errno));
	MF_RETURN_IF_ERROR(wait_cm_event(RDMA_CM_EVENT_ESTABLISHED, "RDMA connect"));
	if (ibv_req_notify_cq(cq_, 0) != 0)
		return Status(Code::kUnavailable, "ibv_req_notify_cq failed");
	arm_poll();
	return Status::ok();
}

void RdmaChannel::arm_poll()
{
	if (poll_armed_ || comp_ == nullptr)
		return;
	io_uring_sqe *sqe = loop_->sqe(poll_op_.get());
	io_uring_prep_poll_add(sqe, comp_->fd, POLLIN);
	poll_armed_ = true;
}

void RdmaChannel::on_poll(int res)
{
	poll_armed_ = false;
	if (cq_ == nullptr)
		return; // cancelled by a teardown
	if (res < 0)
		return arm_poll(); // a cancelled poll of an earlier connection
	void *ctx = nullptr;
	ibv_cq *cq = nullptr;
	while (ibv_get_cq_event(comp_, &cq, &ctx) == 0)
		ibv_ack_cq_events(cq, 1);
	ibv_req_notify_cq(cq_, 0);
	ibv_wc wc[16];
	for (;;) {
		if (cq_ == nullptr)
			return; // torn down by a failure below
		int n = ibv_poll_cq(cq_, 16, wc);
		if (n < 0)
			return fail("ibv_poll_cq failed");
		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			if (cq_ == nullptr)
				return;
			uint64_t kind = wc[i].wr_id >> kKindShift;
			auto index = unsigned(wc[i].wr_id & ((uint64_t{1} << kKindShift) - 1));
			unsigned slot = unsigned(wc[i].wr_id >> 2);
			if (wc[i].status != IBV_WC_SUCCESS) {
				const char *what = kind == kWriteSend ? "RDMA write SEND failed: "
				                   : kind == kAckRecv ? "RDMA write answer failed: "
				                                      : "RDMA READ failed: ";
				fail(std::string(what) + ibv_wc_status_str(wc[i].status) +
				     (wc[i].status == IBV_WC_REM_ACCESS_ERR
				              ? " (the module refused the key: revoked or forged)"
				              : ""));
				return;
			}
			if (kind == kAckRecv) {
				if (index < write_depth_)
					on_ack(index, wc[i].byte_len);
				continue;
			}
			if (kind == kWriteSend)
				continue; // the answer completes the write
			if ((wc[i].wr_id & 3) == 2 && slot < slots_.size() && slots_[slot].busy)
				finish_slot(slot);
		}
	}
	arm_poll();
}

uint8_t *RdmaChannel::slot_base(unsigned slot) const
{
	return const_cast<uint8_t *>(staging_.data()) + size_t{slot} * kSlotBytes;
}

void RdmaChannel::post(unsigned slot)
{
	Slot &s = slots_[slot];
	auto it = extents_.find(s.region_id);
	if (it == extents_.end())
		return to_tcp(slot); // not reached: extents go only with the slots
	const Extent &e = it->second;
	uint64_t first = (s.fa - e.fa) / kPageSize; // within the region
	uint64_t meta_remote = e.meta_addr + first * sizeof(store::PageMeta);
	uint32_t meta_len = s.count * uint32_t(sizeof(store::PageMeta));
	uint8_t *b = slot_base(slot);
	ibv_sge sge[3] = {
	        {reinterpret_cast<uint64_t>(b), meta_len, mr_->lkey},
	        {reinterpret_cast<uint64_t>(b + 2 * kMetaBytes), s.count * kPageSize, mr_->lkey},
	        {reinterpret_cast<uint64_t>(b + kMetaBytes), meta_len, mr_->lkey},
	};
	uint64_t remote[3] = {meta_remote, e.data_addr + (s.fa - e.fa), meta_remote};
	uint32_t rkey[3] = {e.meta_rkey, e.data_rkey, e.meta_rkey};
	ibv_send_wr wr[3]{};
	for (unsigned k = 0; k < 3; k++) {
		wr[k].wr_id = wr_id(slot, k);
		wr[k].sg_list = &sge[k];
		wr[k].num_sge = 1;
		wr[k].opcode = IBV_WR_RDMA_READ;
		// Each READ starts after the one before has completed.
		wr[k].send_flags = k == 0 ? 0 : IBV_SEND_FENCE;
		wr[k].wr.rdma.remote_addr = remote[k];
		wr[k].wr.rdma.rkey = rkey[k];
		wr[k].next = k < 2 ? &wr[k + 1] : nullptr;
	}
	wr[2].send_flags |= IBV_SEND_SIGNALED;
	ibv_send_wr *bad = nullptr;
	if (ibv_post_send(id_->qp, wr, &bad) != 0) {
		// Nothing of it was started: this request goes over TCP now, and the
		// failure breaks the RDMA side for the rest.
		to_tcp(slot);
		fail(std::string("ibv_post_send: ") + strerror(errno));
		return;
	}
	counters_.bytes += uint64_t{s.count} * (kPageSize + 2 * sizeof(store::PageMeta));
	s.posted = std::chrono::steady_clock::now();
	arm_timer();
}

void RdmaChannel::arm_timer()
{
	if (timer_armed_)
		return;
	io_uring_sqe *sqe = loop_->sqe(timer_op_.get());
	io_uring_prep_timeout(sqe, &tick_, 0, 0);
	timer_armed_ = true;
}

// A READ to a module that died may never complete (nor fail) on some
// devices: the TLS connection's loss, or a READ unanswered for
// kReadTimeout, breaks the RDMA side, and its reads go to TCP.
void RdmaChannel::on_timer(int)
{
	timer_armed_ = false;
	if ((busy_ == 0 && wbusy_ == 0) || cq_ == nullptr)
		return;
	if (!tcp_->connected())
		return fail("the TLS connection to the module is lost");
	auto now = std::chrono::steady_clock::now();
	for (const Slot &s : slots_)
		if (s.busy && now - s.posted > kReadTimeout)
			return fail("an RDMA READ got no answer in 5 s");
	for (const WriteSlot &w : wslots_)
		if (w.busy && now - w.posted > kWriteTimeout)
			return fail("an RDMA write got no durable answer in 30 s");
	arm_timer();
}

void RdmaChannel::finish_slot(unsigned slot)
{
	Slot &s = slots_[slot];
	uint8_t *b = slot_base(slot);
	const auto *before = reinterpret_cast<const store::PageMeta *>(b);
	const auto *after = reinterpret_cast<const store::PageMeta *>(b + kMetaBytes);
	const uint8_t *pages = b + 2 * kMetaBytes;
	bool whole = true;
	for (uint32_t i = 0; i < s.count && whole; i++) {
		const uint8_t *pg = pages + size_t{i} * kPageSize;
		whole = before[i].version == after[i].version &&
		        (crc32c(pg, kPageSize) == before[i].crc ||
		         (before[i].version == 0 && store::page_is_zero(pg)));
	}
	if (!whole) {
		counters_.torn_retries++;
		if (++s.tries <= kTornRetries)
			return post(slot);
		return to_tcp(slot);
	}
	std::memcpy(s.dst, pages, size_t{s.count} * kPageSize);
	counters_.reads++;
	counters_.pages += s.count;
	Slot done = s;
	s = Slot{};
	busy_--;
	done.done->on_reply(Status::ok(),
	                    read_response(done.region_id, done.fa, done.count, Code::kOk), {});
}

void RdmaChannel::to_tcp(unsigned slot)
{
	Slot s = slots_[slot];
	slots_[slot] = Slot{};
	busy_--;
	counters_.fallbacks++;
	tcp_->read_pages(s.tc, s.region_id, s.fa, s.count, s.dst, s.done);
}

void RdmaChannel::read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                             uint32_t count, void *dst, Completion *done)
{
	try_rdma();
	if (state_ != State::kUp || !tcp_->connected() || count == 0 ||
	    count > wire::kMaxPagesPerRequest || fa_offset % kPageSize != 0)
		return tcp_->read_pages(tc, region_id, fa_offset, count, dst, done);
	auto it = extents_.find(region_id);
	if (it == extents_.end()) {
		auto &q = asking_[region_id];
		auto refused = refused_until_.find(region_id);
		if (refused != refused_until_.end() &&
		    std::chrono::steady_clock::now() >= refused->second)
			refused_until_.erase(refused), refused = refused_until_.end();
		if ((!q || q->done) && refused == refused_until_.end()) {
			q = std::make_unique<RegionReply>(this, region_id, epoch_);
			wire::Header h{};
			h.type = uint8_t(wire::MsgType::kRdmaRegion);
			h.tclass = uint8_t(wire::TrafficClass::kControl);
			h.region_id = region_id;
			tcp_->call(h, {}, q.get());
		}
		return tcp_->read_pages(tc, region_id, fa_offset, count, dst, done);
	}
	uint64_t len = uint64_t{count} * kPageSize;
	const Extent &e = it->second;
	if (fa_offset < e.fa || fa_offset - e.fa > e.size || len > e.size - (fa_offset - e.fa)) {
		counters_.refused++;
		Status st(Code::kOutOfRange,
		          "read of " + std::to_string(count) + " pages at FA offset " +
		                  std::to_string(fa_offset) + " lies outside region " +
		                  std::to_string(region_id) + " [" + std::to_string(e.fa) + ", " +
		                  std::to_string(e.fa + e.size) + "): refused");
		loop_->post([done, region_id, fa_offset, count, st] {
			done->on_reply(st, read_response(region_id, fa_offset, count, st.code()),
			               {});
		});
		return;
	}
	// Faults go before bulk work: the last kFaultSlots slots are a fault's
	// only, so bulk reads (prefetch, catch-up) never take every slot, and
	// a fault finds one free unless faults alone fill them. What finds none
	// goes over TCP at once (never queued here behind other reads).
	unsigned usable = unsigned(slots_.size());
	if (tc != wire::TrafficClass::kFault)
		usable = usable > kFaultSlots ? usable - kFaultSlots : 0;
	if (busy_ >= usable) {
		if (tc != wire::TrafficClass::kFault)
			counters_.bulk_to_tcp++;
		return tcp_->read_pages(tc, region_id, fa_offset, count, dst, done);
	}
	unsigned slot = 0;
	while (slot < slots_.size() && slots_[slot].busy)
		slot++;
	if (slot == slots_.size())
		return tcp_->read_pages(tc, region_id, fa_offset, count, dst, done);
	slots_[slot] = Slot{true, 0, tc, region_id, fa_offset, count, dst, done};
	busy_++;
	post(slot);
}

void RdmaChannel::on_region_reply(uint32_t region_id, const Status &st,
                                  std::span<const uint8_t> payload)
{
	auto r = st ? wire::decode_rdma_region(payload, region_id)
	            : Result<wire::WireRdmaRegion>(st);
	if (!r) {
		// Unknown (its reads fail over TCP), or refused: the node may not
		// read it (TCP says so, authoritatively) or it could not be
		// registered. Its reads go over TCP; asked again after retry_ms.
		refused_until_[region_id] = std::chrono::steady_clock::now() +
		                            std::chrono::milliseconds(opts_.retry_ms);
		return;
	}
	extents_[region_id] = Extent{r->fa_offset, r->size_bytes, r->data_addr,
	                             r->meta_addr, r->data_rkey,  r->meta_rkey};
}

void RdmaChannel::fail(const std::string &why)
{
	counters_.errors += state_ == State::kUp ? 1 : 0;
	bool was = state_ != State::kIdle;
	state_ = State::kIdle;
	why_ = why;
	next_try_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.retry_ms);
	if (was)
		LOG_WARN("rdma",
		         "module %s: RDMA off, reads and writes over TCP, retry in %d ms: %s",
		         peer().module.to_string().c_str(), opts_.retry_ms, why.c_str());
	in_flight_to_tcp();
}

void RdmaChannel::in_flight_to_tcp()
{
	// Every read in flight over RDMA is issued again over TCP (idempotent);
	// the teardown destroys the QP first, so no late RDMA lands in a slot.
	std::vector<Slot> redo;
	for (Slot &s : slots_)
		if (s.busy)
			redo.push_back(s);
	std::vector<WriteSlot> unanswered;
	for (WriteSlot &w : wslots_)
		if (w.busy)
			unanswered.push_back(w);
	teardown();
	for (Slot &s : redo) {
		counters_.fallbacks++;
		tcp_->read_pages(s.tc, s.region_id, s.fa, s.count, s.dst, s.done);
	}
	writes_to_tcp(std::move(unanswered));
}

void RdmaChannel::teardown()
{
	epoch_++;
	extents_.clear();
	refused_until_.clear();
	if (poll_armed_) {
		io_uring_sqe *sqe = loop_->sqe(cancel_op_.get());
		io_uring_prep_poll_remove(sqe, reinterpret_cast<uint64_t>(poll_op_.get()));
	}
	if (id_ != nullptr && id_->qp != nullptr) {
		rdma_disconnect(id_);
		rdma_destroy_qp(id_);
	}
	if (mr_ != nullptr)
		ibv_dereg_mr(mr_);
	mr_ = nullptr;
	settle_cq_events(cq_, comp_, kCqSettleMs);
	if (cq_ != nullptr)
		ibv_destroy_cq(cq_);
	cq_ = nullptr;
	if (comp_ != nullptr)
		ibv_destroy_comp_channel(comp_);
	comp_ = nullptr;
	if (pd_ != nullptr)
		ibv_dealloc_pd(pd_);
	pd_ = nullptr;
	if (id_ != nullptr)
		rdma_destroy_id(id_);
	id_ = nullptr;
	if (events_ != nullptr)
		rdma_destroy_event_channel(events_);
	events_ = nullptr;
	for (Slot &s : slots_)
		s = Slot{};
	busy_ = 0;
	for (WriteSlot &w : wslots_)
		w = WriteSlot{};
	wbusy_ = 0;
	write_depth_ = 0;
}

// --- write-back over RDMA ---

uint8_t *RdmaChannel::write_base(unsigned slot) const
{
	return slot_base(unsigned(slots_.size())) + size_t{slot} * kWriteBytes;
}

uint8_t *RdmaChannel::ack_base(unsigned i) const
{
	return write_base(unsigned(wslots_.size())) + size_t{i} * kAckBytes;
}

void RdmaChannel::write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                              uint32_t count, const void *src, Completion *done)
{
	try_rdma();
	wq_.push_back(Write{false, tc, region_id, fa_offset, count, {}, src, done});
	pump_writes();
}

void RdmaChannel::write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                                  uint32_t count, const wire::WireVersionedWrite &prefix,
                                  const void *src, Completion *done)
{
	try_rdma();
	wq_.push_back(Write{true, tc, region_id, fa_offset, count, prefix, src, done});
	pump_writes();
}

bool RdmaChannel::write_fits_rdma(const Write &w) const
{
	return w.count > 0 && w.count <= wire::kMaxPagesPerRequest && w.fa % kPageSize == 0 &&
	       w.fa <= UINT64_MAX - uint64_t{w.count} * kPageSize;
}

bool RdmaChannel::overlaps_rdma_write(const Write &w) const
{
	for (const WriteSlot &s : wslots_)
		if (s.busy && overlap(s.w.fa, s.w.count, w.fa, w.count))
			return true;
	return false;
}

void RdmaChannel::pump_writes()
{
	while (!wq_.empty() && !closing_) {
		const Write &head = wq_.front();
		if (rdma_writes() && tcp_writes_ == 0 && tcp_->connected() &&
		    write_fits_rdma(head)) {
			if (wbusy_ == write_depth_ || overlaps_rdma_write(head))
				return; // its turn comes with an answer
			Write w = head;
			wq_.pop_front();
			post_write(w);
			continue;
		}
		if (wbusy_ > 0)
			return; // TCP only once the RDMA side is drained
		Write w = head;
		wq_.pop_front();
		write_over_tcp(w, false);
	}
}

void RdmaChannel::post_write(const Write &w)
{
	unsigned j = 0;
	while (wslots_[j].busy)
		j++;
	WriteSlot &s = wslots_[j];
	s = WriteSlot{true, w, next_write_id_++, std::chrono::steady_clock::now()};
	wbusy_++;
	uint8_t *b = write_base(j);
	wire::Header h{};
	// Numbered in the TCP channel's write session, as its own writes are:
	// a re-issue over TCP is then a retry the module recognises
	// (session_cache.h), and a SEND still queued on the module when the
	// TLS connection is lost is refused once the session has moved on.
	size_t prefix = 0;
	if (RequestSession *session = tcp_->session()) {
		s.w.seq = session->next_seq();
		wire::encode_sequence({session->id(), s.w.seq}, b + wire::kHeaderSize);
		h.flags = wire::kFlagSequenced;
		prefix += wire::kSequenceSize;
	}
	if (w.versioned) {
		wire::encode_versioned_write(w.prefix, b + wire::kHeaderSize + prefix);
		prefix += wire::kVersionedWriteSize;
	}
	std::memcpy(b + wire::kHeaderSize + prefix, w.src, size_t{w.count} * kPageSize);
	h.version = peer().version;
	h.type = uint8_t(w.versioned ? wire::MsgType::kWriteVersioned : wire::MsgType::kWrite);
	h.tclass = uint8_t(w.tc);
	h.hop_limit = wire::kDefaultHopLimit;
	h.request_id = s.request_id;
	h.offset = w.fa;
	h.count = w.count;
	h.region_id = w.region_id;
	size_t payload = prefix + size_t{w.count} * kPageSize;
	wire::encode_header(h, {b + wire::kHeaderSize, payload}, b);
	ibv_sge sge{reinterpret_cast<uint64_t>(b), uint32_t(wire::kHeaderSize + payload),
	            mr_->lkey};
	ibv_send_wr wr{};
	wr.wr_id = wr_id_of(kWriteSend, j);
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.opcode = IBV_WR_SEND;
	wr.send_flags = IBV_SEND_SIGNALED;
	ibv_send_wr *bad = nullptr;
	if (ibv_post_send(id_->qp, &wr, &bad) != 0)
		// It is in its slot: the failure re-issues it over TCP with the rest.
		return fail(std::string("ibv_post_send (write): ") + strerror(errno));
	arm_timer();
}

void RdmaChannel::on_ack(unsigned i, uint32_t len)
{
	std::span<const uint8_t> msg(ack_base(i), std::min<size_t>(len, kAckBytes));
	wire::Header h{};
	Status st = msg.size() < wire::kHeaderSize
	                    ? Status(Code::kProtocol, "shorter than a header")
	                    : wire::validate_header(msg.first(wire::kHeaderSize), &h);
	if (st && !(h.flags & wire::kFlagResponse))
		st = Status(Code::kProtocol, "not a response");
	if (st)
		st = wire::check_payload(h, msg.subspan(wire::kHeaderSize));
	if (!st)
		return fail("malformed answer to an RDMA write: " + st.message());
	unsigned j = 0;
	while (j < wslots_.size() && !(wslots_[j].busy && wslots_[j].request_id == h.request_id))
		j++;
	if (j == wslots_.size())
		return fail("answer to no RDMA write in flight (request id " +
		            std::to_string(h.request_id) + ")");
	std::vector<uint8_t> payload(msg.begin() + wire::kHeaderSize, msg.end());
	// The buffer takes the next answer.
	ibv_sge sge{reinterpret_cast<uint64_t>(ack_base(i)), uint32_t(kAckBytes), mr_->lkey};
	ibv_recv_wr wr{};
	wr.wr_id = wr_id_of(kAckRecv, i);
	wr.sg_list = &sge;
	wr.num_sge = 1;
	ibv_recv_wr *bad = nullptr;
	bool reposted = ibv_post_recv(id_->qp, &wr, &bad) == 0;
	Write w = wslots_[j].w;
	wslots_[j] = WriteSlot{};
	wbusy_--;
	counters_.writes++;
	counters_.pages_written += w.count;
	if (!reposted)
		fail(std::string("ibv_post_recv (write answer): ") + strerror(errno));
	else
		pump_writes();
	w.done->on_reply(wire::response_status(h, payload), h, payload);
}

void RdmaChannel::write_over_tcp(const Write &w, bool repair)
{
	if (free_tcp_writes_.empty()) {
		tcp_write_pool_.push_back(std::make_unique<TcpWrite>(this));
		free_tcp_writes_.push_back(tcp_write_pool_.back().get());
	}
	TcpWrite *t = free_tcp_writes_.back();
	free_tcp_writes_.pop_back();
	t->done = w.done;
	tcp_writes_++;
	wire::WireVersionedWrite prefix = w.prefix;
	if (repair)
		prefix.flags |= wire::kVersionedRepair;
	if (w.seq != 0)
		// Sent over RDMA, unanswered: the same write again, which the
		// module applies only if the SEND never was.
		return tcp_->retry_write(w.seq, w.tc, w.region_id, w.fa, w.count,
		                         w.versioned ? &prefix : nullptr, w.src, t);
	if (!w.versioned)
		return tcp_->write_pages(w.tc, w.region_id, w.fa, w.count, w.src, t);
	tcp_->write_versioned(w.tc, w.region_id, w.fa, w.count, prefix, w.src, t);
}

void RdmaChannel::writes_to_tcp(std::vector<WriteSlot> unanswered)
{
	if (!unanswered.empty() && tcp_->connected()) {
		// First the fence, then the copies: the module handles them in
		// this order (see the top of rdma_channel.h).
		wire::Header h{};
		h.type = uint8_t(wire::MsgType::kRdmaFence);
		h.tclass = uint8_t(wire::TrafficClass::kControl);
		tcp_->call(h, {}, fence_reply_.get());
		counters_.fences++;
	}
	std::sort(unanswered.begin(), unanswered.end(), [](const WriteSlot &a, const WriteSlot &b) {
		return a.request_id < b.request_id;
	});
	for (const WriteSlot &s : unanswered) {
		counters_.write_fallbacks++;
		write_over_tcp(s.w, true);
	}
	pump_writes();
}

} // namespace memfed
