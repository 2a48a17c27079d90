#include "daemon/service/module_service.h"

#include <cstring>

#include "daemon/common/log.h"
#include "daemon/wire/codec.h"

namespace memfed
{

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
	w.length = r.length;
	return w;
}

// A region answered as a WireRegion, or the error.
static void reply_region(Result<RegionInfo> r, Reply &reply)
{
	if (!r) {
		reply.fail(r.status());
		return;
	}
	auto out = reply.payload_buffer(wire::kRegionSize);
	wire::encode_region(to_wire(*r), out.data());
}

ModuleService::ModuleService(ModuleStore *store) : store_(store)
{
	pending_.reserve(1024);
	writer_ = std::thread([this] { writer_main(); });
}

ModuleService::~ModuleService()
{
	{
		std::lock_guard lk(mu_);
		stopping_ = true;
	}
	cv_.notify_all();
	writer_.join();
}

size_t ModuleService::queued() const
{
	std::lock_guard lk(mu_);
	return queue_.size();
}

void ModuleService::submit_local(LocalRequest *r)
{
	Job j;
	j.local = r;
	switch (r->kind) {
	case LocalRequest::Kind::kWrite:
		j.kind = Job::Kind::kWrite;
		break;
	case LocalRequest::Kind::kRead:
		j.kind = Job::Kind::kRead;
		break;
	case LocalRequest::Kind::kOrdered:
		j.kind = Job::Kind::kLocalOrdered;
		break;
	}
	enqueue(std::move(j));
}

void ModuleService::enqueue(Job job)
{
	{
		std::lock_guard lk(mu_);
		queue_.push_back(std::move(job));
	}
	cv_.notify_one();
}

// Whether a WRITE is queued and not yet applied; forgets those the writer
// has applied.
bool ModuleService::any_pending_write()
{
	if (pending_.empty())
		return false;
	uint64_t applied = applied_seq_.load(std::memory_order_acquire);
	size_t done = 0;
	while (done < pending_.size() && pending_[done].seq <= applied)
		done++;
	pending_.erase(pending_.begin(), pending_.begin() + long(done));
	return !pending_.empty();
}

// [fa, fa + count pages) against the WRITEs queued and not yet applied.
bool ModuleService::overlaps_pending_write(uint64_t fa, uint32_t count)
{
	if (!any_pending_write())
		return false;
	uint64_t len = uint64_t(count) * wire::kPageSize;
	uint64_t end = fa > UINT64_MAX - len ? UINT64_MAX : fa + len;
	for (const PendingRange &r : pending_)
		if (r.begin < end && fa < r.end)
			return true;
	return false;
}

void ModuleService::writer_main()
{
	std::vector<Job> group;
	for (;;) {
		{
			std::unique_lock lk(mu_);
			cv_.wait(lk, [this] { return stopping_ || !queue_.empty(); });
			if (queue_.empty())
				return; // stopping, and every job is answered
			// Swapped, not moved: both vectors keep their capacity.
			group.swap(queue_);
		}
		if (writer_hook_)
			writer_hook_();
		commit(group);
		group.clear();
	}
}

// One group, in queue order: a DELETE or SET_LENGTH splits it in segments,
// so the WRITEs queued before it are applied first and those after it find
// no region, or the region's new end.
void ModuleService::commit(std::vector<Job> &group)
{
	size_t from = 0;
	for (size_t k = 0; k <= group.size(); k++) {
		if (k < group.size() && group[k].kind != Job::Kind::kDelete &&
		    group[k].kind != Job::Kind::kSetLength &&
		    group[k].kind != Job::Kind::kLocalOrdered)
			continue;
		commit_segment(std::span<Job>(group).subspan(from, k - from));
		if (k < group.size()) {
			Job &d = group[k];
			if (d.kind == Job::Kind::kLocalOrdered) {
				d.local->status = Status::ok();
				d.local->finished();
			} else if (d.kind == Job::Kind::kDelete) {
				d.reply.complete(delete_region(d.region, d.by));
			} else {
				auto r = set_length(d.set_length);
				uint8_t out[wire::kRegionSize];
				if (r)
					wire::encode_region(to_wire(*r), out);
				d.reply.complete(r.status(), r ? std::span<const uint8_t>(out)
				                               : std::span<const uint8_t>());
			}
		}
		from = k + 1;
	}
}

Result<RegionInfo> ModuleService::set_length(const wire::WireSetLength &s)
{
	bool grow_only = (s.flags & wire::kSetLengthGrowOnly) != 0;
	auto r = store_->set_length(wire::region_name(s), s.length, grow_only);
	if (r && !grow_only && on_freed_)
		on_freed_();
	return r;
}

// A segment: every WRITE with one persist, then the READs that waited for
// them, then the answers.
void ModuleService::commit_segment(std::span<Job> group)
{
	std::vector<ModuleStore::WriteOp> ops;
	uint64_t last_seq = 0;
	for (Job &j : group) {
		if (j.kind != Job::Kind::kWrite)
			continue;
		if (j.local != nullptr) {
			const LocalRequest &r = *j.local;
			ops.push_back({r.region_id, r.offset, r.count, r.src, Status::ok()});
			continue;
		}
		const wire::Header &h = j.reply.request();
		ops.push_back({h.region_id, h.offset, h.count, j.pages.data(), Status::ok()});
		last_seq = j.seq;
	}
	if (!ops.empty())
		store_->write_pages_batch(ops);
	if (last_seq != 0)
		applied_seq_.store(last_seq, std::memory_order_release);
	size_t k = 0;
	std::vector<uint8_t> buf;
	for (Job &j : group) {
		if (j.local != nullptr) {
			LocalRequest &r = *j.local;
			if (j.kind == Job::Kind::kWrite)
				r.status = ops[k++].status;
			else
				r.status =
				        store_->read_pages(r.region_id, r.offset, r.count, r.dst);
			r.finished();
			continue;
		}
		if (j.kind == Job::Kind::kWrite) {
			j.reply.complete(ops[k++].status);
			continue;
		}
		const wire::Header &h = j.reply.request();
		buf.resize(size_t(h.count) * wire::kPageSize);
		Status st = store_->read_pages(h.region_id, h.offset, h.count, buf.data());
		j.reply.complete(st, buf);
	}
}

Status ModuleService::delete_region(const std::string &name, const std::string &by)
{
	Status st = store_->delete_region(name);
	if (st) {
		LOG_INFO("module", "region '%s' deleted by %s", name.c_str(), by.c_str());
		if (on_freed_)
			on_freed_();
	}
	return st;
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
		reply.fail(Status(Code::kNotFound, "module " +
		                                           ModuleId{req.dst_module}.to_string() +
		                                           " is not served here (this is " +
		                                           store_->module_id().to_string() + ")"));
		return;
	}
	switch (MsgType(req.type)) {
	case MsgType::kRead: {
		if (reply.can_defer() && overlaps_pending_write(req.offset, req.count)) {
			Job j;
			j.reply = reply.defer();
			enqueue(std::move(j));
			return;
		}
		auto buf = reply.payload_buffer(size_t(req.count) * wire::kPageSize);
		// No pass over the bytes but the copy: the payload crc is combined
		// from the crcs stored with the pages, and the client's check of it
		// covers the media as well as the wire.
		uint32_t crc = 0;
		Status st = store_->read_pages_with_crc(req.region_id, req.offset, req.count,
		                                        buf.data(), &crc);
		if (!st)
			reply.fail(st);
		else
			reply.set_payload_crc(crc);
		return;
	}
	case MsgType::kWrite: {
		if (reply.can_defer()) {
			Job j;
			j.reply = reply.defer();
			j.kind = Job::Kind::kWrite;
			j.pages.assign(payload.begin(), payload.end());
			j.seq = next_seq_++;
			uint64_t len = uint64_t(req.count) * wire::kPageSize;
			uint64_t end =
			        req.offset > UINT64_MAX - len ? UINT64_MAX : req.offset + len;
			pending_.push_back({req.offset, end, j.seq});
			enqueue(std::move(j));
			return;
		}
		Status st =
		        store_->write_pages(req.region_id, req.offset, req.count, payload.data());
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
		auto r = store_->create_region(wire::region_name(*spec), spec->size_bytes,
		                               spec->owner_uid, spec->mode);
		if (!r) {
			reply.fail(r.status());
			return;
		}
		LOG_INFO("module", "region '%s' created by %s (%s), %lu bytes", r->name.c_str(),
		         conn.module.to_string().c_str(), conn.peer.c_str(),
		         (unsigned long)r->size_bytes);
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
			if (reply.can_defer() && any_pending_write()) {
				Job j;
				j.reply = reply.defer();
				j.kind = Job::Kind::kDelete;
				j.region = *name;
				j.by = conn.peer;
				enqueue(std::move(j));
				return;
			}
			Status st = delete_region(*name, conn.peer);
			if (!st)
				reply.fail(st);
			return;
		}
		reply_region(store_->lookup_region(*name), reply);
		return;
	}
	case MsgType::kRegionSetLength: {
		auto s = wire::decode_set_length(payload);
		if (!s) {
			reply.fail(s.status());
			return;
		}
		// Ordered after the WRITEs queued before it, as a DELETE is.
		if (reply.can_defer() && any_pending_write()) {
			Job j;
			j.reply = reply.defer();
			j.kind = Job::Kind::kSetLength;
			j.set_length = *s;
			enqueue(std::move(j));
			return;
		}
		reply_region(set_length(*s), reply);
		return;
	}
	case MsgType::kRegionList: {
		auto q = wire::decode_list_request(payload);
		if (!q) {
			reply.fail(q.status());
			return;
		}
		std::vector<wire::WireRegion> list;
		for (const auto &r :
		     store_->list_regions(wire::list_after(*q), wire::list_limit(*q)))
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
