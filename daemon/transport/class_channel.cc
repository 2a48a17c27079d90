// ClassChannel: one connection per traffic class, conflicting requests
// ordered across them (class_channel.h).
#include "daemon/transport/class_channel.h"

#include <algorithm>

namespace memfed
{

class ClassChannel::Op : public Completion
{
public:
	explicit Op(ClassChannel *c) : ch(c) {}
	void on_reply(const Status &st, const wire::Header &resp,
	              std::span<const uint8_t> payload) override
	{
		ch->on_done(this, st, resp, payload);
	}

	ClassChannel *ch;
	Kind kind = Kind::kRead;
	int conn = kFaultConn;
	wire::TrafficClass tc = wire::TrafficClass::kFault;
	uint32_t region_id = 0;
	uint64_t fa = 0;
	uint32_t count = 0;
	void *dst = nullptr;
	const void *src = nullptr;
	wire::WireVersionedWrite prefix{};
	Completion *done = nullptr;

	bool writes() const { return kind != Kind::kRead; }
	bool overlaps(const Op &o) const
	{
		return region_id == o.region_id &&
		       fa < o.fa + uint64_t{o.count} * wire::kPageSize &&
		       o.fa < fa + uint64_t{count} * wire::kPageSize;
	}
	bool conflicts(const Op &o) const { return (writes() || o.writes()) && overlaps(o); }
};

ClassChannel::ClassChannel(std::unique_ptr<Channel> fault, std::unique_ptr<Channel> bulk)
{
	conns_[kFaultConn] = std::move(fault);
	conns_[kBulkConn] = std::move(bulk);
}

ClassChannel::~ClassChannel()
{
	// The connections complete their pending requests (forwarded as they
	// are); nothing held is issued any more.
	closing_ = true;
	conns_[kBulkConn].reset();
	conns_[kFaultConn].reset();
	Status gone(Code::kUnavailable, "the channel to the module was closed");
	while (!held_.empty()) {
		Op *op = held_.front();
		held_.pop_front();
		wire::Header h{};
		h.type = uint8_t(op->kind == Kind::kRead    ? wire::MsgType::kRead
		                 : op->kind == Kind::kWrite ? wire::MsgType::kWrite
		                                            : wire::MsgType::kWriteVersioned);
		op->done->on_reply(gone, h, {});
	}
}

bool ClassChannel::connected() const
{
	return conns_[kFaultConn]->connected() && conns_[kBulkConn]->connected();
}

void ClassChannel::transport_states(std::vector<TransportState> *out) const
{
	std::vector<TransportState> f, b;
	conns_[kFaultConn]->transport_states(&f);
	conns_[kBulkConn]->transport_states(&b);
	for (size_t i = 0; i < f.size(); i++) {
		if (i < b.size() && (b[i].transport != f[i].transport || b[i].why != f[i].why)) {
			std::string why = f[i].why;
			if (!why.empty())
				why += "; ";
			why += "bulk: " + b[i].transport +
			       (b[i].why.empty() ? "" : " (" + b[i].why + ")");
			f[i].why = why;
		}
		out->push_back(f[i]);
	}
}

ClassChannel::Op *ClassChannel::alloc_op()
{
	if (free_.empty()) {
		pool_.push_back(std::make_unique<Op>(this));
		free_.push_back(pool_.back().get());
	}
	Op *op = free_.back();
	free_.pop_back();
	return op;
}

void ClassChannel::read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                              uint32_t count, void *dst, Completion *done)
{
	Op *op = alloc_op();
	op->kind = Kind::kRead;
	op->conn = tc == wire::TrafficClass::kBulk ? kBulkConn : kFaultConn;
	op->tc = tc;
	op->region_id = region_id;
	op->fa = fa_offset;
	op->count = count;
	op->dst = dst;
	op->done = done;
	submit(op);
}

void ClassChannel::write_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                               uint32_t count, const void *src, Completion *done)
{
	Op *op = alloc_op();
	op->kind = Kind::kWrite;
	op->conn = kBulkConn;
	op->tc = tc;
	op->region_id = region_id;
	op->fa = fa_offset;
	op->count = count;
	op->src = src;
	op->done = done;
	submit(op);
}

void ClassChannel::write_versioned(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
                                   uint32_t count, const wire::WireVersionedWrite &prefix,
                                   const void *src, Completion *done)
{
	Op *op = alloc_op();
	op->kind = Kind::kWriteVersioned;
	op->conn = kBulkConn;
	op->tc = tc;
	op->region_id = region_id;
	op->fa = fa_offset;
	op->count = count;
	op->prefix = prefix;
	op->src = src;
	op->done = done;
	submit(op);
}

void ClassChannel::call(const wire::Header &hdr, std::span<const uint8_t> payload, Completion *done)
{
	auto type = wire::MsgType(hdr.type);
	bool on_bulk = hdr.tclass == uint8_t(wire::TrafficClass::kBulk) ||
	               type == wire::MsgType::kWrite || type == wire::MsgType::kWriteVersioned;
	conns_[on_bulk ? kBulkConn : kFaultConn]->call(hdr, payload, done);
}

bool ClassChannel::conflicts_in_flight(const Op &op) const
{
	for (const Op *o : in_flight_)
		if (o->conn != op.conn && op.conflicts(*o))
			return true;
	return false;
}

void ClassChannel::submit(Op *op)
{
	bool hold = conflicts_in_flight(*op);
	for (size_t i = 0; !hold && i < held_.size(); i++)
		hold = op->conflicts(*held_[i]);
	if (hold) {
		held_.push_back(op);
		held_total_++;
		return;
	}
	issue(op);
}

void ClassChannel::issue(Op *op)
{
	in_flight_.push_back(op);
	Channel *c = conns_[op->conn].get();
	switch (op->kind) {
	case Kind::kRead:
		return c->read_pages(op->tc, op->region_id, op->fa, op->count, op->dst, op);
	case Kind::kWrite:
		return c->write_pages(op->tc, op->region_id, op->fa, op->count, op->src, op);
	case Kind::kWriteVersioned:
		return c->write_versioned(op->tc, op->region_id, op->fa, op->count, op->prefix,
		                          op->src, op);
	}
}

void ClassChannel::on_done(Op *op, const Status &st, const wire::Header &resp,
                           std::span<const uint8_t> payload)
{
	auto it = std::find(in_flight_.begin(), in_flight_.end(), op);
	if (it != in_flight_.end()) {
		*it = in_flight_.back();
		in_flight_.pop_back();
	}
	Completion *done = op->done;
	op->done = nullptr;
	free_.push_back(op);
	// Released before the caller hears of this one: what it issues from its
	// completion queues behind what was held before.
	if (!closing_)
		release_held();
	done->on_reply(st, resp, payload);
}

void ClassChannel::release_held()
{
	// In order: one still held keeps every later one that conflicts with
	// it held too.
	for (size_t i = 0; i < held_.size();) {
		Op *op = held_[i];
		bool hold = conflicts_in_flight(*op);
		for (size_t j = 0; !hold && j < i; j++)
			hold = op->conflicts(*held_[j]);
		if (hold) {
			i++;
			continue;
		}
		held_.erase(held_.begin() + ptrdiff_t(i));
		issue(op);
	}
}

} // namespace memfed
