#include "daemon/service/local_channel.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "daemon/common/log.h"
#include "daemon/wire/codec.h"

namespace memfed
{

struct LocalChannel::Slot final : LocalRequest {
	LocalChannel *ch = nullptr;
	uint32_t idx = 0;
	Completion *done = nullptr;
	wire::Header req{};           // as issued
	wire::Header resp{};          // set when finished
	std::vector<uint8_t> in, out; // call(): the request's and the response's payload
	bool in_use = false;
	bool is_call = false;       // resp and out are set by serve_call
	bool at_writer = false;     // handed to the ModuleService's writer
	bool pending_write = false; // a WRITE counted in pending_writes_
	bool versioned = false;     // a WRITE_VERSIONED: `out` is its answer
	void finished() override
	{
		if (kind == Kind::kOrdered)
			ch->serve_call(*this); // its turn after the WRITEs before it
		if (versioned && status.is_ok()) {
			out.resize(wire::kAppliedSize); // no allocation once grown
			wire::encode_applied(applied, out.data());
		}
		ch->ready_from_writer(*this);
	}
};

// Completes the finished slots: a NOP queued by the loop thread itself, or
// a read of the eventfd the writer thread signals.
class LocalChannel::ReadyOp : public IoOp
{
public:
	ReadyOp(LocalChannel *ch, bool wake) : ch_(ch), wake_(wake) {}
	void complete(int res, uint32_t) override
	{
		if (wake_) {
			ch_->wake_armed_ = false;
			if (res < 0 && res != -EINTR && res != -EAGAIN && res != -ECANCELED)
				LOG_ERROR("local_channel", "reading the wake eventfd failed: %s",
				          strerror(-res));
		} else {
			ch_->nop_armed_ = false;
		}
		ch_->deliver();
		// (A completion may have armed it again already.)
		if (wake_ && ch_->at_writer_ > 0 && !ch_->wake_armed_)
			ch_->arm_wake();
	}

private:
	LocalChannel *ch_;
	bool wake_;
};

LocalChannel::LocalChannel(EventLoop *loop, ModuleStore *store, ModuleService *service)
    : loop_(loop), store_(store), service_(service), nop_op_(new ReadyOp(this, false)),
      wake_op_(new ReadyOp(this, true))
{
	PoolInfo i = store->info();
	peer_.module = store->module_id();
	peer_.capabilities = wire::kCapModule;
	peer_.capacity_bytes = i.capacity_bytes;
	peer_.version = wire::kWireVersion;
	wake_fd_ = eventfd(0, EFD_CLOEXEC);
	if (wake_fd_ < 0)
		abort(); // out of fds at start-up: nothing sensible to do
	constexpr unsigned kSlots = 64;
	slots_.reserve(kSlots);
	free_.reserve(kSlots);
	ready_.reserve(kSlots);
	delivering_.reserve(kSlots);
}

LocalChannel::~LocalChannel()
{
	closing_ = true;
	while (in_flight_ > 0 || nop_armed_ || wake_armed_) {
		if (in_flight_ == 0 && wake_armed_) {
			uint64_t one = 1; // nothing will signal it any more
			ssize_t r = write(wake_fd_, &one, sizeof(one));
			(void)r;
		}
		loop_->run_once(100);
	}
	// The writer signals under mu_: once we hold it, it is done with us.
	MutexLock lk(&mu_);
	close(wake_fd_);
}

wire::Header LocalChannel::reply_header(const wire::Header &req, Code code) const
{
	wire::Header h = req;
	h.flags = wire::kFlagResponse;
	h.status = uint16_t(code);
	h.src_module = store_->module_id().value;
	h.dst_module = req.src_module;
	return h;
}

LocalChannel::Slot &LocalChannel::take_slot(Completion *done, const wire::Header &req)
{
	if (free_.empty()) {
		// Deeper than ever before: grow (allocates, off the steady path).
		auto s = std::make_unique<Slot>();
		s->ch = this;
		s->idx = uint32_t(slots_.size());
		free_.push_back(s->idx);
		slots_.push_back(std::move(s));
		free_.reserve(slots_.capacity());
		MutexLock lk(&mu_);
		ready_.reserve(slots_.capacity()); // delivering_: at the end of deliver()
	}
	Slot &s = *slots_[free_.back()];
	free_.pop_back();
	s.in_use = true;
	s.done = done;
	s.req = req;
	s.status = Status::ok();
	s.is_call = false;
	s.at_writer = false;
	s.pending_write = false;
	s.versioned = false;
	s.version = 0;
	s.mode = VersionedMode::kNewer;
	s.applied = 0;
	s.src = nullptr;
	s.dst = nullptr;
	s.region_id = req.region_id;
	s.offset = req.offset;
	s.count = req.count;
	in_flight_++;
	return s;
}

bool LocalChannel::overlaps_pending_write(uint64_t fa, uint32_t count) const
{
	if (pending_writes_ == 0)
		return false;
	uint64_t end = fa + uint64_t(count) * wire::kPageSize;
	for (const auto &s : slots_) {
		if (!s->in_use || !s->pending_write)
			continue;
		uint64_t wend = s->offset + uint64_t(s->count) * wire::kPageSize;
		if (s->offset < end && fa < wend)
			return true;
	}
	return false;
}

void LocalChannel::submit(Slot &s)
{
	s.at_writer = true;
	at_writer_++;
	if (!wake_armed_)
		arm_wake();
	service_->submit_local(&s);
}

void LocalChannel::read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                              uint32_t count, void *dst, Completion *done)
{
	wire::Header req{};
	req.type = uint8_t(wire::MsgType::kRead);
	req.tclass = uint8_t(tc);
	req.region_id = region_id;
	req.offset = fa_offset;
	req.count = count;
	Slot &s = take_slot(done, req);
	if (closing_) {
		s.status = Status(Code::kUnavailable, "channel to the local module is closing");
	} else if (overlaps_pending_write(fa_offset, count)) {
		s.kind = LocalRequest::Kind::kRead;
		s.dst = dst;
		return submit(s);
	} else {
		s.status = store_->read_pages(region_id, fa_offset, count, dst);
	}
	ready_from_loop(s);
}

void LocalChannel::write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                               uint32_t count, const void *src, Completion *done)
{
	wire::Header req{};
	req.type = uint8_t(wire::MsgType::kWrite);
	req.tclass = uint8_t(tc);
	req.region_id = region_id;
	req.offset = fa_offset;
	req.count = count;
	Slot &s = take_slot(done, req);
	if (closing_) {
		s.status = Status(Code::kUnavailable, "channel to the local module is closing");
		return ready_from_loop(s);
	}
	s.kind = LocalRequest::Kind::kWrite;
	s.src = src;
	s.pending_write = true;
	pending_writes_++;
	submit(s);
}

// Control requests go through the same handler the TCP server uses, so the
// local and remote paths cannot drift apart.
void LocalChannel::call(const wire::Header &hdr, std::span<const uint8_t> payload, Completion *done)
{
	Slot &s = take_slot(done, hdr);
	s.in.assign(payload.begin(), payload.end());
	if (closing_) {
		s.status = Status(Code::kUnavailable, "channel to the local module is closing");
		return ready_from_loop(s);
	}
	if (hdr.type == uint8_t(wire::MsgType::kWrite)) {
		if (s.in.size() != size_t(hdr.count) * wire::kPageSize) {
			s.status =
			        Status(Code::kInvalidArgument,
			               "WRITE of " + std::to_string(hdr.count) + " pages carries " +
			                       std::to_string(s.in.size()) + " bytes");
			return ready_from_loop(s);
		}
		// The same durable, batched path as write_pages.
		s.kind = LocalRequest::Kind::kWrite;
		s.src = s.in.data();
		s.pending_write = true;
		pending_writes_++;
		return submit(s);
	}
	if (hdr.type == uint8_t(wire::MsgType::kWriteVersioned)) {
		auto w = wire::decode_versioned_write(hdr.count, s.in);
		if (!w) {
			s.status = Status(Code::kInvalidArgument, w.status().message());
			return ready_from_loop(s);
		}
		return submit_versioned(s, w->prefix, w->pages.data());
	}
	if (pending_writes_ > 0) {
		// Served on the writer after this channel's WRITEs in flight.
		s.kind = LocalRequest::Kind::kOrdered;
		return submit(s);
	}
	serve_call(s);
	ready_from_loop(s);
}

void LocalChannel::write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                                   uint32_t count, const wire::WireVersionedWrite &prefix,
                                   const void *src, Completion *done)
{
	wire::Header req{};
	req.type = uint8_t(wire::MsgType::kWriteVersioned);
	req.tclass = uint8_t(tc);
	req.region_id = region_id;
	req.offset = fa_offset;
	req.count = count;
	Slot &s = take_slot(done, req);
	s.in.clear();
	if (closing_) {
		s.status = Status(Code::kUnavailable, "channel to the local module is closing");
		return ready_from_loop(s);
	}
	submit_versioned(s, prefix, src);
}

// A versioned WRITE: the WRITE path, answered with the pages applied.
void LocalChannel::submit_versioned(Slot &s, const wire::WireVersionedWrite &prefix,
                                    const void *pages)
{
	s.kind = LocalRequest::Kind::kWrite;
	s.src = pages;
	s.version = prefix.version;
	s.mode = (prefix.flags & wire::kVersionedRepair) ? VersionedMode::kRepair
	                                                 : VersionedMode::kNewer;
	s.versioned = true;
	s.pending_write = true;
	pending_writes_++;
	submit(s);
}

// On the loop thread, or on the writer for a kOrdered slot.
void LocalChannel::serve_call(Slot &s)
{
	const wire::Header &hdr = s.req;
	ByteBuffer out;
	Reply reply(&out, 0);
	reply.count = hdr.count;
	reply.offset = hdr.offset;
	reply.region_id = hdr.region_id;
	ConnInfo conn;
	conn.peer = "local";
	conn.module = store_->module_id();
	service_->handle(conn, hdr, s.in, reply);
	s.is_call = true;
	s.resp = reply_header(hdr, reply.code());
	s.resp.count = reply.count;
	s.resp.offset = reply.offset;
	const uint8_t *bytes = out.read_ptr();
	s.out.assign(bytes, bytes + reply.payload_len());
	s.status = reply.ok() ? Status::ok()
	                      : Status(reply.code(), std::string(s.out.begin(), s.out.end()));
	if (!reply.ok())
		s.out.clear();
}

void LocalChannel::ready_from_loop(Slot &s)
{
	{
		MutexLock lk(&mu_);
		ready_.push_back(s.idx); // reserved for the slots: no allocation
	}
	if (nop_armed_)
		return;
	nop_armed_ = true;
	io_uring_prep_nop(loop_->sqe(nop_op_.get()));
}

// On the writer thread.
void LocalChannel::ready_from_writer(Slot &s)
{
	MutexLock lk(&mu_);
	ready_.push_back(s.idx);
	// Under mu_: the destructor closes the fd only once it holds mu_.
	uint64_t one = 1;
	ssize_t r = write(wake_fd_, &one, sizeof(one));
	(void)r;
}

void LocalChannel::arm_wake()
{
	wake_armed_ = true;
	io_uring_prep_read(loop_->sqe(wake_op_.get()), wake_fd_, &wake_value_, sizeof(wake_value_),
	                   0);
}

void LocalChannel::deliver()
{
	{
		MutexLock lk(&mu_);
		delivering_.swap(ready_);
	}
	for (uint32_t idx : delivering_) {
		Slot &s = *slots_[idx];
		if (s.at_writer)
			at_writer_--;
		if (s.pending_write)
			pending_writes_--;
		s.at_writer = s.pending_write = false;
		in_flight_--;
		if (!s.is_call)
			s.resp = reply_header(s.req, s.status.code());
		// The slot is freed after on_reply, which may issue requests
		// (they take other slots) but never destroys the channel.
		bool has_out = (s.is_call || s.versioned) && s.status.is_ok();
		s.done->on_reply(s.status, s.resp,
		                 has_out ? std::span<const uint8_t>(s.out)
		                         : std::span<const uint8_t>());
		s.in_use = false;
		free_.push_back(idx);
	}
	delivering_.clear();
	// It becomes ready_ at the next swap: room for every slot.
	if (delivering_.capacity() < slots_.size())
		delivering_.reserve(slots_.capacity());
}

} // namespace memfed
