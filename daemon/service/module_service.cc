#include "daemon/service/module_service.h"

#include <cstring>

#include "daemon/common/crc32c.h"
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
	w.replica_group = r.replica_group;
	w.replicas = r.replicas;
	return w;
}

namespace
{

// The response payload of a request of `count` pages/versions, checked here
// because in-process callers (LocalChannel) reach handle() without the
// socket path's validate_fields.
Status check_versioned_count(const wire::Header &req, uint32_t max)
{
	if (req.count == 0 || req.count > max)
		return Status(Code::kProtocol, std::string(wire::msg_type_name(req.type)) +
		                                       " count " + std::to_string(req.count) +
		                                       " out of range 1.." + std::to_string(max));
	return Status::ok();
}

size_t read_versioned_size(uint32_t count)
{
	return size_t(count) * (sizeof(uint64_t) + wire::kPageSize);
}

} // namespace

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
		j.version = r->version;
		j.mode = r->mode;
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
		ModuleStore::WriteOp op;
		if (j.local != nullptr) {
			const LocalRequest &r = *j.local;
			op.region_id = r.region_id;
			op.fa_offset = r.offset;
			op.count = r.count;
			op.src = r.src;
		} else {
			const wire::Header &h = j.reply.request();
			op.region_id = h.region_id;
			op.fa_offset = h.offset;
			op.count = h.count;
			op.src = j.pages.data();
			last_seq = j.seq;
		}
		op.version = j.version;
		op.mode = j.mode;
		ops.push_back(op);
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
			if (j.kind == Job::Kind::kWrite) {
				r.applied = ops[k].applied;
				r.status = ops[k++].status;
			} else
				r.status =
				        store_->read_pages(r.region_id, r.offset, r.count, r.dst);
			r.finished();
			continue;
		}
		if (j.kind == Job::Kind::kWrite) {
			const ModuleStore::WriteOp &op = ops[k++];
			if (j.version == 0 || !op.status) {
				j.reply.complete(op.status);
				continue;
			}
			uint8_t applied[wire::kAppliedSize];
			wire::encode_applied(op.applied, applied);
			j.reply.complete(op.status, applied);
			continue;
		}
		const wire::Header &h = j.reply.request();
		Status st;
		switch (wire::MsgType(h.type)) {
		case wire::MsgType::kReadVersioned: {
			buf.resize(read_versioned_size(h.count));
			uint32_t crc = 0;
			st = read_versioned(h, buf, &crc);
			break;
		}
		case wire::MsgType::kReadVersions:
			buf.resize(size_t(h.count) * sizeof(uint64_t));
			st = read_versions(h, buf);
			break;
		default:
			buf.resize(size_t(h.count) * wire::kPageSize);
			st = store_->read_pages(h.region_id, h.offset, h.count, buf.data());
		}
		j.reply.complete(st, buf);
	}
}

Status ModuleService::read_versioned(const wire::Header &req, std::span<uint8_t> out, uint32_t *crc)
{
	uint64_t versions[wire::kMaxPagesPerRequest];
	size_t vbytes = size_t(req.count) * sizeof(uint64_t);
	MF_RETURN_IF_ERROR(store_->read_pages_versioned(req.region_id, req.offset, req.count,
	                                                out.data() + vbytes, versions, crc));
	wire::encode_versions({versions, req.count}, out.data());
	// Checked here, unlike READ: a damaged page fails this request alone as
	// kCorrupt on every channel (a TcpChannel treats a call() payload that
	// fails its crc as a broken connection), at one pass over the bytes on
	// a path that serves catch-up and repair, not faults.
	if (crc32c(out.data(), out.size()) != *crc)
		return Status(
		        Code::kCorrupt,
		        "READ_VERSIONED of " + std::to_string(req.count) + " pages at " +
		                FederatedAddress{store_->module_id(), req.offset}.to_string() +
		                ": a page fails its checksum on this module's media; repair it "
		                "from another replica or run `memfedctl pool check`");
	return Status::ok();
}

Status ModuleService::read_versions(const wire::Header &req, std::span<uint8_t> out)
{
	// In chunks through a small array: no allocation for up to 64 Ki versions.
	constexpr uint32_t kChunk = 512;
	uint64_t versions[kChunk];
	for (uint32_t at = 0; at < req.count; at += kChunk) {
		uint32_t n = std::min(kChunk, req.count - at);
		MF_RETURN_IF_ERROR(store_->read_versions(
		        req.region_id, req.offset + uint64_t(at) * wire::kPageSize, n, versions));
		wire::encode_versions({versions, n}, out.data() + size_t(at) * sizeof(uint64_t));
	}
	return Status::ok();
}

void ModuleService::defer_write(const wire::Header &req, std::span<const uint8_t> pages,
                                uint64_t version, VersionedMode mode, Reply &reply)
{
	Job j;
	j.reply = reply.defer();
	j.kind = Job::Kind::kWrite;
	j.pages.assign(pages.begin(), pages.end());
	j.version = version;
	j.mode = mode;
	j.seq = next_seq_++;
	uint64_t len = uint64_t(req.count) * wire::kPageSize;
	uint64_t end = req.offset > UINT64_MAX - len ? UINT64_MAX : req.offset + len;
	pending_.push_back({req.offset, end, j.seq});
	enqueue(std::move(j));
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
		if (reply.can_defer())
			return defer_write(req, payload, 0, VersionedMode::kNewer, reply);
		Status st =
		        store_->write_pages(req.region_id, req.offset, req.count, payload.data());
		if (!st)
			reply.fail(st);
		return;
	}
	case MsgType::kWriteVersioned: {
		auto w = wire::decode_versioned_write(req.count, payload);
		if (!w) {
			reply.fail(w.status());
			return;
		}
		VersionedMode mode = (w->prefix.flags & wire::kVersionedRepair)
		                             ? VersionedMode::kRepair
		                             : VersionedMode::kNewer;
		if (reply.can_defer())
			return defer_write(req, w->pages, w->prefix.version, mode, reply);
		uint32_t applied = 0;
		Status st = store_->write_pages_versioned(req.region_id, req.offset, req.count,
		                                          w->pages.data(), w->prefix.version, mode,
		                                          &applied);
		if (!st) {
			reply.fail(st);
			return;
		}
		wire::encode_applied(applied, reply.payload_buffer(wire::kAppliedSize).data());
		return;
	}
	case MsgType::kReadVersioned:
	case MsgType::kReadVersions: {
		bool pages = MsgType(req.type) == MsgType::kReadVersioned;
		Status st = check_versioned_count(req, pages ? wire::kMaxPagesPerRequest
		                                             : wire::kMaxVersionsPerRequest);
		if (!st) {
			reply.fail(st);
			return;
		}
		if (reply.can_defer() && overlaps_pending_write(req.offset, req.count)) {
			Job j;
			j.reply = reply.defer();
			enqueue(std::move(j));
			return;
		}
		if (!pages) {
			auto buf = reply.payload_buffer(size_t(req.count) * sizeof(uint64_t));
			st = read_versions(req, buf);
			if (!st)
				reply.fail(st);
			return;
		}
		auto buf = reply.payload_buffer(read_versioned_size(req.count));
		uint32_t crc = 0;
		st = read_versioned(req, buf, &crc);
		if (!st)
			reply.fail(st);
		else
			reply.set_payload_crc(crc);
		return;
	}
	case MsgType::kRegionCreate: {
		auto spec = wire::decode_region_spec(payload);
		if (!spec) {
			reply.fail(spec.status());
			return;
		}
		auto r = store_->create_region(wire::region_name(*spec), spec->size_bytes,
		                               spec->owner_uid, spec->mode, nullptr,
		                               ReplicaSpec{spec->replica_group, spec->replicas});
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
