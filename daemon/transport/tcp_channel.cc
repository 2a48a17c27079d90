#include "daemon/transport/tcp_channel.h"

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "daemon/common/clock.h"
#include "daemon/common/crc32c.h"
#include "daemon/common/log.h"
#include "daemon/transport/sync_client.h"
#include "daemon/wire/codec.h"

namespace memfed
{

namespace
{
constexpr const char *kComp = "tcp_channel";
constexpr size_t kRecvChunk = 256 * 1024;
constexpr size_t kMaxIov = 1024; // IOV_MAX
// Responses one landing receive scatters into (two iovecs each).
constexpr size_t kMaxLanding = 64;
constexpr uint32_t kNoSlot = UINT32_MAX;
constexpr uint64_t kConfirmNs = 50'000'000; // a silence is checked twice, this far apart
} // namespace

struct TcpChannel::Slot {
	uint8_t hdr[wire::kHeaderSize];
	std::vector<uint8_t> payload; // copy of a call() payload, or a prefix
	const void *pages = nullptr;  // WRITE source, sent after the payload
	void *dst = nullptr;          // READ destination
	size_t dst_len = 0;
	size_t pages_len = 0;
	Completion *done = nullptr;
	uint64_t request_id = 0;
	uint32_t gen = 0;
	uint8_t type = 0;
	bool in_use = false;
};

class TcpChannel::SendOp : public IoOp
{
public:
	explicit SendOp(TcpChannel *c) : c_(c) {}
	void complete(int res, uint32_t) override { c_->on_send(res); }
	msghdr msg{};

private:
	TcpChannel *c_;
};

class TcpChannel::RecvOp : public IoOp
{
public:
	explicit RecvOp(TcpChannel *c) : c_(c) {}
	void complete(int res, uint32_t) override { c_->on_recv(res); }

private:
	TcpChannel *c_;
};

// The silence timer. Its CQEs (the timeout's, and a timeout-remove's when
// the channel breaks first) are counted, so that the channel completes its
// requests, and can be destroyed, only once the kernel holds none of them.
class TcpChannel::TimerOp : public IoOp
{
public:
	explicit TimerOp(TcpChannel *c) : c_(c) {}
	void complete(int res, uint32_t) override { c_->on_timer(res); }
	__kernel_timespec ts{};

private:
	TcpChannel *c_;
};

Result<std::unique_ptr<TcpChannel>>
TcpChannel::connect(EventLoop *loop, const std::string &host_port, ModuleId self, Options opts)
{
	auto sc = SyncClient::connect(host_port, self, opts.connect_timeout_ms, opts.tls,
	                              opts.conn_class);
	if (!sc)
		return sc.status();
	MF_RETURN_IF_ERROR((*sc)->hello(opts.capabilities));
	PeerInfo peer = (*sc)->peer();
	std::unique_ptr<trust::TlsSession> tls = (*sc)->release_session();
	int fd = (*sc)->release_fd();
	std::unique_ptr<TcpChannel> ch(
	        new TcpChannel(loop, fd, peer, self, std::max(1u, opts.initial_slots),
	                       std::move(tls), opts.request_timeout_ms, std::move(opts.session)));
	ch->arm_recv();
	LOG_DEBUG(kComp, "connected to module %s at %s", peer.module.to_string().c_str(),
	          peer.endpoint.c_str());
	return ch;
}

TcpChannel::TcpChannel(EventLoop *loop, int fd, PeerInfo peer, ModuleId self, unsigned slots,
                       std::unique_ptr<trust::TlsSession> tls, unsigned request_timeout_ms,
                       std::shared_ptr<RequestSession> session)
    : loop_(loop), fd_(fd), peer_(std::move(peer)), session_(std::move(session)), self_(self),
      send_op_(new SendOp(this)), recv_op_(new RecvOp(this)), timer_op_(new TimerOp(this)),
      timeout_ns_(uint64_t{request_timeout_ms} * 1000000u), tls_(std::move(tls)),
      rx_(kRecvChunk * 2)
{
	slots_.reserve(slots);
	free_.reserve(slots);
	for (unsigned i = 0; i < slots; i++) {
		slots_.push_back(std::make_unique<Slot>());
		free_.push_back(slots - 1 - i);
	}
	for (auto &q : queues_)
		q.items.reserve(slots);
	iov_.reserve(kMaxIov);
	hdr_batch_.reserve(kMaxIov * wire::kHeaderSize);
	landing_.reserve(kMaxLanding);
	rx_iov_.reserve(2 * kMaxLanding);
	// At most twice the slots plus one batch before kick_send compacts it.
	sent_.reserve(2 * size_t{slots} + kMaxIov);
}

TcpChannel::~TcpChannel()
{
	close();
	while (sending_ || recv_armed_ || timer_cqes_ > 0)
		loop_->run_once(100);
	if (fd_ >= 0)
		::close(fd_);
}

void TcpChannel::close()
{
	broken("channel closed by this side");
}

uint32_t TcpChannel::alloc_slot()
{
	if (free_.empty()) {
		// Beyond the preallocated depth: grow (allocates, off the steady path).
		size_t n = slots_.size();
		for (size_t i = 0; i < n; i++) {
			slots_.push_back(std::make_unique<Slot>());
			free_.push_back(static_cast<uint32_t>(2 * n - 1 - i));
		}
		for (auto &q : queues_)
			q.items.reserve(slots_.size());
	}
	uint32_t idx = free_.back();
	free_.pop_back();
	return idx;
}

void TcpChannel::fail_later(Completion *done, uint8_t type, Status st)
{
	loop_->post([done, type, st]() {
		wire::Header h{};
		h.type = type;
		h.flags = wire::kFlagResponse;
		h.status = static_cast<uint16_t>(st.code());
		done->on_reply(st, h, {});
	});
}

void TcpChannel::read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                            uint32_t count, void *dst, Completion *done)
{
	wire::Header h{};
	h.type = static_cast<uint8_t>(wire::MsgType::kRead);
	h.tclass = static_cast<uint8_t>(tc);
	h.region_id = region_id;
	h.offset = fa_offset;
	h.count = count;
	enqueue(h, {}, nullptr, dst, done);
}

void TcpChannel::write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                             uint32_t count, const void *src, Completion *done)
{
	wire::Header h{};
	h.type = static_cast<uint8_t>(wire::MsgType::kWrite);
	h.tclass = static_cast<uint8_t>(tc);
	h.region_id = region_id;
	h.offset = fa_offset;
	h.count = count;
	send_write(h, {}, src, 0, false, done);
}

void TcpChannel::retry_write(uint64_t seq, wire::TrafficClass tc, uint32_t region_id,
                             uint64_t fa_offset, uint32_t count,
                             const wire::WireVersionedWrite *prefix, const void *src,
                             Completion *done)
{
	auto type = prefix != nullptr ? wire::MsgType::kWriteVersioned : wire::MsgType::kWrite;
	if (!session_ || seq == 0 || seq > session_->last_seq())
		return fail_later(done, uint8_t(type),
		                  Status(broken_ ? Code::kUnavailable : Code::kInvalidArgument,
		                         "retry of write " + std::to_string(seq) +
		                                 " not sent: the channel carries no session that "
		                                 "sent it"));
	wire::Header h{};
	h.type = static_cast<uint8_t>(type);
	h.tclass = static_cast<uint8_t>(tc);
	h.region_id = region_id;
	h.offset = fa_offset;
	h.count = count;
	uint8_t p[wire::kVersionedWriteSize];
	if (prefix != nullptr)
		wire::encode_versioned_write(*prefix, p);
	send_write(h, {p, prefix != nullptr ? sizeof(p) : 0}, src, seq, true, done);
}

void TcpChannel::send_write(wire::Header &h, std::span<const uint8_t> prefix, const void *src,
                            uint64_t seq, bool retry, Completion *done)
{
	if (!session_ || broken_)
		return enqueue(h, prefix, src, nullptr, done);
	// The sequence, then the type's own prefix; the pages follow from src.
	uint8_t p[wire::kSequenceSize + wire::kVersionedWriteSize];
	wire::encode_sequence({session_->id(), seq != 0 ? seq : session_->next_seq()}, p);
	if (!prefix.empty())
		std::memcpy(p + wire::kSequenceSize, prefix.data(), prefix.size());
	h.flags = wire::kFlagSequenced | (retry ? wire::kFlagRetry : 0);
	enqueue(h, {p, wire::kSequenceSize + prefix.size()}, src, nullptr, done);
}

void TcpChannel::call(const wire::Header &hdr, std::span<const uint8_t> payload, Completion *done)
{
	wire::Header h = hdr;
	enqueue(h, payload, nullptr, nullptr, done);
}

void TcpChannel::write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                                 uint32_t count, const wire::WireVersionedWrite &prefix,
                                 const void *src, Completion *done)
{
	wire::Header h{};
	h.type = static_cast<uint8_t>(wire::MsgType::kWriteVersioned);
	h.tclass = static_cast<uint8_t>(tc);
	h.region_id = region_id;
	h.offset = fa_offset;
	h.count = count;
	uint8_t p[wire::kVersionedWriteSize];
	wire::encode_versioned_write(prefix, p);
	send_write(h, p, src, 0, false, done);
}

void TcpChannel::enqueue(wire::Header &h, std::span<const uint8_t> payload, const void *pages,
                         void *dst, Completion *done)
{
	if (broken_ || fd_ < 0)
		return fail_later(done, h.type,
		                  Status(Code::kUnavailable,
		                         "connection to module " + peer_.module.to_string() +
		                                 " at " + peer_.endpoint + " is lost"));
	h.magic = wire::kWireMagic;
	h.version = peer_.version;
	if (h.hop_limit == 0)
		h.hop_limit = wire::kDefaultHopLimit;
	h.flags &= wire::kFlagSequenced | wire::kFlagRetry; // a sequenced write's, else 0
	h.status = 0;
	h.src_module = self_.value;
	h.dst_module = peer_.module.value;
	size_t pages_len = pages != nullptr ? size_t{h.count} * wire::kPageSize : 0;
	// A payload and pages: the payload is a prefix, sent before them.
	h.payload_len = static_cast<uint32_t>(payload.size() + pages_len);
	h.payload_crc = 0;
	// A bad request from the caller must not reach the peer, which would
	// drop the connection and every other request on it.
	Status bad = wire::validate_fields(h);
	if (!bad.is_ok() || payload.size() + pages_len > wire::kMaxPayload)
		return fail_later(done, h.type,
		                  Status(Code::kInvalidArgument,
		                         std::string(wire::msg_type_name(h.type)) +
		                                 " request not sent: " + bad.message()));
	uint32_t idx = alloc_slot();
	Slot &s = *slots_[idx];
	s.in_use = true;
	s.done = done;
	s.dst = dst;
	s.pages = pages;
	s.type = h.type;
	s.request_id = (uint64_t{s.gen} << 32) | idx;
	s.payload.assign(payload.begin(), payload.end());
	s.pages_len = pages_len;
	s.dst_len = dst != nullptr ? size_t{h.count} * wire::kPageSize : 0;
	h.request_id = s.request_id;
	if (pages != nullptr) {
		uint32_t crc = s.payload.empty() ? 0 : crc32c(s.payload.data(), s.payload.size());
		h.payload_crc = pages_len ? crc32c(pages, pages_len, crc) : crc;
		wire::encode_header_raw(h, s.hdr);
	} else {
		wire::encode_header(h, s.payload, s.hdr);
	}
	queues_[h.tclass].items.push_back(idx);
	if (in_flight_++ == 0 && timeout_ns_ > 0) {
		// The silence counts from the first request waiting.
		last_heard_ns_ = mono_ns();
		if (!timer_armed_)
			arm_timer(timeout_ns_);
	}
	// Requests issued from completions of one receive leave in one batch.
	if (!in_recv_)
		kick_send();
}

void TcpChannel::kick_send()
{
	if (sending_ || broken_)
		return;
	iov_.clear();
	hdr_batch_.clear();
	size_t bytes = 0;
	// Fault class first, then control, then bulk.
	for (auto &q : queues_) {
		while (!q.empty() && bytes < kMaxBatchBytes && iov_.size() + 2 <= kMaxIov &&
		       hdr_batch_.size() < kMaxIov * wire::kHeaderSize) {
			uint32_t idx = q.items[q.head++];
			Slot &s = *slots_[idx];
			if (s.dst_len > 0 && !tls_)
				sent_.push_back({idx, s.request_id});
			bytes += wire::kHeaderSize;
			if (s.pages_len == 0 && s.payload.empty()) {
				// Header-only requests (READs) go out of one
				// contiguous buffer: fewer pieces for the kernel.
				uint8_t *at = hdr_batch_.data() + hdr_batch_.size();
				hdr_batch_.insert(hdr_batch_.end(), s.hdr,
				                  s.hdr + wire::kHeaderSize);
				iovec *last = iov_.empty() ? nullptr : &iov_.back();
				if (last &&
				    static_cast<uint8_t *>(last->iov_base) + last->iov_len == at)
					last->iov_len += wire::kHeaderSize;
				else
					iov_.push_back({at, wire::kHeaderSize});
				continue;
			}
			iov_.push_back({s.hdr, wire::kHeaderSize});
			if (!s.payload.empty()) {
				iov_.push_back({s.payload.data(), s.payload.size()});
				bytes += s.payload.size();
			}
			if (s.pages_len) {
				iov_.push_back({const_cast<void *>(s.pages), s.pages_len});
				bytes += s.pages_len;
			}
		}
		if (q.empty())
			q.items.clear(), q.head = 0;
	}
	if (tls_) {
		tls_send();
		return;
	}
	if (iov_.empty())
		return;
	// Live entries are bounded by the slots; drop answered ones when the
	// queue outgrows that (responses parsed from rx_ are not removed).
	if (sent_.size() - sent_head_ > 2 * slots_.size()) {
		// Entries before sent_head_ were planned already: never again.
		sent_.erase(sent_.begin(), sent_.begin() + long(sent_head_));
		std::erase_if(sent_, [this](const Sent &e) {
			return !slots_[e.idx]->in_use || slots_[e.idx]->request_id != e.request_id;
		});
		sent_head_ = 0;
	}
	iov_at_ = 0;
	send_op_->msg = msghdr{};
	send_op_->msg.msg_iov = iov_.data();
	send_op_->msg.msg_iovlen = iov_.size();
	io_uring_sqe *sq = loop_->sqe(send_op_.get());
	io_uring_prep_sendmsg(sq, fd_, &send_op_->msg, MSG_NOSIGNAL);
	sending_ = true;
}

// Encrypts the batch in iov_ (if any) and sends it with whatever else the
// session has queued. False if the channel broke.
bool TcpChannel::tls_send()
{
	if (!iov_.empty()) {
		Status st = tls_->encrypt(iov_.data(), iov_.size());
		iov_.clear();
		if (!st.is_ok()) {
			broken(st.message());
			return false;
		}
	}
	tls_tx_.clear();
	tls_->take_output(tls_tx_);
	if (tls_tx_.readable() == 0)
		return true;
	tls_sent_ = 0;
	io_uring_sqe *sq = loop_->sqe(send_op_.get());
	io_uring_prep_send(sq, fd_, tls_tx_.read_ptr(), tls_tx_.readable(), MSG_NOSIGNAL);
	sending_ = true;
	return true;
}

void TcpChannel::on_send(int res)
{
	sending_ = false;
	if (broken_)
		return maybe_finish_close();
	if (res < 0)
		return broken(std::string("send failed: ") + strerror(-res));
	if (tls_) {
		tls_sent_ += res;
		if (tls_sent_ < tls_tx_.readable()) {
			io_uring_sqe *sq = loop_->sqe(send_op_.get());
			io_uring_prep_send(sq, fd_, tls_tx_.read_ptr() + tls_sent_,
			                   tls_tx_.readable() - tls_sent_, MSG_NOSIGNAL);
			sending_ = true;
			return;
		}
		tls_tx_.clear();
		return kick_send();
	}
	size_t n = res;
	while (n > 0 && iov_at_ < iov_.size()) {
		iovec &v = iov_[iov_at_];
		if (n >= v.iov_len) {
			n -= v.iov_len;
			iov_at_++;
		} else {
			v.iov_base = static_cast<uint8_t *>(v.iov_base) + n;
			v.iov_len -= n;
			n = 0;
		}
	}
	if (iov_at_ < iov_.size()) {
		send_op_->msg = msghdr{};
		send_op_->msg.msg_iov = iov_.data() + iov_at_;
		send_op_->msg.msg_iovlen = iov_.size() - iov_at_;
		io_uring_sqe *sq = loop_->sqe(send_op_.get());
		io_uring_prep_sendmsg(sq, fd_, &send_op_->msg, MSG_NOSIGNAL);
		sending_ = true;
		return;
	}
	kick_send();
}

void TcpChannel::arm_recv()
{
	if (broken_ || recv_armed_)
		return;
	if (tls_) {
		ByteBuffer &in = tls_->input();
		in.ensure_writable(kRecvChunk);
		io_uring_sqe *sq = loop_->sqe(recv_op_.get());
		io_uring_prep_recv(sq, fd_, in.write_ptr(), in.writable(), 0);
		recv_armed_ = true;
		return;
	}
	bool land = direct_slot_ == kNoSlot && plan_landing();
	io_uring_sqe *sq = loop_->sqe(recv_op_.get());
	if (direct_slot_ != kNoSlot) {
		auto *dst = static_cast<uint8_t *>(slots_[direct_slot_]->dst);
		io_uring_prep_recv(sq, fd_, dst + direct_done_,
		                   direct_hdr_.payload_len - direct_done_, 0);
	} else if (land) {
		rx_msg_ = msghdr{};
		rx_msg_.msg_iov = rx_iov_.data();
		rx_msg_.msg_iovlen = rx_iov_.size();
		io_uring_prep_recvmsg(sq, fd_, &rx_msg_, 0);
		landing_recv_ = true;
	} else {
		// Nothing to land: the next responses may be those of requests
		// not sent yet (issued later, or queued behind the send in the
		// kernel), and on one vCPU they may all be queued by the time
		// this receive runs. Taking one header and page at most leaves
		// the rest to land (or a large READ payload to go straight to its
		// dst). Bytes already in rx_ mean a response is under way: take
		// what is there.
		rx_.ensure_writable(kRecvChunk);
		size_t want =
		        rx_.readable() == 0 ? wire::kHeaderSize + wire::kPageSize : rx_.writable();
		io_uring_prep_recv(sq, fd_, rx_.write_ptr(), want, 0);
	}
	recv_armed_ = true;
}

void TcpChannel::on_recv(int res)
{
	recv_armed_ = false;
	bool landing = landing_recv_;
	landing_recv_ = false;
	if (broken_)
		return maybe_finish_close();
	if (res == 0)
		return broken("module closed the connection");
	if (res < 0)
		return broken(std::string("receive failed: ") + strerror(-res));
	if (timeout_ns_ > 0)
		last_heard_ns_ = mono_ns();
	in_recv_ = true;
	bool ok = tls_ ? tls_receive(res) : landing ? land(res) : deliver(res);
	in_recv_ = false;
	if (!ok)
		return;
	kick_send();
	arm_recv();
}

// Decrypts `n` newly received bytes of ciphertext and completes the
// responses they finish. Headers (and non-READ payloads) are decrypted into
// rx_, no further than the response they belong to; once a READ response's
// header is parsed, its pages are decrypted straight into the caller's dst
// (a record is opened in place there; dst's bytes count only once the READ
// completes with success). A record that fails (tampered, an alert) breaks
// the channel before anything more is parsed, and completes the READ whose
// pages it carried with kUnavailable. False if it broke.
bool TcpChannel::tls_receive(size_t n)
{
	tls_->input().commit(n);
	while (!broken_) {
		if (direct_slot_ != kNoSlot) {
			auto *dst = static_cast<uint8_t *>(slots_[direct_slot_]->dst);
			auto got = tls_->decrypt(dst + direct_done_,
			                         direct_hdr_.payload_len - direct_done_);
			if (!got) {
				broken(got.status().message());
				return false;
			}
			if (*got == 0)
				return true;
			direct_done_ += *got;
			bytes_into_dst_ += *got;
			if (direct_done_ < direct_hdr_.payload_len)
				continue;
			uint32_t idx = direct_slot_;
			direct_slot_ = kNoSlot;
			std::span<const uint8_t> pages(
			        static_cast<const uint8_t *>(slots_[idx]->dst),
			        direct_hdr_.payload_len);
			finish(idx, check_pages(direct_hdr_, pages), direct_hdr_, {});
			continue;
		}
		// The rest of the next header, or of the response it starts.
		size_t want = wire::kHeaderSize - std::min(rx_.readable(), wire::kHeaderSize);
		if (want == 0) {
			wire::Header h;
			if (!wire::validate_header({rx_.read_ptr(), wire::kHeaderSize}, &h).is_ok())
				return parse_responses(); // breaks the channel, naming why
			want = wire::kHeaderSize + h.payload_len - rx_.readable();
		}
		rx_.ensure_writable(want);
		auto got = tls_->decrypt(rx_.write_ptr(), want);
		if (!got) {
			broken(got.status().message());
			return false;
		}
		if (*got == 0)
			return true;
		rx_.commit(*got);
		if (!parse_responses())
			return false;
	}
	return false;
}

// Extends the landing plan with the READs sent since, in order, and lays
// out the next receive over it: the rest of each expected header, then the
// rest of its pages. False when there is nothing to land or the receive
// buffer holds bytes (they come first): receive into rx_.
bool TcpChannel::plan_landing()
{
	if (rx_.readable() != 0)
		return false;
	landing_.erase(landing_.begin(), landing_.begin() + land_head_);
	land_head_ = 0;
	while (landing_.size() < kMaxLanding && sent_head_ < sent_.size()) {
		Sent e = sent_[sent_head_++];
		const Slot &s = *slots_[e.idx];
		if (s.in_use && s.request_id == e.request_id)
			landing_.emplace_back(e.idx, e.request_id, s.dst_len);
	}
	if (sent_head_ == sent_.size() || sent_head_ >= kMaxIov) {
		// Planned entries go: all of them, or a batch's worth at a time
		// when sends keep ahead of the plans.
		sent_.erase(sent_.begin(), sent_.begin() + long(sent_head_));
		sent_head_ = 0;
	}
	if (landing_.empty())
		return false;
	rx_iov_.clear();
	for (Landing &l : landing_) {
		if (l.hdr_done < wire::kHeaderSize)
			rx_iov_.push_back({l.hdr + l.hdr_done, wire::kHeaderSize - l.hdr_done});
		if (l.pay_done < l.len)
			rx_iov_.push_back({static_cast<uint8_t *>(slots_[l.idx]->dst) + l.pay_done,
			                   l.len - l.pay_done});
	}
	return true;
}

// Completes what `n` bytes of a landing receive finish. False if the
// channel broke.
bool TcpChannel::land(size_t n)
{
	for (size_t i = land_head_; n > 0 && i < landing_.size(); i++) {
		Landing &l = landing_[i];
		size_t h = std::min(n, wire::kHeaderSize - l.hdr_done);
		l.hdr_done += h;
		n -= h;
		size_t p = std::min(n, l.len - l.pay_done);
		l.pay_done += p;
		n -= p;
	}
	while (!broken_ && land_head_ < landing_.size()) {
		Landing &l = landing_[land_head_];
		if (l.hdr_done < wire::kHeaderSize)
			return true;
		wire::Header h;
		Status st = wire::validate_header({l.hdr, wire::kHeaderSize}, &h);
		if (!st.is_ok()) {
			broken(st.message());
			return false;
		}
		if (!l.matched) {
			l.matched = (h.flags & wire::kFlagResponse) &&
			            h.request_id == l.request_id &&
			            h.type == static_cast<uint8_t>(wire::MsgType::kRead) &&
			            h.status == 0 && h.payload_len == l.len;
			if (!l.matched) {
				unland();
				return parse_responses();
			}
		}
		if (l.pay_done < l.len)
			return true;
		land_head_++;
		bytes_into_dst_ += l.len;
		std::span<const uint8_t> got(static_cast<const uint8_t *>(slots_[l.idx]->dst),
		                             l.len);
		finish(l.idx, check_pages(h, got), h, {});
	}
	return !broken_;
}

// A response arrived out of the planned order: the plan's bytes move to
// rx_ in the order received (rx_ is empty while landing) and the plan ends.
void TcpChannel::unland()
{
	for (size_t i = land_head_; i < landing_.size(); i++) {
		const Landing &l = landing_[i];
		if (l.hdr_done > 0)
			std::memcpy(rx_.append(l.hdr_done), l.hdr, l.hdr_done);
		if (l.pay_done > 0)
			std::memcpy(rx_.append(l.pay_done), slots_[l.idx]->dst, l.pay_done);
	}
	landing_.clear();
	land_head_ = 0;
}

// Completes what `n` newly received bytes finish. False if the channel broke.
bool TcpChannel::deliver(size_t n)
{
	if (direct_slot_ != kNoSlot) {
		direct_done_ += n;
		bytes_into_dst_ += n;
		if (direct_done_ < direct_hdr_.payload_len)
			return true;
		uint32_t idx = direct_slot_;
		direct_slot_ = kNoSlot;
		std::span<const uint8_t> got(static_cast<const uint8_t *>(slots_[idx]->dst),
		                             direct_hdr_.payload_len);
		finish(idx, check_pages(direct_hdr_, got), direct_hdr_, {});
	} else {
		rx_.commit(n);
	}
	return parse_responses();
}

// Completes every response fully in rx_. False if the channel broke.
bool TcpChannel::parse_responses()
{
	while (!broken_ && direct_slot_ == kNoSlot) {
		if (rx_.readable() < wire::kHeaderSize)
			return true;
		wire::Header h;
		Status st = wire::validate_header({rx_.read_ptr(), wire::kHeaderSize}, &h);
		if (!st.is_ok()) {
			broken(st.message());
			return false;
		}
		uint32_t idx = static_cast<uint32_t>(h.request_id);
		if (!(h.flags & wire::kFlagResponse) || idx >= slots_.size() ||
		    !slots_[idx]->in_use || slots_[idx]->request_id != h.request_id ||
		    slots_[idx]->type != h.type) {
			broken("unexpected " + std::string(wire::msg_type_name(h.type)) +
			       ((h.flags & wire::kFlagResponse) ? " response" : " request") +
			       " with request_id " + std::to_string(h.request_id));
			return false;
		}
		Slot &s = *slots_[idx];
		bool pages = h.type == static_cast<uint8_t>(wire::MsgType::kRead) && h.status == 0;
		if (pages && s.dst != nullptr) {
			if (h.payload_len != s.dst_len) {
				broken("READ response carries " + std::to_string(h.payload_len) +
				       " bytes for a request of " + std::to_string(s.dst_len));
				return false;
			}
			size_t avail =
			        std::min<size_t>(rx_.readable() - wire::kHeaderSize, h.payload_len);
			if (avail < h.payload_len &&
			    (tls_ || h.payload_len - avail >= wire::kPageSize)) {
				// A page or more is still on its way (under TLS: any
				// of it): receive (decrypt) the rest straight into
				// the caller's buffer.
				std::memcpy(s.dst, rx_.read_ptr() + wire::kHeaderSize, avail);
				rx_.consume(wire::kHeaderSize + avail);
				direct_slot_ = idx;
				direct_hdr_ = h;
				direct_done_ = avail;
				return true;
			}
			if (avail < h.payload_len) {
				rx_.ensure_writable(wire::kHeaderSize + h.payload_len -
				                    rx_.readable());
				return true;
			}
			std::span<const uint8_t> p(rx_.read_ptr() + wire::kHeaderSize,
			                           h.payload_len);
			std::memcpy(s.dst, p.data(), p.size());
			st = check_pages(h, p);
			rx_.consume(wire::kHeaderSize + h.payload_len);
			finish(idx, st, h, {});
			continue;
		}
		if (rx_.readable() < wire::kHeaderSize + h.payload_len) {
			rx_.ensure_writable(wire::kHeaderSize + h.payload_len - rx_.readable());
			return true;
		}
		std::span<const uint8_t> p(rx_.read_ptr() + wire::kHeaderSize, h.payload_len);
		st = wire::check_payload(h, p);
		if (!st.is_ok()) {
			broken(st.message());
			return false;
		}
		// The payload stays in rx_ during the completion; consume after.
		finish(idx, wire::response_status(h, p), h, p);
		rx_.consume(wire::kHeaderSize + h.payload_len);
	}
	return !broken_;
}

// The pages of a READ response: a damaged page fails this READ alone.
Status TcpChannel::check_pages(const wire::Header &h, std::span<const uint8_t> pages)
{
	Status st = wire::check_read_pages(h, pages);
	if (!st.is_ok())
		LOG_WARN(kComp, "module %s at %s: %s", peer_.module.to_string().c_str(),
		         peer_.endpoint.c_str(), st.message().c_str());
	return st;
}

void TcpChannel::finish(uint32_t idx, const Status &st, const wire::Header &h,
                        std::span<const uint8_t> payload)
{
	Slot &s = *slots_[idx];
	Completion *done = s.done;
	s.in_use = false;
	s.done = nullptr;
	s.dst = nullptr;
	s.pages = nullptr;
	s.pages_len = 0;
	s.gen++;
	free_.push_back(idx);
	in_flight_--;
	done->on_reply(st, h, payload);
}

void TcpChannel::arm_timer(uint64_t in_ns)
{
	timer_op_->ts.tv_sec = int64_t(in_ns / 1000000000u);
	timer_op_->ts.tv_nsec = int64_t(in_ns % 1000000000u);
	io_uring_sqe *sq = loop_->sqe(timer_op_.get());
	io_uring_prep_timeout(sq, &timer_op_->ts, 0, 0);
	timer_armed_ = true;
	timer_cqes_++;
}

void TcpChannel::on_timer(int res)
{
	(void)res; // -ETIME, or the remove's outcome once broken
	timer_cqes_--;
	if (broken_)
		return maybe_finish_close(); // broken() cleared timer_armed_
	timer_armed_ = false;
	if (in_flight_ == 0) {
		confirming_ = false;
		return; // idle: armed again by the next request
	}
	uint64_t now = mono_ns();
	// Bytes already waiting in the socket mean the module did answer: this
	// thread was the one held up (a long step elsewhere on the loop), so
	// the silence is ours, not the module's.
	int queued = 0;
	if (now - last_heard_ns_ >= timeout_ns_ && ioctl(fd_, FIONREAD, &queued) == 0 && queued > 0)
		last_heard_ns_ = now;
	uint64_t silent = now - last_heard_ns_;
	if (silent < timeout_ns_) {
		confirming_ = false;
		return arm_timer(timeout_ns_ - silent);
	}
	if (!confirming_) {
		// Once more, shortly: a receive that completed while this loop
		// was held up may be queued behind this timer's completion.
		confirming_ = true;
		return arm_timer(kConfirmNs);
	}
	confirming_ = false;
	broken("no answer for " + std::to_string(silent / 1000000u) + " ms while " +
	       std::to_string(in_flight_) +
	       " request(s) waited (request_timeout_ms; the module is stopped, hung or "
	       "unreachable)");
}

void TcpChannel::broken(const std::string &why)
{
	if (broken_)
		return;
	broken_ = true;
	// Nothing more is sent: the next channel to the module continues the
	// write session (request_session.h).
	if (session_)
		session_->release();
	session_.reset();
	if (timer_armed_) {
		io_uring_sqe *sq = loop_->sqe(timer_op_.get());
		io_uring_prep_timeout_remove(sq, reinterpret_cast<uint64_t>(timer_op_.get()), 0);
		timer_armed_ = false;
		timer_cqes_++;
	}
	if (why != "channel closed by this side")
		LOG_WARN(kComp, "connection to module %s at %s lost: %s",
		         peer_.module.to_string().c_str(), peer_.endpoint.c_str(), why.c_str());
	if (fd_ >= 0)
		shutdown(fd_, SHUT_RDWR);
	unavailable_why_ = why;
	maybe_finish_close();
}

// Once no operation of ours is in the kernel (so no buffer of a caller is
// still read or written), completes every pending request with kUnavailable.
void TcpChannel::maybe_finish_close()
{
	if (sending_ || recv_armed_ || timer_cqes_ > 0)
		return;
	direct_slot_ = kNoSlot;
	landing_.clear();
	land_head_ = 0;
	sent_.clear();
	sent_head_ = 0;
	for (auto &q : queues_)
		q.items.clear(), q.head = 0;
	Status st(Code::kUnavailable, "connection to module " + peer_.module.to_string() + " at " +
	                                      peer_.endpoint + " lost: " + unavailable_why_);
	for (uint32_t i = 0; i < slots_.size(); i++) {
		if (!slots_[i]->in_use)
			continue;
		wire::Header h{};
		h.type = slots_[i]->type;
		h.flags = wire::kFlagResponse;
		h.status = static_cast<uint16_t>(Code::kUnavailable);
		h.request_id = slots_[i]->request_id;
		finish(i, st, h, {});
	}
}

} // namespace memfed
