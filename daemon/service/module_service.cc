#include "daemon/service/module_service.h"

#include <cstring>

#include "daemon/common/log.h"
#include "daemon/wire/codec.h"

namespace memfed {

wire::WireRegion to_wire(const RegionInfo &r)
{
	wire::WireRegion w{};
	w.id = r.id;
	w.owner_uid = r.owner_uid;
	w.mode = r.mode;
	w.name_len = uint8_t(std::min(r.name.size(), wire::kMaxRegionName));
	std::memcpy(w.name, r.name.data(), w.name_len);
	w.fa_offset = r.fa_offset;
	w.size_bytes = r.size_bytes;
	w.ctime_ns = r.ctime_ns;
	return w;
}

wire::WireStat ModuleService::stat() const
{
	PoolInfo i = store_->info();
	wire::WireStat s{};
	s.capacity_bytes = i.capacity_bytes;
	s.used_bytes = i.used_bytes;
	s.free_bytes = i.free_bytes;
	s.largest_free_bytes = i.largest_free_bytes;
	s.regions = i.regions;
	s.page_size = wire::kPageSize;
	s.reads = i.pages_read;
	s.writes = i.pages_written;
	s.log_replays = i.log_replays;
	s.uptime_ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
				       std::chrono::steady_clock::now() - started_)
				       .count());
	return s;
}

void ModuleService::handle(const ConnInfo &conn, const wire::Header &req,
			   std::span<const uint8_t> payload, Reply &reply)
{
	using wire::MsgType;
	if (req.dst_module != 0 && req.dst_module != store_->module_id().value) {
		// No relaying yet: a request for another module is refused, not guessed at.
		reply.fail(Status(Code::kNotFound, "module " + ModuleId{req.dst_module}.to_string() +
							   " is not served here (this is " +
							   store_->module_id().to_string() + ")"));
		return;
	}
	switch (MsgType(req.type)) {
	case MsgType::kRead: {
		auto buf = reply.payload_buffer(size_t(req.count) * wire::kPageSize);
		Status st = store_->read_pages(req.region_id, req.offset, req.count, buf.data());
		if (!st)
			reply.fail(st);
		return;
	}
	case MsgType::kWrite: {
		Status st = store_->write_pages(req.region_id, req.offset, req.count, payload.data());
		if (!st)
			reply.fail(st);
		return;
	}
	case MsgType::kRegionCreate: {
		auto spec = wire::decode_region_spec(payload);
		if (!spec) {
			reply.fail(spec.status());
			return;
		}
		auto r = store_->create_region(wire::region_name(*spec), spec->size_bytes, spec->owner_uid,
					       spec->mode);
		if (!r) {
			reply.fail(r.status());
			return;
		}
		LOG_INFO("module", "region '%s' created by %s (%s), %lu bytes", r->name.c_str(),
			 conn.module.to_string().c_str(), conn.peer.c_str(), (unsigned long)r->size_bytes);
		auto out = reply.payload_buffer(wire::kRegionSize);
		wire::encode_region(to_wire(*r), out.data());
		return;
	}
	case MsgType::kRegionDelete:
	case MsgType::kRegionLookup: {
		auto name = wire::decode_name(payload);
		if (!name) {
			reply.fail(name.status());
			return;
		}
		if (MsgType(req.type) == MsgType::kRegionDelete) {
			Status st = store_->delete_region(*name);
			if (!st)
				reply.fail(st);
			else
				LOG_INFO("module", "region '%s' deleted by %s", name->c_str(),
					 conn.peer.c_str());
			return;
		}
		auto r = store_->lookup_region(*name);
		if (!r) {
			reply.fail(r.status());
			return;
		}
		auto out = reply.payload_buffer(wire::kRegionSize);
		wire::encode_region(to_wire(*r), out.data());
		return;
	}
	case MsgType::kRegionList: {
		std::vector<wire::WireRegion> list;
		for (const auto &r : store_->list_regions())
			list.push_back(to_wire(r));
		reply.set_payload(wire::encode_region_list(list));
		return;
	}
	case MsgType::kStat: {
		auto out = reply.payload_buffer(wire::kStatSize);
		wire::encode_stat(stat(), out.data());
		return;
	}
	default:
		reply.fail(Status(Code::kProtocol, std::string("message type ") +
							   wire::msg_type_name(req.type) +
							   " is not served by a module"));
	}
}

} // namespace memfed
