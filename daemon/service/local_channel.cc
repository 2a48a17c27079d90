#include "daemon/service/local_channel.h"

#include "daemon/wire/codec.h"

namespace memfed {

LocalChannel::LocalChannel(ModuleStore *store, ModuleService *service)
	: store_(store), service_(service)
{
	PoolInfo i = store->info();
	peer_.module = store->module_id();
	peer_.capabilities = wire::kCapModule;
	peer_.capacity_bytes = i.capacity_bytes;
	peer_.version = wire::kWireVersion;
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

void LocalChannel::read_pages(wire::TrafficClass tc, uint32_t region_id, uint64_t fa_offset,
			      uint32_t count, void *dst, Completion *done)
{
	wire::Header req{};
	req.type = uint8_t(wire::MsgType::kRead);
	req.tclass = uint8_t(tc);
	req.region_id = region_id;
	req.offset = fa_offset;
	req.count = count;
	Status st = store_->read_pages(region_id, fa_offset, count, dst);
	done->on_reply(st, reply_header(req, st.code()), {});
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
	Status st = store_->write_pages(region_id, fa_offset, count, src);
	done->on_reply(st, reply_header(req, st.code()), {});
}

// Control requests go through the same handler the TCP server uses, so the
// local and remote paths cannot drift apart.
void LocalChannel::call(const wire::Header &hdr, std::span<const uint8_t> payload, Completion *done)
{
	ByteBuffer out;
	Reply reply(&out, 0);
	reply.count = hdr.count;
	reply.offset = hdr.offset;
	reply.region_id = hdr.region_id;
	ConnInfo conn;
	conn.peer = "local";
	conn.module = store_->module_id();
	service_->handle(conn, hdr, payload, reply);
	wire::Header h = reply_header(hdr, reply.code());
	h.count = reply.count;
	h.offset = reply.offset;
	std::span<const uint8_t> bytes(out.read_ptr(), reply.payload_len());
	Status st = reply.ok() ? Status::ok()
			       : Status(reply.code(), std::string(bytes.begin(), bytes.end()));
	done->on_reply(st, h, reply.ok() ? bytes : std::span<const uint8_t>());
}

} // namespace memfed
