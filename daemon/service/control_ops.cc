#include "daemon/service/control_ops.h"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "daemon/common/log.h"
#include "daemon/common/region_name.h"
#include "daemon/common/size.h"
#include "daemon/service/metrics_format.h"
#include "daemon/store/layout.h"
#include "daemon/wire/protocol.h"

namespace memfed {

using control::Message;
using control::error_reply;
using control::ok_reply;
using nlohmann::json;

namespace {

constexpr uint64_t kPage = wire::kPageSize;

// Required string / unsigned fields, with errors that name the field.
Result<std::string> need_string(const json &b, const char *key)
{
	auto it = b.find(key);
	if (it == b.end() || !it->is_string() || it->get<std::string>().empty())
		return Status(Code::kInvalidArgument, std::string("request needs a non-empty string \"") + key + "\"");
	return it->get<std::string>();
}

Result<uint64_t> need_u64(const json &b, const char *key, std::optional<uint64_t> dflt = std::nullopt)
{
	auto it = b.find(key);
	if (it == b.end()) {
		if (dflt)
			return *dflt;
		return Status(Code::kInvalidArgument, std::string("request needs an unsigned integer \"") + key + "\"");
	}
	if (!it->is_number_unsigned())
		return Status(Code::kInvalidArgument, std::string("\"") + key + "\" must be an unsigned integer");
	return it->get<uint64_t>();
}

Result<bool> need_bool(const json &b, const char *key, bool dflt)
{
	auto it = b.find(key);
	if (it == b.end())
		return dflt;
	if (!it->is_boolean())
		return Status(Code::kInvalidArgument, std::string("\"") + key + "\" must be true or false");
	return it->get<bool>();
}

json module_json(const ModuleEntry &m)
{
	json j = {{"module", m.module.valid() ? m.module.to_string() : ""},
		  {"endpoint", m.endpoint},
		  {"local", m.local},
		  {"reachable", m.reachable},
		  {"capacity_bytes", m.capacity_bytes},
		  {"free_bytes", m.free_bytes},
		  {"hops", m.hops}};
	if (!m.error.empty())
		j["error"] = m.error; // why it is unreachable
	j["metric"] = m.metric;
	if (m.mesh)
		j["mesh"] = true;
	if (m.down_since_unix_ms)
		j["down_since_unix_ms"] = m.down_since_unix_ms;
	if (!m.key.empty())
		j["key"] = m.key; // the module's node, as TLS authenticated it
	if (!m.key_name.empty())
		j["key_name"] = m.key_name;
	if (!m.conflict_key.empty() || !m.conflict_endpoint.empty())
		// Two pools answer for this module ID: the one met first (`key`)
		// and the one refused at HELLO.
		j["conflict"] = {{"keys", {m.key, m.conflict_key}},
		                 {"endpoints", {m.pinned_endpoint, m.conflict_endpoint}}};
	return j;
}

} // namespace

uint8_t access_bits(Access want)
{
	switch (want) {
	case Access::kRead:
		return wire::kAccessRead;
	case Access::kWrite:
		return wire::kAccessWrite;
	case Access::kOwner:
		break;
	}
	return wire::kAccessAdmin;
}

Status check_access(const RegionLocation &r, uid_t uid, Access want)
{
	if (r.access != 0) {
		// The module holding it decided, by owner node and grants.
		uint8_t need = access_bits(want);
		if ((r.access & need) == need)
			return Status::ok();
		return Status(Code::kPermission, "uid " + std::to_string(uid) + " may not " +
							 (want == Access::kRead    ? "read"
							  : want == Access::kWrite ? "write"
										   : "own") +
							 " region '" + r.name + "' (module " +
							 r.module.to_string() + " gives it only '" +
							 rights_text(r.access & 3) + "')");
	}
	if (uid == 0 || uid == r.owner_uid)
		return Status::ok();
	const char *what = "own";
	bool ok = false;
	if (want == Access::kRead) {
		ok = (r.mode & 04) != 0;
		what = "read";
	} else if (want == Access::kWrite) {
		ok = (r.mode & 02) != 0;
		what = "write";
	}
	if (ok)
		return Status::ok();
	char mode[8];
	std::snprintf(mode, sizeof(mode), "%04o", r.mode);
	return Status(Code::kPermission, "uid " + std::to_string(uid) + " may not " + what + " region '" +
						 r.name + "' (owner uid " + std::to_string(r.owner_uid) +
						 ", mode " + mode + ")");
}

// A region as the control socket describes it ("used_bytes" only for a region
// of this node's module). A replicated one also has
// "replicas" (copies wanted), "in_sync", "degraded" and "copies": each copy's
// module, state ("in sync", "catching up", "lost"), why, since (unix ms),
// catch-up progress (pages checked of pages to check) and pages copied in,
// and its lag: since when it is out of sync and for how long (0 in sync),
// pages written that it could not take, and pages found to differ and not
// yet copied. "rebuild" says why a lost copy cannot be rebuilt elsewhere.
json region_json(const RegionLocation &r, NodeFederation *fed)
{
	json j = {{"name", r.name},
		  {"id", r.region_id},
		  {"module", r.module.to_string()},
		  {"fa", FederatedAddress{r.module, r.fa_offset}.to_string()},
		  {"size", r.size_bytes},
		  {"length", r.length},
		  {"owner_uid", r.owner_uid},
		  {"mode", r.mode},
		  {"ctime_ns", r.ctime_ns}};
	// The space it takes (its pages written), known for a region of this
	// node's module; a region elsewhere shows none.
	if (auto used = fed->local_used_bytes(r.module, r.region_id))
		j["used_bytes"] = *used;
	if (auto base = fed->local_clone_base(r.module, r.region_id))
		j["clone_of"] = *base;
	if (r.replica_group == 0 || r.replicas <= 1)
		return j;
	j["replicas"] = r.replicas;
	auto set = fed->replica_set(r.replica_group);
	json copies = json::array();
	unsigned in_sync = 0;
	if (set) {
		const uint64_t now = unix_ms();
		for (const auto &c : set->snapshot()) {
			in_sync += c.state == ReplicaSet::State::kInSync;
			copies.push_back({{"module", c.loc.module.to_string()},
					  {"state", ReplicaSet::state_name(c.state)},
					  {"why", c.why},
					  {"since_unix_ms", c.since_unix_ms},
					  {"pages_checked", c.pages_checked},
					  {"pages_to_check", c.pages_to_check},
					  {"pages_copied", c.pages_copied},
					  {"out_of_sync_since_unix_ms", c.out_of_sync_since_unix_ms},
					  {"behind_ms", c.out_of_sync_since_unix_ms
								? now - std::min(now, c.out_of_sync_since_unix_ms)
								: 0},
					  {"pages_missed", c.pages_missed},
					  {"pages_to_copy", c.pages_to_copy}});
		}
		auto k = set->counters();
		j["counters"] = {{"writes", k.writes},
				 {"reads_retried", k.reads_retried},
				 {"pages_caught_up", k.pages_caught_up},
				 {"pages_repaired", k.pages_repaired},
				 {"copies_lost", k.replicas_lost},
				 {"copies_replaced", k.replicas_replaced}};
		if (std::string note = set->rebuild_note(); !note.empty() && set->degraded())
			j["rebuild"] = note;
	}
	j["copies"] = copies;
	j["in_sync"] = in_sync;
	j["degraded"] = in_sync < r.replicas;
	return j;
}

ControlOps::ControlOps(const DaemonConfig &cfg, NodeFederation *fed, std::string listen_endpoint)
	: cfg_(cfg), fed_(fed), listen_(std::move(listen_endpoint)), quota_(cfg.quota)
{
	// A copy the federation rebuilds on this node's module is charged to
	// the region's owner like a create of theirs here.
	fed_->set_local_admit([this](uint32_t uid, const std::string &name) -> ModuleStore::AdmitFn {
		return [q = quota(), uid, name, size = fed_->local_size(),
			module = fed_->self().to_string(),
			path = cfg_.config_path](const OwnerUsage &usage, uint64_t bytes) {
			return admit_region(q, uid, usage, name, bytes, module, size, path);
		};
	});
}

ControlOps::~ControlOps()
{
	fed_->set_local_admit(nullptr);
}

void ControlOps::set_quota(const QuotaConfig &q)
{
	std::lock_guard<std::mutex> lk(quota_mu_);
	quota_ = q;
}

QuotaConfig ControlOps::quota() const
{
	std::lock_guard<std::mutex> lk(quota_mu_);
	return quota_;
}

void ControlOps::register_ops(control::Server &server)
{
	using control::Peer;
	server.add_op("hello", [this](const Peer &, Message &) {
		return ok_reply({{"version", 1},
				 {"module", fed_->has_local() ? fed_->self().to_string() : ""},
				 {"node", fed_->self().to_string()},
				 {"socket", cfg_.socket}});
	});
	server.add_op("status", [this](const Peer &, Message &) { return status(); });
	// memfedctl watch --replicas: the copies' state changes after "after".
	server.add_op("replica.events", [this](const Peer &, Message &m) {
		uint64_t after = 0;
		auto it = m.body.find("after");
		if (it != m.body.end() && !it->is_number_unsigned())
			return error_reply(
				Status(Code::kInvalidArgument, "\"after\" must be an event number"));
		if (it != m.body.end())
			after = it->get<uint64_t>();
		uint64_t next = 0;
		json list = json::array();
		for (const auto &e : fed_->replica_events().after(after, &next))
			list.push_back({{"seq", e.seq},
					{"unix_ms", e.unix_ms},
					{"region", e.region},
					{"module", e.module.to_string()},
					{"event", e.event},
					{"was", e.was},
					{"why", e.why},
					{"in_sync", e.in_sync},
					{"wanted", e.wanted}});
		return ok_reply({{"events", list}, {"next", next}});
	});
	server.add_op("stats", [this](const Peer &, Message &m) { return stats(m); });
	server.add_op("module.list",
		      [this](const Peer &, Message &) { return ok_reply({{"modules", modules_body()}}); });
	server.add_op("region.create", [this](const Peer &p, Message &m) { return region_create(p, m); });
	server.add_op("region.delete", [this](const Peer &p, Message &m) { return region_delete(p, m); });
	server.add_op("region.show", [this](const Peer &p, Message &m) { return region_show(p, m); });
	server.add_op("region.truncate",
		      [this](const Peer &p, Message &m) { return region_truncate(p, m); });
	server.add_op("region.list", [this](const Peer &p, Message &m) { return region_list(p, m); });
	server.add_op("quota.show", [this](const Peer &p, Message &) { return quota_show(p); });
	server.add_op("region.read", [this](const Peer &p, Message &m) { return region_read(p, m); });
	server.add_op("region.write", [this](const Peer &p, Message &m) { return region_write(p, m); });
	server.add_op("region.copy", [this](const Peer &p, Message &m) { return region_copy(p, m); });
	server.add_op("region.clone", [this](const Peer &p, Message &m) { return region_clone(p, m); });
	server.add_op("region.grant",
		      [this](const Peer &p, Message &m) { return region_grant(p, m, true); });
	server.add_op("region.revoke",
		      [this](const Peer &p, Message &m) { return region_grant(p, m, false); });
}

Message ControlOps::status()
{
	json roles = json::array();
	if (cfg_.role_module)
		roles.push_back("module");
	if (cfg_.role_pager)
		roles.push_back("pager");
	json b = {{"version", "0.1.0"},
		  {"pid", getpid()},
		  {"roles", roles},
		  {"node", fed_->self().to_string()},
		  {"module", fed_->has_local() ? json(fed_->self().to_string()) : json()},
		  {"listen", listen_},
		  {"metrics", metrics_.empty() ? json() : json(metrics_)},
		  {"socket", cfg_.socket},
		  {"config", cfg_.config_path.empty() ? "(built-in defaults)" : cfg_.config_path},
		  {"table_source", "daemon"}};
	json mods = json::array();
	for (const auto &m : fed_->modules()) {
		json e = module_json(m);
		if (m.local) {
			// Capacity and the pages written (a thin pool's regions
			// take space only for those), and the address space.
			auto pi = fed_->local_pool_info();
			b["pool"] = {{"path", cfg_.pool_path},
				     {"capacity_bytes", m.capacity_bytes},
				     {"used_bytes", pi ? pi->used_bytes : 0},
				     {"thin", pi && pi->thin},
				     {"address_bytes", pi ? pi->address_bytes : 0},
				     {"address_free_bytes", pi ? pi->address_free_bytes : 0}};
		}
		mods.push_back(e);
	}
	add_transports(mods);
	b["modules"] = mods;
	if (b.contains("pool"))
		b["pool"]["regions"] = fed_->local_region_count();
	// Replicated regions met here with fewer copies in sync than wanted.
	b["regions_degraded"] = fed_->degraded_regions();
	if (status_hook_)
		status_hook_(b);
	return ok_reply(b);
}

json ControlOps::modules_body()
{
	json mods = json::array();
	for (const auto &m : fed_->modules())
		mods.push_back(module_json(m));
	add_transports(mods);
	return mods;
}

void ControlOps::add_transports(json &mods)
{
	if (!transport_states_)
		return;
	// A module's channels (one per pager thread, and per copy of a
	// replicated region) usually agree; "rdma+tcp" while they do not.
	std::map<std::string, std::pair<std::set<std::string>, std::string>> by_module;
	for (const auto &t : transport_states_()) {
		auto &[kinds, why] = by_module[t.module.to_string()];
		kinds.insert(t.transport);
		if (why.empty())
			why = t.why;
	}
	for (auto &m : mods) {
		auto it = by_module.find(m.value("module", ""));
		if (it == by_module.end())
			continue;
		const auto &[kinds, why] = it->second;
		std::string joined;
		for (const char *k : {"rdma", "tcp", "local"})
			if (kinds.count(k))
				joined.append(joined.empty() ? "" : "+").append(k);
		m["transport"] = joined;
		if (!why.empty())
			m["transport_why"] = why;
	}
}

// The module's counters and a page of the pager's (Pager::stats): a reply
// with "pager": {"more": true, "next": N} is continued by asking again with
// "after": N, until "more" is false. memfedctl stats does that.
Message ControlOps::stats(Message &req)
{
	constexpr size_t kPagerPageBytes = 96 * 1024; // well below kMaxPacket
	auto after = req.body.find("after");
	if (after != req.body.end() && !after->is_string())
		return error_reply(Status(Code::kInvalidArgument,
					  "\"after\" must be the pager's \"next\" string of the "
					  "previous stats reply"));
	json b = stats_body(after != req.body.end() ? after->get<std::string>() : "",
			    kPagerPageBytes);
	if (b.contains("pager") && b["pager"].contains("bad_cursor"))
		return error_reply(Status(Code::kInvalidArgument,
					  b["pager"]["error"].get<std::string>()));
	return ok_reply(b);
}

Result<std::string> ControlOps::metrics_text()
{
	json stats = stats_body("", SIZE_MAX);
	if (stats.contains("pager") && stats["pager"].contains("error"))
		return Status(Code::kUnavailable,
			      "pager: " + stats["pager"]["error"].get<std::string>());
	return format_metrics(stats, modules_body());
}

json ControlOps::stats_body(const std::string &after, size_t max_bytes)
{
	json b = json::object();
	for (const auto &m : fed_->modules()) {
		if (!m.local)
			continue;
		b["module"] = {{"module", m.module.to_string()},
			       {"capacity_bytes", m.capacity_bytes},
			       {"free_bytes", m.free_bytes}};
		if (auto n = fed_->refusals())
			b["module"]["refusals"] = {{"read", n->read},
						   {"write", n->write},
						   {"admin", n->admin},
						   {"node_quota", n->node_quota},
						   {"uid_quota", n->uid_quota},
						   {"rdma_key", n->rdma_key}};
		if (auto n = fed_->sessions())
			b["module"]["sessions"] = {{"sequenced", n->sequenced},
						   {"retries_answered", n->retries_answered},
						   {"refused_superseded", n->refused_superseded},
						   {"refused_in_progress", n->refused_in_progress},
						   {"refused_unknown", n->refused_unknown},
						   {"sessions", n->sessions},
						   {"expired", n->expired}};
	}
	if (pager_stats_)
		b["pager"] = pager_stats_(after, max_bytes);
	if (rdma_stats_)
		b["rdma"] = rdma_stats_();
	return b;
}

Message ControlOps::region_create(const control::Peer &peer, Message &req)
{
	auto name = need_string(req.body, "name");
	if (!name)
		return error_reply(name.status());
	auto size = need_u64(req.body, "size");
	if (!size)
		return error_reply(size.status());
	auto mode = need_u64(req.body, "mode", 0600);
	if (!mode)
		return error_reply(mode.status());
	if (*mode > 0777)
		return error_reply(Status(Code::kInvalidArgument, "mode must be permission bits (at most 0777)"));
	// "length": the region's length as a file (default: all of it).
	auto length = need_u64(req.body, "length", UINT64_MAX);
	if (!length)
		return error_reply(length.status());
	if (*length != UINT64_MAX && *length > *size)
		return error_reply(Status(Code::kOutOfRange, "\"length\" " + std::to_string(*length) +
								     " is beyond \"size\" " + std::to_string(*size)));
	std::optional<ModuleId> module;
	if (req.body.contains("module")) {
		auto m = need_string(req.body, "module");
		auto id = m ? ModuleId::parse(*m) : std::nullopt;
		if (!id)
			return error_reply(Status(Code::kInvalidArgument,
						  "\"module\" must be a module ID like 02:00:00:00:00:01"));
		module = id;
	}
	// "replicas": copies on distinct nodes (default: the config's
	// "replicas"); "replicas_min": fewer allowed; "on": [module IDs].
	Placement placement;
	auto replicas = need_u64(req.body, "replicas", cfg_.replicas);
	if (!replicas)
		return error_reply(replicas.status());
	auto replicas_min = need_u64(req.body, "replicas_min", 0);
	if (!replicas_min)
		return error_reply(replicas_min.status());
	if (*replicas < 1 || *replicas > kMaxReplicas || *replicas_min > *replicas)
		return error_reply(Status(Code::kInvalidArgument,
					  "\"replicas\" must be 1 to " + std::to_string(kMaxReplicas) +
						  " and \"replicas_min\" at most \"replicas\""));
	placement.replicas = unsigned(*replicas);
	placement.replicas_min = unsigned(*replicas_min);
	if (auto on = req.body.find("on"); on != req.body.end()) {
		if (!on->is_array())
			return error_reply(Status(Code::kInvalidArgument,
						  "\"on\" must be a list of module IDs"));
		for (const auto &m : *on) {
			auto id = m.is_string() ? ModuleId::parse(m.get<std::string>()) : std::nullopt;
			if (!id)
				return error_reply(Status(Code::kInvalidArgument,
							  "\"on\" must hold module IDs like 02:00:00:00:00:01"));
			placement.on.push_back(*id);
		}
		if (placement.on.size() == 1 && placement.replicas == 1 && !module) {
			module = placement.on[0];
			placement.on.clear();
		}
	}
	// The caller's quota on this node's module, checked under the store's
	// table lock; a peer module decides its own.
	ModuleStore::AdmitFn admit;
	const bool local = fed_->has_local() && (!module || *module == fed_->self());
	if (local) {
		admit = [this, uid = peer.uid, q = quota(), size = fed_->local_size(),
			 module = fed_->self().to_string(),
			 name = *name](const OwnerUsage &usage, uint64_t bytes) {
			return admit_region(q, uid, usage, name, bytes, module, size, cfg_.config_path);
		};
	}
	auto r = fed_->create_region(*name, *size, peer.uid, uint32_t(*mode), module, admit,
				     placement);
	if (r && *length != UINT64_MAX)
		r = fed_->set_length(*r, *length, false);
	if (!r && local && placement.replicas == 1 && r.status().code() == Code::kQuota)
		fed_->count_refusal(r.status(), Refusal::kUidQuota); // admit_region's answer
	if (!r)
		return error_reply(r.status());
	LOG_INFO("control", "uid %u created region '%s' (%s) on %s", peer.uid, name->c_str(),
		 format_size(r->size_bytes).c_str(), r->module.to_string().c_str());
	return ok_reply({{"region", region_json(*r, fed_)}});
}

Result<RegionLocation> ControlOps::find_region(const control::Peer &peer, const Message &req,
					       Access want, const char *key)
{
	auto name = need_string(req.body, key);
	if (!name)
		return name.status();
	auto loc = fed_->locate_region(*name, Asker{peer.uid, access_bits(want)});
	if (!loc)
		return loc;
	Status st = check_access(*loc, peer.uid, want);
	if (!st)
		return st;
	return loc;
}

Message ControlOps::region_delete(const control::Peer &peer, Message &req)
{
	auto force = need_bool(req.body, "force", false);
	if (!force)
		return error_reply(force.status());
	auto loc = find_region(peer, req, Access::kOwner);
	std::string owner_node; // set when root deletes another node's region here
	if (!loc && loc.status().code() == Code::kPermission && peer.privileged()) {
		// Root of the node that runs the module may delete a region another
		// node owns there, but only with --force, and it is logged: the pool
		// is this node's (space a departed node left behind must be
		// recoverable), the data is not (a slip must not destroy it).
		auto held = fed_->local_region_owner(req.body.value("name", std::string()));
		if (!held)
			return error_reply(loc.status());
		if (!*force)
			return error_reply(Status(Code::kPermission,
						  loc.status().message() + "; root of this module's node "
									   "may delete it anyway with "
									   "`memfedctl region rm --force " +
							  held->first.name + "`"));
		owner_node = trust::encode_key(held->second);
		loc = held->first;
	}
	if (!loc)
		return error_reply(loc.status());
	std::vector<pid_t> users;
	for (const auto &f : region_users_)
		for (pid_t pid : f(loc->name))
			users.push_back(pid);
	std::sort(users.begin(), users.end());
	users.erase(std::unique(users.begin(), users.end()), users.end());
	if (!users.empty() && !*force) {
		std::string pids;
		for (pid_t pid : users)
			pids += (pids.empty() ? "" : ", ") + std::to_string(pid);
		return error_reply(Status(Code::kBusy, "region '" + loc->name + "' is in use by pid" +
							       (users.size() > 1 ? "s " : " ") + pids +
							       "; stop " + (users.size() > 1 ? "them" : "it") +
							       " first, or delete anyway with `memfedctl region rm "
							       "--force " + loc->name + "`"));
	}
	Status st = fed_->delete_region(*loc);
	if (!st)
		return error_reply(st);
	if (region_deleted_)
		region_deleted_(*loc);
	if (!owner_node.empty())
		LOG_WARN("control",
			 "root deleted region '%s' of node %s uid %u on this module by force "
			 "(memfedctl region rm --force)",
			 loc->name.c_str(), owner_node.c_str(), loc->owner_uid);
	else if (users.empty())
		LOG_INFO("control", "uid %u deleted region '%s'", peer.uid, loc->name.c_str());
	else
		LOG_WARN("control", "uid %u deleted region '%s' by force, in use by %zu process(es)",
			 peer.uid, loc->name.c_str(), users.size());
	return ok_reply();
}

Message ControlOps::region_show(const control::Peer &peer, Message &req)
{
	auto loc = find_region(peer, req, Access::kRead);
	if (!loc)
		return error_reply(loc.status());
	json region = region_json(*loc, fed_);
	json access = access_json(*loc, peer.uid);
	if (!access.is_null())
		region.update(access);
	return ok_reply({{"region", region}});
}

// The region's length as a file, as ftruncate sets a file's: shrinking
// zeroes what lies past the new end; "grow_only" never shrinks (appends).
Message ControlOps::region_truncate(const control::Peer &peer, Message &req)
{
	auto length = need_u64(req.body, "length");
	auto grow_only = need_bool(req.body, "grow_only", false);
	for (const Status *s : {&length.status(), &grow_only.status()})
		if (!s->is_ok())
			return error_reply(*s);
	auto loc = find_region(peer, req, Access::kWrite);
	if (!loc)
		return error_reply(loc.status());
	auto r = fed_->set_length(*loc, *length, *grow_only);
	if (!r)
		return error_reply(r.status());
	return ok_reply({{"region", region_json(*r, fed_)}});
}

// One page of the region list, in name order, so no number of regions
// outgrows a control packet. Request: "after" (continue after this name:
// the previous reply's "next"), "prefix" (only names that start with it),
// "limit" (at most this many; default and cap kListPage). Reply: "regions",
// "more" (true: ask again with "after": "next"). Only the regions the caller
// may read are listed; one request looks at no more than kListScan regions,
// so a page may hold fewer than "limit" (even none) and still have "more".
Message ControlOps::region_list(const control::Peer &peer, Message &req)
{
	constexpr size_t kListPage = 256;
	constexpr size_t kListBytes = 96 * 1024; // of region JSON, well below kMaxPacket
	constexpr size_t kListScan = 1024;	 // regions looked at per request
	auto after = req.body.value("after", std::string());
	auto prefix = req.body.value("prefix", std::string());
	auto limit = need_u64(req.body, "limit", kListPage);
	if (!limit)
		return error_reply(limit.status());
	if (*limit == 0 || *limit > kListPage)
		*limit = kListPage;
	if (!after.empty() && !valid_region_name(after))
		return error_reply(Status(Code::kInvalidArgument,
					  "\"after\" must be a region name (the \"next\" of the previous "
					  "region.list reply)"));
	// Every name that starts with the prefix sorts after the prefix less
	// its last byte.
	std::string cursor = after;
	if (!prefix.empty() && cursor < prefix.substr(0, prefix.size() - 1))
		cursor = prefix.substr(0, prefix.size() - 1);
	if (!cursor.empty() && !valid_region_name(cursor))
		return ok_reply({{"regions", json::array()}, {"more", false}}); // no name has it
	json list = json::array();
	size_t bytes = 0;
	bool more = true;
	size_t scanned = 0;
	while (more && list.size() < *limit && bytes < kListBytes && scanned < kListScan) {
		// A caller who may not see every region asks for whole pages: much
		// of what comes back may be hidden from them.
		size_t want = peer.privileged() ? *limit - list.size() : kListPage;
		// The modules say what an unprivileged caller may read, by each
		// region's owner node and grants (root sees every region).
		auto page = fed_->list_regions_page(
			cursor, want, &more,
			peer.privileged() ? std::nullopt : std::optional<uint32_t>(peer.uid));
		scanned += page.size();
		for (const auto &r : page) {
			cursor = r.name;
			if (r.name.compare(0, prefix.size(), prefix) != 0) {
				if (r.name > prefix) { // past every name with the prefix
					more = false;
					break;
				}
				continue;
			}
			if (!check_access(r, peer.uid, Access::kRead))
				continue; // not the caller's to see
			json j = region_json(r, fed_);
			bytes += j.dump().size();
			list.push_back(std::move(j));
			if ((bytes >= kListBytes || list.size() >= *limit) && &r != &page.back()) {
				more = true;
				break;
			}
		}
		if (page.empty())
			more = false;
	}
	json b = {{"regions", list}, {"more", more}};
	if (more)
		b["next"] = cursor;
	return ok_reply(b);
}

// The caller's usage and limits on this node's module; root gets every
// uid that holds a region there (and its own). Reply: "module" (null
// without a local module), "capacity_bytes", "table_slots", "config" (the
// quota keys as configured), "uids": [{"uid", "regions", "bytes",
// "regions_limit", "bytes_limit" (null: no limit), "exempt"}].
Message ControlOps::quota_show(const control::Peer &peer)
{
	QuotaConfig q = quota();
	DaemonConfig with;
	with.quota = q;
	json config = config_to_json(with)["quota"];
	if (!fed_->has_local())
		return ok_reply({{"module", nullptr}, {"config", config}, {"uids", json::array()}});
	ModuleSize size = fed_->local_size();
	auto usage = fed_->local_usage();
	if (!peer.privileged())
		usage = {{peer.uid, usage[peer.uid]}};
	else
		usage.try_emplace(peer.uid);
	auto limit = [](uint64_t l) { return l == kNoLimit ? json(nullptr) : json(l); };
	json uids = json::array();
	for (const auto &[uid, u] : usage) {
		UidLimits l = uid_limits(q, uid, size);
		uids.push_back({{"uid", uid},
				{"regions", u.regions},
				{"bytes", u.bytes},
				{"regions_limit", limit(l.regions)},
				{"bytes_limit", limit(l.bytes)},
				{"exempt", l.exempt}});
	}
	// Other nodes' regions here, by node key (for root and the daemon's own
	// user: they are not another local user's business).
	json nodes = json::array();
	if (peer.privileged() || peer.uid == geteuid()) {
		NodeLimits nl = node_limits(q, size);
		for (const auto &[key, u] : fed_->local_node_usage()) {
			if (is_zero_key(key))
				continue; // this node's own users: their uid quotas
			json n = {{"key", trust::encode_key(key)},
				  {"regions", u.regions},
				  {"bytes", u.bytes},
				  {"regions_limit", limit(nl.regions)},
				  {"bytes_limit", limit(nl.bytes)}};
			std::string name = key_name(key);
			if (!name.empty())
				n["name"] = name;
			nodes.push_back(n);
		}
	}
	return ok_reply({{"module", fed_->self().to_string()},
			 {"capacity_bytes", size.capacity_bytes},
			 {"table_slots", size.table_slots},
			 {"config", config},
			 {"uids", uids},
			 {"nodes", nodes}});
}

// Byte-granular access for scripting: whole pages travel; a partial page at
// either end of a write is read, patched and written back.
Message ControlOps::region_read(const control::Peer &peer, Message &req)
{
	auto name = need_string(req.body, "name");
	auto offset = need_u64(req.body, "offset", 0);
	auto length = need_u64(req.body, "length");
	for (const Status *s : {&name.status(), &offset.status(), &length.status()})
		if (!s->is_ok())
			return error_reply(*s);
	if (*length > control::kMaxData)
		return error_reply(Status(Code::kInvalidArgument, "\"length\" above " +
									  std::to_string(control::kMaxData) +
									  " bytes: read in chunks"));
	auto loc = find_region(peer, req, Access::kRead);
	if (!loc)
		return error_reply(loc.status());
	Status st;
	if (*offset > loc->size_bytes)
		return error_reply(Status(Code::kOutOfRange, "offset " + std::to_string(*offset) +
								     " is past the end of region '" + *name +
								     "' (" + std::to_string(loc->size_bytes) + " bytes)"));
	uint64_t len = std::min(*length, loc->size_bytes - *offset);
	Message reply = ok_reply({{"length", len}});
	if (len == 0)
		return reply;
	uint64_t first = *offset / kPage, last = (*offset + len - 1) / kPage;
	std::vector<uint8_t> pages((last - first + 1) * kPage);
	st = fed_->read_pages(*loc, first, uint32_t(last - first + 1), pages.data());
	if (!st)
		return error_reply(st);
	auto begin = pages.begin() + long(*offset - first * kPage);
	reply.data.assign(begin, begin + long(len));
	return reply;
}

Message ControlOps::region_write(const control::Peer &peer, Message &req)
{
	auto name = need_string(req.body, "name");
	auto offset = need_u64(req.body, "offset", 0);
	for (const Status *s : {&name.status(), &offset.status()})
		if (!s->is_ok())
			return error_reply(*s);
	auto loc = find_region(peer, req, Access::kWrite);
	if (!loc)
		return error_reply(loc.status());
	Status st;
	uint64_t len = req.data.size();
	if (len == 0)
		return ok_reply({{"written", 0}});
	if (*offset > loc->size_bytes || len > loc->size_bytes - *offset)
		return error_reply(Status(Code::kOutOfRange,
					  "writing " + std::to_string(len) + " bytes at offset " +
						  std::to_string(*offset) + " runs past the end of region '" +
						  *name + "' (" + std::to_string(loc->size_bytes) + " bytes)"));
	uint64_t first = *offset / kPage, last = (*offset + len - 1) / kPage;
	uint32_t count = uint32_t(last - first + 1);
	std::vector<uint8_t> pages(count * kPage);
	bool head_partial = *offset % kPage != 0;
	bool tail_partial = (*offset + len) % kPage != 0;
	if (head_partial)
		st = fed_->read_pages(*loc, first, 1, pages.data());
	if (st && tail_partial && (last != first || !head_partial))
		st = fed_->read_pages(*loc, last, 1, pages.data() + (count - 1) * kPage);
	if (!st)
		return error_reply(st);
	std::copy(req.data.begin(), req.data.end(), pages.begin() + long(*offset - first * kPage));
	st = fed_->write_pages(*loc, first, count, pages.data());
	if (!st)
		return error_reply(st);
	return ok_reply({{"written", len}});
}

// Whole pages from one region to another, through this daemon only (a
// client sends the request, not the bytes): what a forked process's copy
// of its parent's private memory takes. With "sparse", pages that are all
// zeros are not written: the destination must read as zeros there already,
// as a new region does.
Message ControlOps::region_copy(const control::Peer &peer, Message &req)
{
	auto offset = need_u64(req.body, "offset", 0);
	auto to_offset = need_u64(req.body, "to_offset", 0);
	auto length = need_u64(req.body, "length");
	for (const Status *s : {&offset.status(), &to_offset.status(), &length.status()})
		if (!s->is_ok())
			return error_reply(*s);
	auto sparse = need_bool(req.body, "sparse", false);
	if (!sparse)
		return error_reply(sparse.status());
	if (*offset % kPage || *to_offset % kPage || *length % kPage)
		return error_reply(Status(Code::kInvalidArgument,
					  "region.copy moves whole pages: \"offset\", \"to_offset\" and "
					  "\"length\" must be multiples of 4096"));
	auto src = find_region(peer, req, Access::kRead, "name");
	if (!src)
		return error_reply(src.status());
	auto dst = find_region(peer, req, Access::kWrite, "to");
	if (!dst)
		return error_reply(dst.status());
	for (auto [loc, at] : {std::pair{&*src, *offset}, std::pair{&*dst, *to_offset}})
		if (at > loc->size_bytes || *length > loc->size_bytes - at)
			return error_reply(Status(
				Code::kOutOfRange, std::to_string(*length) + " bytes at offset " +
							   std::to_string(at) + " run past the end of region '" +
							   loc->name + "' (" + std::to_string(loc->size_bytes) +
							   " bytes)"));
	if (src->name == dst->name && *offset < *to_offset + *length && *to_offset < *offset + *length)
		return error_reply(Status(Code::kInvalidArgument,
					  "source and destination ranges of region '" + src->name + "' overlap"));
	constexpr uint32_t kChunk = wire::kMaxPagesPerRequest;
	std::vector<uint8_t> buf(size_t{kChunk} * kPage);
	uint64_t pages = *length / kPage, from = *offset / kPage, to = *to_offset / kPage;
	uint64_t written = 0;
	for (uint64_t done = 0; done < pages;) {
		uint32_t n = uint32_t(std::min<uint64_t>(kChunk, pages - done));
		Status st = fed_->read_pages(*src, from + done, n, buf.data());
		if (!st)
			return error_reply(st);
		// Runs of pages to write: all of them, or those between zero pages.
		for (uint32_t i = 0; i < n;) {
			uint32_t j = i;
			while (j < n && !(*sparse && store::page_is_zero(&buf[size_t{j} * kPage])))
				j++;
			if (j > i) {
				st = fed_->write_pages(*dst, to + done + i, j - i, &buf[size_t{i} * kPage]);
				if (!st)
					return error_reply(st);
				written += uint64_t{j - i} * kPage;
			}
			i = j + 1; // past the zero page that ended the run (or the chunk)
		}
		done += n;
	}
	return ok_reply({{"copied", *length}, {"written", written}});
}

// A copy-on-write clone of a region's bytes [offset, offset + length) as
// region "to", owned by the caller, on the module holding the region (this
// node's own only: elsewhere the caller copies instead, region.copy). What
// a forked process's copy of its parent's private memory takes first: it
// costs a table entry, and the pages the parent later overwrites.
Message ControlOps::region_clone(const control::Peer &peer, Message &req)
{
	auto offset = need_u64(req.body, "offset", 0);
	auto length = need_u64(req.body, "length");
	auto to = need_string(req.body, "to");
	auto mode = need_u64(req.body, "mode", 0600);
	for (const Status *s : {&offset.status(), &length.status(), &to.status(), &mode.status()})
		if (!s->is_ok())
			return error_reply(*s);
	if (*mode > 0777)
		return error_reply(Status(Code::kInvalidArgument, "mode must be permission bits (at most 0777)"));
	auto src = find_region(peer, req, Access::kRead, "name");
	if (!src)
		return error_reply(src.status());
	ModuleStore::AdmitFn admit;
	if (fed_->has_local())
		admit = [this, uid = peer.uid, q = quota(), size = fed_->local_size(),
			 module = fed_->self().to_string(),
			 name = *to](const OwnerUsage &usage, uint64_t bytes) {
			return admit_region(q, uid, usage, name, bytes, module, size, cfg_.config_path);
		};
	auto r = fed_->clone_region(*src, *offset, *to, *length, peer.uid, uint32_t(*mode), admit);
	if (!r)
		return error_reply(r.status());
	LOG_INFO("control", "uid %u cloned region '%s' as '%s' (%s) on %s", peer.uid,
		 src->name.c_str(), to->c_str(), format_size(r->size_bytes).c_str(),
		 r->module.to_string().c_str());
	return ok_reply({{"region", region_json(*r, fed_)}});
}

} // namespace memfed
