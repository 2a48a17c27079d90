// ReplicatedChannel: reads from the nearest copy in sync, writes to every
// live copy, and catches returning copies up (replicated_channel.h).
#include "daemon/service/replicated_channel.h"

#include <algorithm>
#include <cstring>

#include "daemon/common/clock.h"
#include "daemon/common/log.h"

namespace memfed
{

namespace
{
constexpr uint64_t kRetryNs = 2'000'000'000;     // a lost copy is tried again after
constexpr uint64_t kGraveyardNs = 1'000'000'000; // a replaced channel is freed after
constexpr uint32_t kVersionChunk = 65536;        // pages compared per READ_VERSIONS
constexpr uint64_t kSettleNs = 1'000'000'000;    // see the top of replicated_channel.h
constexpr unsigned kMaxPasses = 8;
constexpr const char *kLog = "replica";

// The error a request reports when no copy answered it: kNotFound (the
// region is gone: the pager poisons its mappings) only when every copy said
// so; a copy that could not be asked makes it kUnavailable (faults wait).
Status worse(const Status &so_far, const Status &st, bool first)
{
	if (first)
		return st;
	if (so_far.code() == Code::kNotFound && st.code() != Code::kNotFound)
		return st.code() == Code::kCorrupt ? st : Status(Code::kUnavailable, st.message());
	if (st.code() == Code::kNotFound && so_far.code() != Code::kNotFound)
		return so_far.code() == Code::kCorrupt
		               ? so_far
		               : Status(Code::kUnavailable, so_far.message());
	return st;
}

wire::Header reply_header(uint8_t type, const Status &st)
{
	wire::Header h{};
	h.type = type;
	h.flags = wire::kFlagResponse;
	h.status = uint16_t(st.code());
	return h;
}
} // namespace

// A STAT sent to a lost copy's module: only an answer makes the copy
// catching up again. A channel that was merely idle when its module stopped
// still looks connected, and must not bring the copy back by itself.
struct ReplicatedChannel::Probe : Completion {
	ReplicatedChannel *ch = nullptr;
	size_t i = 0;
	bool busy = false;
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		busy = false;
		ch->probe_done(i, st);
	}
};

struct ReplicatedChannel::Sub {
	ReplicaLocation loc;
	ReplicaSet::State state = ReplicaSet::State::kCatchingUp;
	std::unique_ptr<Channel> ch;
	uint64_t retry_at_ns = 0;
	Probe probe;
	// It left the set (replaced by a copy elsewhere): never asked again;
	// its slot is reused only when the set is full.
	bool gone = false;
};

void ReplicatedChannel::transport_states(std::vector<TransportState> *out) const
{
	for (const auto &s : subs_)
		if (s->ch && !s->gone)
			s->ch->transport_states(out);
}

struct ReplicatedChannel::ReadOp : Completion {
	ReplicatedChannel *ch = nullptr;
	Completion *done = nullptr;
	wire::TrafficClass tc{};
	uint64_t fa = 0;
	uint32_t count = 0;
	void *dst = nullptr;
	uint32_t tried = 0, corrupt = 0;
	size_t cur = 0;
	Status last;
	void on_reply(const Status &st, const wire::Header &resp,
	              std::span<const uint8_t> payload) override
	{
		ch->read_done(this, cur, st, resp, payload);
	}
};

struct ReplicatedChannel::Part : Completion {
	WriteOp *op = nullptr;
	size_t replica = 0;
	void on_reply(const Status &st, const wire::Header &,
	              std::span<const uint8_t> payload) override;
};

struct ReplicatedChannel::WriteOp {
	ReplicatedChannel *ch = nullptr;
	Completion *done = nullptr;
	uint32_t count = 0;
	Part parts[kMaxReplicas];
	bool was_in_sync[kMaxReplicas] = {};
	unsigned pending = 0, ok_in_sync = 0, failures = 0;
	Status last;
};

void ReplicatedChannel::Part::on_reply(const Status &st, const wire::Header &,
                                       std::span<const uint8_t> payload)
{
	op->ch->part_done(op, replica, st, payload);
}

// One step of catch-up or repair; `kind` says which.
struct ReplicatedChannel::CopyStep : Completion {
	enum Kind { kSrcVersions, kTgtVersions, kRead, kWrite } kind;
	ReplicatedChannel *ch;
	CopyStep(Kind k, ReplicatedChannel *c) : kind(k), ch(c) {}
	void on_reply(const Status &st, const wire::Header &,
	              std::span<const uint8_t> payload) override
	{
		if (ch->closing_)
			return;
		switch (kind) {
		case kSrcVersions:
			return ch->versions_done(ch->cu_.source, st, payload);
		case kTgtVersions:
			return ch->versions_done(ch->cu_.target, st, payload);
		case kRead:
			return ch->copy_read_done(st, payload);
		case kWrite:
			return ch->copy_write_done(st);
		}
	}
};

ReplicatedChannel::ReplicatedChannel(EventLoop *loop, std::shared_ptr<ReplicaSet> set,
                                     Federation *fed)
    : loop_(loop), set_(std::move(set)), fed_(fed)
{
	peer_.module = set_->module();
	peer_.capabilities = wire::kCapModule;
	peer_.version = wire::kWireVersion;
	peer_.endpoint = "copies of region '" + set_->name() + "'";
	copy_read_ = std::make_unique<CopyStep>(CopyStep::kRead, this);
	cu_src_read_ = std::make_unique<CopyStep>(CopyStep::kSrcVersions, this);
	cu_tgt_read_ = std::make_unique<CopyStep>(CopyStep::kTgtVersions, this);
	refresh();
}

ReplicatedChannel::~ReplicatedChannel()
{
	// The copies' channels complete what is pending on them; with closing_
	// set, each request then completes its caller without a retry.
	closing_ = true;
	for (auto &s : subs_)
		s->ch.reset();
	graveyard_.clear();
	if (cu_.active)
		set_->release_catch_up(this);
}

bool ReplicatedChannel::connected() const
{
	for (const auto &s : subs_)
		if (s->state == ReplicaSet::State::kInSync && s->ch && s->ch->connected())
			return true;
	return false;
}

void ReplicatedChannel::refresh()
{
	uint64_t now = mono_ns();
	if (!graveyard_.empty() && now - graveyard_at_ns_ > kGraveyardNs)
		graveyard_.clear();
	uint64_t gen = set_->generation();
	if (gen != gen_seen_) {
		gen_seen_ = gen;
		// subs_ only grows, so the indexes held by requests in flight stay
		// valid; order_ ranks them nearest first.
		auto snap = set_->snapshot();
		for (size_t i = 0; i < subs_.size(); i++) {
			Sub &s = *subs_[i];
			bool listed = std::any_of(snap.begin(), snap.end(), [&](const auto &r) {
				return r.loc.module == s.loc.module;
			});
			if (listed || s.gone)
				continue;
			s.gone = true;
			s.state = ReplicaSet::State::kLost;
			if (s.ch) {
				graveyard_.push_back(std::move(s.ch));
				graveyard_at_ns_ = now;
			}
			if (cu_.active && (i == cu_.target || i == cu_.source))
				end_catch_up(false, "the copy on module " +
				                            s.loc.module.to_string() +
				                            " left the set");
		}
		for (const auto &r : snap) {
			Sub *sub = nullptr;
			for (auto &s : subs_)
				if (s->loc.module == r.loc.module)
					sub = s.get();
			if (!sub && subs_.size() < kMaxReplicas) {
				subs_.push_back(std::make_unique<Sub>());
				sub = subs_.back().get();
			}
			for (size_t i = 0; !sub && i < subs_.size(); i++)
				if (subs_[i]->gone && !subs_[i]->ch &&
				    !(cu_.active && (i == cu_.target || i == cu_.source)))
					sub = subs_[i].get();
			if (!sub)
				continue;
			if (sub->gone || sub->loc.region_id != r.loc.region_id)
				sub->retry_at_ns = 0; // a new copy: open it now
			sub->gone = false;
			sub->loc = r.loc;
			sub->state = r.state;
		}
		order_.resize(subs_.size());
		for (size_t i = 0; i < order_.size(); i++)
			order_[i] = i;
		std::stable_sort(order_.begin(), order_.end(), [this](size_t a, size_t b) {
			return subs_[a]->loc.preference < subs_[b]->loc.preference;
		});
	}
	for (size_t i = 0; i < subs_.size(); i++) {
		Sub &s = *subs_[i];
		if (s.gone || s.state != ReplicaSet::State::kLost || now < s.retry_at_ns ||
		    s.probe.busy)
			continue;
		Channel *c = open(i);
		if (c == nullptr)
			continue;
		s.retry_at_ns = now + kRetryNs;
		s.probe.ch = this;
		s.probe.i = i;
		s.probe.busy = true;
		wire::Header h{};
		h.type = uint8_t(wire::MsgType::kStat);
		h.tclass = uint8_t(wire::TrafficClass::kControl);
		c->call(h, {}, &s.probe);
	}
	pump();
}

void ReplicatedChannel::probe_done(size_t i, const Status &st)
{
	if (closing_)
		return;
	Sub &s = *subs_[i];
	if (!st) {
		LOG_DEBUG(kLog, "region '%s': module %s still does not answer: %s",
		          set_->name().c_str(), s.loc.module.to_string().c_str(),
		          st.message().c_str());
		return;
	}
	if (s.state == ReplicaSet::State::kLost)
		set_->set_state(s.loc.module, ReplicaSet::State::kCatchingUp,
		                "answering again; comparing page versions");
	refresh();
}

void ReplicatedChannel::maintain()
{
	refresh();
	check_reachable();
}

void ReplicatedChannel::check_reachable()
{
	for (size_t i = 0; i < subs_.size(); i++) {
		Sub &s = *subs_[i];
		if (s.gone || s.state == ReplicaSet::State::kLost || (s.ch && s.ch->connected()))
			continue;
		bool reconnect = s.ch != nullptr;
		if (open(i) == nullptr) {
			failed(i, Status(Code::kUnavailable, "module " + s.loc.module.to_string() +
			                                             " does not answer"));
		} else if (reconnect && s.state == ReplicaSet::State::kInSync) {
			s.state = ReplicaSet::State::kCatchingUp;
			set_->set_state(
			        s.loc.module, ReplicaSet::State::kCatchingUp,
			        "its connection broke and came back; comparing page versions");
		}
	}
	pump();
}

Channel *ReplicatedChannel::open(size_t i)
{
	Sub &s = *subs_[i];
	if (s.ch && s.ch->connected())
		return s.ch.get();
	uint64_t now = mono_ns();
	if (now < s.retry_at_ns)
		return nullptr;
	s.retry_at_ns = now + kRetryNs;
	auto ch = fed_->open_channel(loop_, s.loc.module);
	if (!ch) {
		LOG_DEBUG(kLog, "region '%s': no channel to module %s: %s", set_->name().c_str(),
		          s.loc.module.to_string().c_str(), ch.status().to_string().c_str());
		return nullptr;
	}
	if (s.ch) {
		graveyard_.push_back(std::move(s.ch));
		graveyard_at_ns_ = now;
	}
	s.ch = std::move(*ch);
	return s.ch.get();
}

void ReplicatedChannel::failed(size_t i, const Status &st)
{
	if (closing_ || i >= subs_.size())
		return;
	Sub &s = *subs_[i];
	s.retry_at_ns = mono_ns() + kRetryNs;
	if (s.gone || s.state == ReplicaSet::State::kLost)
		return;
	s.state = ReplicaSet::State::kLost;
	set_->set_state(s.loc.module, ReplicaSet::State::kLost, st.message());
	if (cu_.active && (i == cu_.target || i == cu_.source))
		end_catch_up(false, st.message());
}

int ReplicatedChannel::pick(uint32_t tried)
{
	for (size_t i : order_) {
		if (subs_[i]->state != ReplicaSet::State::kInSync || (tried >> i & 1))
			continue;
		if (open(i) != nullptr)
			return int(i);
	}
	return -1;
}

Status ReplicatedChannel::no_copy_in_sync(const char *to_do) const
{
	return Status(Code::kUnavailable, "no copy of region '" + set_->name() +
	                                          "' in sync is reachable" + to_do +
	                                          " (memfedctl region show " + set_->name() + ")");
}

void ReplicatedChannel::fail_later(Completion *done, uint8_t type, Status st)
{
	loop_->post([done, type, st]() { done->on_reply(st, reply_header(type, st), {}); });
}

void ReplicatedChannel::read_pages(wire::TrafficClass tc, uint32_t, uint64_t fa_offset,
                                   uint32_t count, void *dst, Completion *done)
{
	refresh();
	if (fa_offset % wire::kPageSize || fa_offset > set_->size_bytes() ||
	    uint64_t{count} * wire::kPageSize > set_->size_bytes() - fa_offset)
		return fail_later(done, uint8_t(wire::MsgType::kRead),
		                  Status(Code::kOutOfRange,
		                         "pages past the end of region '" + set_->name() + "'"));
	ReadOp *op;
	if (free_reads_.empty())
		op = new ReadOp;
	else {
		op = free_reads_.back().release();
		free_reads_.pop_back();
	}
	op->ch = this;
	op->done = done;
	op->tc = tc;
	op->fa = fa_offset;
	op->count = count;
	op->dst = dst;
	op->tried = op->corrupt = 0;
	op->last = Status::ok(); // no copy has failed it yet
	int i = pick(0);
	if (i < 0) {
		free_reads_.emplace_back(op);
		return fail_later(done, uint8_t(wire::MsgType::kRead), no_copy_in_sync(""));
	}
	op->cur = size_t(i);
	op->tried = 1u << i;
	const Sub &s = *subs_[size_t(i)];
	s.ch->read_pages(tc, s.loc.region_id, s.loc.fa_offset + fa_offset, count, dst, op);
}

void ReplicatedChannel::issue_read(ReadOp *op)
{
	int i = pick(op->tried);
	if (i < 0) {
		Completion *done = op->done;
		Status st = op->last.is_ok() ? no_copy_in_sync("") : op->last;
		free_reads_.emplace_back(op);
		done->on_reply(st, reply_header(uint8_t(wire::MsgType::kRead), st), {});
		return;
	}
	op->cur = size_t(i);
	op->tried |= 1u << i;
	set_->count_read_retry();
	const Sub &s = *subs_[size_t(i)];
	s.ch->read_pages(op->tc, s.loc.region_id, s.loc.fa_offset + op->fa, op->count, op->dst, op);
}

void ReplicatedChannel::read_done(ReadOp *op, size_t i, const Status &st, const wire::Header &resp,
                                  std::span<const uint8_t> payload)
{
	if (st.is_ok() || closing_ || st.code() == Code::kOutOfRange ||
	    st.code() == Code::kInvalidArgument) {
		// Pages damaged on other copies are rewritten from this one.
		if (st.is_ok())
			for (size_t b = 0; b < subs_.size(); b++)
				if (op->corrupt >> b & 1)
					copies_.push_back(
					        {i, b, op->fa / wire::kPageSize, op->count, true});
		Completion *done = op->done;
		free_reads_.emplace_back(op);
		done->on_reply(st, resp, payload);
		if (!copies_.empty())
			pump();
		return;
	}
	if (st.code() == Code::kCorrupt) {
		op->corrupt |= 1u << i;
		LOG_WARN(kLog,
		         "region '%s': pages at +0x%lx failed their checksum on module %s; "
		         "reading another copy and repairing this one",
		         set_->name().c_str(), (unsigned long)op->fa,
		         i < subs_.size() ? subs_[i]->loc.module.to_string().c_str() : "?");
	} else {
		failed(i, st);
	}
	op->last = worse(op->last, st, op->tried == (1u << i));
	issue_read(op);
}

void ReplicatedChannel::write_pages(wire::TrafficClass tc, uint32_t, uint64_t fa_offset,
                                    uint32_t count, const void *src, Completion *done)
{
	refresh();
	constexpr uint8_t kType = uint8_t(wire::MsgType::kWrite);
	if (fa_offset % wire::kPageSize || fa_offset > set_->size_bytes() ||
	    uint64_t{count} * wire::kPageSize > set_->size_bytes() - fa_offset || count == 0 ||
	    count > wire::kMaxPagesPerRequest)
		return fail_later(
		        done, kType,
		        Status(Code::kOutOfRange, "a write outside region '" + set_->name() + "'"));
	WriteOp *op;
	if (free_writes_.empty())
		op = new WriteOp;
	else {
		op = free_writes_.back().release();
		free_writes_.pop_back();
	}
	op->ch = this;
	op->done = done;
	op->count = count;
	op->pending = op->ok_in_sync = op->failures = 0;
	op->last = Status::ok(); // no copy has failed it yet
	// Every copy's write sends the caller's pages (valid until `done`,
	// which runs after the last part): never copied here.
	wire::WireVersionedWrite vw{};
	vw.version = set_->next_version();
	set_->count_write();
	// Count every part first: none completes inside call(), but a copy
	// with no channel is left out before any is sent. (A bit per copy: no
	// allocation on the way.)
	uint32_t targets = 0;
	bool any_in_sync = false;
	for (size_t i = 0; i < subs_.size() && i < kMaxReplicas; i++) {
		if (subs_[i]->state == ReplicaSet::State::kLost && !subs_[i]->gone)
			set_->add_missed(subs_[i]->loc.module, count); // its lag
		if (subs_[i]->state == ReplicaSet::State::kLost || open(i) == nullptr)
			continue;
		targets |= 1u << i;
		op->pending++;
		any_in_sync |= subs_[i]->state == ReplicaSet::State::kInSync;
	}
	if (!any_in_sync) {
		free_writes_.emplace_back(op);
		return fail_later(done, kType, no_copy_in_sync(" to take a write"));
	}
	for (size_t i = 0; i < subs_.size() && i < kMaxReplicas; i++) {
		if (!(targets >> i & 1))
			continue;
		Sub &s = *subs_[i];
		op->was_in_sync[i] = s.state == ReplicaSet::State::kInSync;
		op->parts[i].op = op;
		op->parts[i].replica = i;
		s.ch->write_versioned(tc, s.loc.region_id, s.loc.fa_offset + fa_offset, count, vw,
		                      src, &op->parts[i]);
	}
}

void ReplicatedChannel::part_done(WriteOp *op, size_t i, const Status &st,
                                  std::span<const uint8_t> payload)
{
	if (st.is_ok()) {
		op->ok_in_sync += op->was_in_sync[i];
		uint32_t applied = op->count;
		if (payload.size() >= sizeof(applied))
			std::memcpy(&applied, payload.data(), sizeof(applied));
		if (applied < op->count)
			// A newer version is already there: another writer, or
			// this node's clock went back. Its pages stand.
			LOG_WARN(kLog,
			         "region '%s': module %s kept %u of %u pages at a newer "
			         "version than this write's (a second writer, or a clock "
			         "set back?)",
			         set_->name().c_str(), subs_[i]->loc.module.to_string().c_str(),
			         op->count - applied, op->count);
	} else {
		op->last = worse(op->last, st, op->failures++ == 0);
		failed(i, st);
	}
	if (--op->pending > 0)
		return;
	Completion *done = op->done;
	Status result = Status::ok();
	if (op->ok_in_sync == 0 || closing_)
		result = op->last.is_ok() ? no_copy_in_sync(" to take a write") : op->last;
	free_writes_.emplace_back(op);
	done->on_reply(result, reply_header(uint8_t(wire::MsgType::kWrite), result), {});
}

void ReplicatedChannel::call(const wire::Header &hdr, std::span<const uint8_t> payload,
                             Completion *done)
{
	refresh();
	int i = pick(0);
	if (i < 0)
		return fail_later(done, hdr.type, no_copy_in_sync(""));
	const Sub &s = *subs_[size_t(i)];
	wire::Header h = hdr;
	switch (wire::MsgType(hdr.type)) {
	case wire::MsgType::kRead:
	case wire::MsgType::kReadVersioned:
	case wire::MsgType::kReadVersions:
		h.region_id = s.loc.region_id;
		h.offset = s.loc.fa_offset + hdr.offset;
		break;
	case wire::MsgType::kWrite:
	case wire::MsgType::kWriteVersioned:
		// Writes must reach every copy with a version: write_pages.
		return fail_later(done, hdr.type,
		                  Status(Code::kInvalidArgument,
		                         "a write to replicated region '" + set_->name() +
		                                 "' goes through write_pages"));
	default:
		break;
	}
	s.ch->call(h, payload, done);
}

// ---- Catch-up and repair ----

void ReplicatedChannel::pump()
{
	if (closing_)
		return;
	if (!copying_ && !copies_.empty())
		copy_next();
	if (cu_.active) {
		// A pass waiting for writes from before the copy came back to settle.
		if (cu_.wait_until_ns && mono_ns() >= cu_.wait_until_ns && !copying_) {
			cu_.wait_until_ns = 0;
			start_chunk();
		}
		return;
	}
	int source = pick(0);
	if (source < 0)
		return;
	for (size_t i : order_) {
		if (subs_[i]->state != ReplicaSet::State::kCatchingUp || open(i) == nullptr)
			continue;
		if (!set_->claim_catch_up(this))
			return;
		cu_ = CatchUp{};
		cu_.active = true;
		cu_.target = i;
		cu_.source = size_t(source);
		cu_.pass = 1;
		cu_.began_ns = mono_ns();
		LOG_INFO(kLog, "region '%s': comparing the copy on module %s with module %s's",
		         set_->name().c_str(), subs_[i]->loc.module.to_string().c_str(),
		         subs_[size_t(source)]->loc.module.to_string().c_str());
		start_chunk();
		return;
	}
}

void ReplicatedChannel::start_chunk()
{
	uint64_t pages = set_->pages();
	set_->set_progress(subs_[cu_.target]->loc.module, pages, cu_.next_page, cu_.to_copy);
	if (cu_.next_page >= pages) {
		uint64_t now = mono_ns();
		bool settled = now - cu_.began_ns >= kSettleNs;
		if (cu_.pass > 1 && cu_.differed == 0 && settled)
			return end_catch_up(true, "");
		if (cu_.pass >= kMaxPasses)
			return end_catch_up(false, "pages still differ after " +
			                                   std::to_string(kMaxPasses) + " passes");
		// Another pass, once the first's writes have settled.
		cu_.pass++;
		cu_.differed = 0;
		cu_.next_page = 0;
		if (!settled) {
			cu_.wait_until_ns = cu_.began_ns + kSettleNs;
			return;
		}
		return start_chunk();
	}
	cu_.chunk_first = cu_.next_page;
	cu_.chunk_pages = uint32_t(std::min<uint64_t>(kVersionChunk, pages - cu_.next_page));
	cu_.versions_pending = 2;
	cu_.versions_failed = false;
	cu_.src.assign(cu_.chunk_pages, 0);
	cu_.tgt.assign(cu_.chunk_pages, 0);
	for (size_t i : {cu_.source, cu_.target}) {
		const Sub &s = *subs_[i];
		wire::Header h{};
		h.type = uint8_t(wire::MsgType::kReadVersions);
		h.tclass = uint8_t(wire::TrafficClass::kBulk);
		h.region_id = s.loc.region_id;
		h.offset = s.loc.fa_offset + cu_.chunk_first * wire::kPageSize;
		h.count = cu_.chunk_pages;
		s.ch->call(h, {}, i == cu_.source ? cu_src_read_.get() : cu_tgt_read_.get());
	}
}

void ReplicatedChannel::versions_done(size_t i, const Status &st, std::span<const uint8_t> payload)
{
	if (!cu_.active)
		return;
	size_t want = size_t{cu_.chunk_pages} * sizeof(uint64_t);
	if (st.is_ok() && payload.size() == want) {
		std::memcpy(i == cu_.source ? cu_.src.data() : cu_.tgt.data(), payload.data(),
		            want);
	} else {
		cu_.versions_failed = true;
		if (st.is_ok())
			LOG_WARN(kLog,
			         "region '%s': module %s answered %zu bytes of versions, not %zu",
			         set_->name().c_str(), subs_[i]->loc.module.to_string().c_str(),
			         payload.size(), want);
		else
			failed(i, st); // ends the catch-up
	}
	if (--cu_.versions_pending > 0 || !cu_.active)
		return;
	if (cu_.versions_failed)
		return end_catch_up(false, "reading page versions failed");
	compare_chunk();
}

void ReplicatedChannel::compare_chunk()
{
	// Runs of pages whose versions differ, copied from the newer side.
	uint32_t p = 0;
	uint64_t newest = 0;
	while (p < cu_.chunk_pages) {
		uint64_t s = cu_.src[p], t = cu_.tgt[p];
		newest = std::max({newest, s, t});
		if (s == t) {
			p++;
			continue;
		}
		bool forward = s > t;
		uint32_t q = p + 1;
		while (q < cu_.chunk_pages && q - p < wire::kMaxPagesPerRequest &&
		       cu_.src[q] != cu_.tgt[q] && (cu_.src[q] > cu_.tgt[q]) == forward)
			q++;
		CopyJob j;
		j.from = forward ? cu_.source : cu_.target;
		j.to = forward ? cu_.target : cu_.source;
		j.first_page = cu_.chunk_first + p;
		j.count = q - p;
		copies_.push_back(j);
		cu_.differed += j.count;
		cu_.to_copy += j.count;
		p = q;
	}
	set_->observe_version(newest);
	cu_.next_page = cu_.chunk_first + cu_.chunk_pages;
	if (copies_.empty() && !copying_)
		return start_chunk();
	copy_next();
}

void ReplicatedChannel::copy_next()
{
	while (!copying_ && !copies_.empty()) {
		current_ = copies_.front();
		copies_.pop_front();
		if (!current_.repair && cu_.active) {
			cu_.to_copy -= std::min<uint64_t>(cu_.to_copy, current_.count);
			set_->set_progress(subs_[cu_.target]->loc.module, set_->pages(),
			                   cu_.next_page, cu_.to_copy);
		}
		if (current_.from >= subs_.size() || current_.to >= subs_.size())
			continue;
		Sub &from = *subs_[current_.from];
		Sub &to = *subs_[current_.to];
		if (from.state == ReplicaSet::State::kLost ||
		    to.state == ReplicaSet::State::kLost || !from.ch || !to.ch)
			continue;
		copying_ = true;
		copy_failed_ = false;
		wire::Header h{};
		h.type = uint8_t(wire::MsgType::kReadVersioned);
		h.tclass = uint8_t(wire::TrafficClass::kBulk);
		h.region_id = from.loc.region_id;
		h.offset = from.loc.fa_offset + current_.first_page * wire::kPageSize;
		h.count = current_.count;
		from.ch->call(h, {}, copy_read_.get());
		return;
	}
	if (!copying_ && copies_.empty() && cu_.active && cu_.versions_pending == 0 &&
	    cu_.next_page > cu_.chunk_first)
		start_chunk();
}

void ReplicatedChannel::copy_read_done(const Status &st, std::span<const uint8_t> payload)
{
	size_t n = current_.count;
	size_t want = n * (sizeof(uint64_t) + wire::kPageSize);
	if (!st.is_ok() || payload.size() != want) {
		copying_ = false;
		Status why =
		        st.is_ok() ? Status(Code::kProtocol, "a short READ_VERSIONED answer") : st;
		if (st.code() != Code::kCorrupt)
			failed(current_.from, why);
		else
			LOG_WARN(kLog,
			         "region '%s': the copy source on module %s is damaged too: %s",
			         set_->name().c_str(),
			         subs_[current_.from]->loc.module.to_string().c_str(),
			         st.message().c_str());
		if (cu_.active && st.code() == Code::kCorrupt)
			end_catch_up(false, why.message());
		return copy_next();
	}
	const uint8_t *versions = payload.data();
	const uint8_t *pages = payload.data() + n * sizeof(uint64_t);
	auto version_at = [&](size_t k) {
		uint64_t v;
		std::memcpy(&v, versions + k * sizeof(v), sizeof(v));
		return v;
	};
	// One WRITE_VERSIONED per run of pages at one version, from one copy
	// of the pages that lives until the last of them completes.
	copy_buf_.assign(pages, pages + n * wire::kPageSize);
	Sub &to = *subs_[current_.to];
	copy_writes_pending_ = 0;
	size_t k = 0, step = 0;
	while (k < n) {
		uint64_t v = version_at(k);
		size_t e = k + 1;
		while (e < n && version_at(e) == v)
			e++;
		if (v == 0) { // never written there: nothing to copy
			k = e;
			continue;
		}
		set_->observe_version(v);
		if (copy_writes_.size() <= step)
			copy_writes_.push_back(std::make_unique<CopyStep>(CopyStep::kWrite, this));
		wire::WireVersionedWrite vw{};
		vw.version = v;
		vw.flags = current_.repair ? wire::kVersionedRepair : 0;
		copy_writes_pending_++;
		to.ch->write_versioned(wire::TrafficClass::kBulk, to.loc.region_id,
		                       to.loc.fa_offset + (current_.first_page + k) * wire::kPageSize,
		                       uint32_t(e - k), vw, copy_buf_.data() + k * wire::kPageSize,
		                       copy_writes_[step++].get());
		k = e;
	}
	if (copy_writes_pending_ == 0) {
		copying_ = false;
		copy_next();
	}
}

void ReplicatedChannel::copy_write_done(const Status &st)
{
	if (!st.is_ok()) {
		copy_failed_ = true;
		failed(current_.to, st);
	}
	if (--copy_writes_pending_ > 0)
		return;
	copying_ = false;
	if (!copy_failed_ && current_.to < subs_.size())
		set_->add_copied(subs_[current_.to]->loc.module, current_.count, current_.repair);
	copy_next();
}

void ReplicatedChannel::end_catch_up(bool ok, const std::string &why)
{
	if (!cu_.active)
		return;
	cu_.active = false;
	size_t target = cu_.target;
	set_->release_catch_up(this);
	if (ok && target < subs_.size()) {
		subs_[target]->state = ReplicaSet::State::kInSync;
		set_->set_state(subs_[target]->loc.module, ReplicaSet::State::kInSync, "");
		pump(); // the next copy catching up, if any
	} else if (!ok) {
		LOG_INFO(kLog, "region '%s': catching up stopped: %s", set_->name().c_str(),
		         why.c_str());
		// Copies queued for it are dropped; repairs stay.
		std::erase_if(copies_, [](const CopyJob &j) { return !j.repair; });
	}
}

void ReplicatedChannel::write_versioned(wire::TrafficClass, uint32_t, uint64_t, uint32_t,
                                        const wire::WireVersionedWrite &, const void *,
                                        Completion *done)
{
	fail_later(done, uint8_t(wire::MsgType::kWriteVersioned),
	           Status(Code::kInvalidArgument, "a write to replicated region '" +
	                                                  set_->name() +
	                                                  "' goes through write_pages"));
}

} // namespace memfed
