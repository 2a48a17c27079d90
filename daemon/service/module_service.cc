#include "daemon/service/module_service.h"

#include <cstring>

#include "daemon/common/clock.h"
#include "daemon/common/crc32c.h"
#include "daemon/common/log.h"
#include "daemon/trust/node_key.h"
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

void ModuleService::set_quota(const QuotaConfig &q, const std::string &config_path)
{
	{
		std::lock_guard lk(quota_mu_);
		quota_ = q;
		config_path_ = config_path;
	}
	// A thin pool charges the byte quotas when a write first takes a page.
	if (!store_->thin())
		return;
	PoolInfo info = store_->info();
	ModuleSize size{info.capacity_bytes, info.table_slots};
	store_->set_write_admit(
	        [this, q, config_path, size, module = store_->module_id().to_string()](
	                const RegionInfo &r, const OwnerUsage &uid_usage,
	                const OwnerUsage &node_usage, uint64_t more) {
		        bool local = is_zero_key(r.owner_key);
		        Status st = admit_write(
		                q, r, local ? "" : trust::TrustedPeers::describe(r.owner_key, ""),
		                local ? uid_usage : node_usage, more, module, size, config_path);
		        if (!st.is_ok())
			        log_refusal(st, local ? Refusal::kUidQuota : Refusal::kNodeQuota);
		        return st;
	        });
}

Requester ModuleService::requester_of(const ConnInfo &conn) const
{
	Requester q;
	q.local = !conn.authenticated || conn.peer_key == own_key_;
	q.key = conn.peer_key;
	q.key_name = conn.peer_name;
	return q;
}

std::string ModuleService::owner_text(const NodeKeyBytes &owner) const
{
	return trust::encode_key(is_zero_key(owner) ? own_key_ : owner);
}

RefusalCounts ModuleService::refusals() const
{
	auto n = [this](Refusal r) { return refusals_[size_t(r)].load(std::memory_order_relaxed); };
	return {n(Refusal::kRead),      n(Refusal::kWrite),    n(Refusal::kAdmin),
	        n(Refusal::kNodeQuota), n(Refusal::kUidQuota), n(Refusal::kRdmaKey)};
}

Status ModuleService::authorize_read(const ConnInfo &conn, uint32_t region_id)
{
	return authorize(requester_of(conn), region_id, wire::kAccessRead);
}

void ModuleService::log_refusal(const Status &st, Refusal why)
{
	refusals_[size_t(why)].fetch_add(1, std::memory_order_relaxed);
	auto now = std::chrono::steady_clock::now();
	std::lock_guard lk(log_mu_);
	if (last_refusal_log_ != std::chrono::steady_clock::time_point{} &&
	    now - last_refusal_log_ < std::chrono::seconds(1)) {
		refusals_unlogged_++;
		return;
	}
	if (refusals_unlogged_ > 0)
		LOG_WARN("module", "refused: %s (and %llu more refusals since the last line)",
		         st.message().c_str(), (unsigned long long)refusals_unlogged_);
	else
		LOG_WARN("module", "refused: %s", st.message().c_str());
	last_refusal_log_ = now;
	refusals_unlogged_ = 0;
}

Status ModuleService::authorize(const Requester &q, const RegionInfo &r, const RegionAccess &a,
                                uint8_t want)
{
	if (q.local || (rights_of(r, normalized(a), q) & want) == want)
		return Status::ok();
	Status st = refusal(r, store_->module_id(), owner_text(a.owner_key), q, want);
	log_refusal(st, (want & wire::kAccessAdmin)   ? Refusal::kAdmin
	                : (want & wire::kAccessWrite) ? Refusal::kWrite
	                                              : Refusal::kRead);
	return st;
}

Status ModuleService::authorize(const Requester &q, uint32_t region_id, uint8_t want)
{
	if (q.local)
		return Status::ok();
	auto r = store_->region_by_id(region_id);
	auto a = store_->region_access(region_id);
	if (!r || !a)
		return r ? a.status() : r.status(); // the request fails as it would anyway
	return authorize(q, *r, *a, want);
}

void ModuleService::region_create(const ConnInfo &conn, const Requester &q,
                                  std::span<const uint8_t> payload, Reply &reply)
{
	auto spec = wire::decode_region_spec(payload);
	if (!spec) {
		reply.fail(spec.status());
		return;
	}
	const std::string name = wire::region_name(*spec);
	ModuleStore::AdmitFn admit_node;
	if (!q.local) {
		QuotaConfig quota;
		std::string config_path;
		{
			std::lock_guard lk(quota_mu_);
			quota = quota_;
			config_path = config_path_;
		}
		PoolInfo info = store_->info();
		ModuleSize size{info.capacity_bytes, info.table_slots};
		std::string node = trust::TrustedPeers::describe(q.key, q.key_name);
		std::string module = store_->module_id().to_string();
		admit_node = [quota, config_path, size, node, module, name](const OwnerUsage &usage,
		                                                            uint64_t bytes) {
			return admit_node_region(quota, node, usage, name, bytes, module, size,
			                         config_path);
		};
	}
	auto r = store_->create_region(name, spec->size_bytes, spec->owner_uid, spec->mode, nullptr,
	                               ReplicaSpec{spec->replica_group, spec->replicas},
	                               q.local ? NodeKeyBytes{} : q.key, admit_node);
	if (!r) {
		if (r.status().code() == Code::kQuota)
			log_refusal(r.status(), Refusal::kNodeQuota);
		reply.fail(r.status());
		return;
	}
	LOG_INFO("module", "region '%s' created by %s (%s) for uid %u, %lu bytes", r->name.c_str(),
	         q.local ? conn.module.to_string().c_str()
	                 : trust::TrustedPeers::describe(q.key, q.key_name).c_str(),
	         conn.peer.c_str(), r->owner_uid, (unsigned long)r->size_bytes);
	auto out = reply.payload_buffer(wire::kRegionSize);
	wire::encode_region(to_wire(*r), out.data());
}

void ModuleService::region_lookup(const Requester &asker, std::span<const uint8_t> payload,
                                  Reply &reply)
{
	auto l = wire::decode_lookup(payload);
	if (!l) {
		reply.fail(l.status());
		return;
	}
	auto r = store_->lookup_region(l->name);
	auto a = store_->region_access(l->name);
	if (!r || !a) {
		reply.fail(r ? a.status() : r.status());
		return;
	}
	Requester q = asker;
	q.uid_known = l->asked;
	q.uid = l->uid;
	uint8_t want = l->asked ? l->want : wire::kAccessRead;
	Status st = authorize(q, *r, *a, want);
	if (!st) {
		reply.fail(st);
		return;
	}
	wire::WireRegion w = to_wire(*r);
	if (l->asked)
		w.access = q.local ? wire::kAccessKnown : rights_of(*r, normalized(*a), q);
	wire::encode_region(w, reply.payload_buffer(wire::kRegionSize).data());
}

void ModuleService::region_access(const Requester &asker, std::span<const uint8_t> payload,
                                  Reply &reply)
{
	auto req = wire::decode_access_request(payload);
	if (!req) {
		reply.fail(req.status());
		return;
	}
	auto list = access_op(asker, *req);
	if (!list) {
		reply.fail(list.status());
		return;
	}
	reply.set_payload(wire::encode_access_list(*list));
}

RegionAccess ModuleService::normalized(RegionAccess a) const
{
	if (is_zero_key(a.owner_key))
		a.owner_key = own_key_;
	return a;
}

Result<uint8_t> ModuleService::local_user_rights(const std::string &name, uint32_t uid,
                                                 uint8_t want)
{
	auto r = store_->lookup_region(name);
	if (!r)
		return r.status();
	auto a = store_->region_access(name);
	if (!a)
		return a.status();
	Requester q{false, own_key_, "", true, uid};
	RegionAccess n = normalized(*a);
	MF_RETURN_IF_ERROR(authorize(q, *r, n, want));
	return rights_of(*r, n, q);
}

uint8_t ModuleService::rights_for(const NodeKeyBytes &key, uint32_t uid, const RegionInfo &r)
{
	auto a = store_->region_access(r.id);
	if (!a)
		return 0; // deleted meanwhile: nothing to see
	return rights_of(r, normalized(*a), Requester{false, key, "", true, uid});
}

Result<wire::WireAccessList> ModuleService::local_access(const wire::WireAccessRequest &req)
{
	return access_op(Requester{false, own_key_, "", true, req.asker_uid}, req);
}

Result<wire::WireAccessList> ModuleService::access_op(const Requester &asker,
                                                      const wire::WireAccessRequest &req)
{
	const std::string name = wire::region_name(req);
	auto r = store_->lookup_region(name);
	if (!r)
		return r.status();
	auto a = store_->region_access(name);
	if (!a)
		return a.status();
	Requester q = asker;
	q.uid_known = true;
	q.uid = req.asker_uid;
	auto op = wire::AccessOp(req.op);
	RegionAccess now = normalized(*a);
	MF_RETURN_IF_ERROR(authorize(
	        q, *r, now, op == wire::AccessOp::kShow ? wire::kAccessRead : wire::kAccessAdmin));
	if (op != wire::AccessOp::kShow) {
		AccessGrant g;
		std::memcpy(g.key.data(), req.key, g.key.size());
		g.uid = req.uid;
		g.rights = op == wire::AccessOp::kRevoke
		                   ? 0
		                   : uint8_t(((req.rights & wire::kAccessRead) ? kRightRead : 0) |
		                             ((req.rights & wire::kAccessWrite) ? kRightWrite : 0));
		if (g.key == now.owner_key || is_zero_key(g.key))
			return Status(Code::kInvalidArgument,
			              "node " + trust::encode_key(now.owner_key) +
			                      " owns region '" + name +
			                      "': its users follow the region's mode (owner uid " +
			                      std::to_string(r->owner_uid) + "), not grants");
		auto changed = store_->set_grant(name, g);
		if (!changed)
			return changed.status();
		now = normalized(*changed);
		const std::string uid_text =
		        g.uid == kAnyUid ? "every uid" : "uid " + std::to_string(g.uid);
		LOG_INFO("module", "region '%s': %s node %s %s%s%s", name.c_str(),
		         g.rights ? "granted" : "revoked the grant of",
		         trust::encode_key(g.key).c_str(), uid_text.c_str(), g.rights ? " " : "",
		         g.rights ? rights_text(g.rights).c_str() : "");
	}
	wire::WireAccessList list{};
	std::memcpy(list.owner_key, now.owner_key.data(), now.owner_key.size());
	list.owner_uid = r->owner_uid;
	for (const AccessGrant &g : now.grants) {
		wire::WireGrant w{};
		std::memcpy(w.key, g.key.data(), g.key.size());
		w.uid = g.uid;
		w.rights = uint8_t(((g.rights & kRightRead) ? wire::kAccessRead : 0) |
		                   ((g.rights & kRightWrite) ? wire::kAccessWrite : 0));
		list.grants.push_back(w);
	}
	return list;
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
	store_->set_write_admit(nullptr); // it points at this service
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
	return store_->set_length(wire::region_name(s), s.length, grow_only);
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
			// Recorded before it is answered: a retry that follows the
			// answer finds it done.
			if (j.wire_seq != 0)
				sessions_.record(j.session, j.wire_seq, op.status.code(),
				                 op.applied);
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

void ModuleService::write(const wire::Header &req, std::span<const uint8_t> payload,
                          const SessionCache::Key &session, uint64_t seq, Reply &reply)
{
	bool versioned = req.type == uint8_t(wire::MsgType::kWriteVersioned);
	std::span<const uint8_t> pages = payload;
	uint64_t version = 0;
	VersionedMode mode = VersionedMode::kNewer;
	if (versioned) {
		auto w = wire::decode_versioned_write(req.count, payload);
		if (!w) {
			if (seq != 0)
				sessions_.record(session, seq, w.status().code(), 0);
			reply.fail(w.status());
			return;
		}
		pages = w->pages;
		version = w->prefix.version;
		mode = (w->prefix.flags & wire::kVersionedRepair) ? VersionedMode::kRepair
		                                                  : VersionedMode::kNewer;
	}
	if (reply.can_defer()) {
		defer_write(req, pages, version, mode, session, seq, reply);
		return;
	}
	uint32_t applied = 0;
	Status st =
	        versioned ? store_->write_pages_versioned(req.region_id, req.offset, req.count,
	                                                  pages.data(), version, mode, &applied)
	                  : store_->write_pages(req.region_id, req.offset, req.count, pages.data());
	if (seq != 0)
		sessions_.record(session, seq, st.code(), applied);
	if (!st) {
		reply.fail(st);
		return;
	}
	if (versioned)
		wire::encode_applied(applied, reply.payload_buffer(wire::kAppliedSize).data());
}

void ModuleService::defer_write(const wire::Header &req, std::span<const uint8_t> pages,
                                uint64_t version, VersionedMode mode,
                                const SessionCache::Key &session, uint64_t wire_seq, Reply &reply)
{
	Job j;
	j.session = session;
	j.wire_seq = wire_seq;
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
	if (st)
		LOG_INFO("module", "region '%s' deleted by %s", name.c_str(), by.c_str());
	return st;
}

wire::WireStat ModuleService::stat() const
{
	PoolInfo i = store_->info();
	wire::WireStat s{};
	s.capacity_bytes = i.capacity_bytes;
	s.used_bytes = i.used_bytes;
	s.free_bytes = i.free_bytes;
	// STAT's sizes are of the capacity (a thin pool's address space is far
	// larger): the largest free extent is told within what is free.
	s.largest_free_bytes = std::min(i.largest_free_bytes, i.free_bytes);
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
	const Requester q = requester_of(conn);
	if (!q.local) {
		// Page requests name their region by id: checked before anything else.
		uint8_t want = 0;
		switch (MsgType(req.type)) {
		case MsgType::kRead:
		case MsgType::kReadVersioned:
		case MsgType::kReadVersions:
			want = wire::kAccessRead;
			break;
		case MsgType::kWrite:
		case MsgType::kWriteVersioned:
			want = wire::kAccessWrite;
			break;
		default:
			break;
		}
		if (want != 0) {
			Status st = authorize(q, req.region_id, want);
			if (!st) {
				reply.fail(st);
				return;
			}
		}
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
	case MsgType::kWrite:
	case MsgType::kWriteVersioned: {
		wire::WireSequence seq;
		auto rest = wire::split_sequence(req, payload, &seq);
		if (!rest) {
			reply.fail(rest.status());
			return;
		}
		SessionCache::Key key{conn.peer_key, seq.session};
		if (seq.seq != 0) {
			auto a = sessions_.admit(key, seq.seq, (req.flags & wire::kFlagRetry) != 0,
			                         conn.id, mono_ns());
			using V = SessionCache::Admission::Verdict;
			if (a.verdict == V::kRefused) {
				LOG_DEBUG("module", "%s from %s: %s", wire::msg_type_name(req.type),
				          conn.peer.c_str(), a.status.message().c_str());
				reply.fail(a.status);
				return;
			}
			if (a.verdict == V::kAnswered) {
				if (!a.status)
					reply.fail(a.status);
				else if (req.type == uint8_t(MsgType::kWriteVersioned))
					wire::encode_applied(
					        a.applied,
					        reply.payload_buffer(wire::kAppliedSize).data());
				return;
			}
		}
		return write(req, *rest, key, seq.seq, reply);
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
	case MsgType::kRegionCreate:
		region_create(conn, q, payload, reply);
		return;
	case MsgType::kRegionLookup:
		region_lookup(q, payload, reply);
		return;
	case MsgType::kRegionAccess:
		region_access(q, payload, reply);
		return;
	case MsgType::kRegionDelete: {
		auto name = wire::decode_name(payload);
		if (!name) {
			reply.fail(name.status());
			return;
		}
		if (!q.local) {
			auto r = store_->lookup_region(*name);
			auto a = store_->region_access(*name);
			Status st = !r   ? r.status()
			            : !a ? a.status()
			                 : authorize(q, *r, *a, wire::kAccessAdmin);
			if (!st) {
				reply.fail(st);
				return;
			}
		}
		{
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
	}
	case MsgType::kRegionSetLength: {
		auto s = wire::decode_set_length(payload);
		if (!s) {
			reply.fail(s.status());
			return;
		}
		if (!q.local) {
			auto r = store_->lookup_region(wire::region_name(*s));
			auto a = store_->region_access(wire::region_name(*s));
			Status st = !r   ? r.status()
			            : !a ? a.status()
			                 : authorize(q, *r, *a, wire::kAccessWrite);
			if (!st) {
				reply.fail(st);
				return;
			}
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
		auto lr = wire::decode_list_request(payload);
		if (!lr) {
			reply.fail(lr.status());
			return;
		}
		std::vector<wire::WireRegion> list;
		for (const auto &r :
		     store_->list_regions(wire::list_after(*lr), wire::list_limit(*lr))) {
			wire::WireRegion w = to_wire(r);
			if (lr->asked) // what this node's vouched uid may do with it
				w.access = wire::kAccessAnswered |
				           rights_for(q.local ? own_key_ : q.key, lr->uid, r);
			list.push_back(w);
		}
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
