#include "daemon/service/node_federation.h"
#include "daemon/service/node_federation_peer.h"

#include <algorithm>
#include <chrono>

#include "daemon/common/log.h"
#include "daemon/service/local_channel.h"
#include "daemon/transport/class_channel.h"
#include "daemon/transport/tcp_channel.h"
#include "daemon/wire/codec.h"

namespace memfed {

std::vector<NodeFederation::Peer *> NodeFederation::peer_list(bool include_down)
{
	std::lock_guard<std::mutex> lk(peers_mu_);
	std::vector<Peer *> out;
	out.reserve(peers_.size());
	for (auto &p : peers_) {
		if (include_down || p->route_up)
			out.push_back(p.get());
	}
	return out;
}

void NodeFederation::mesh_route(ModuleId module, const std::string &endpoint, bool up,
				uint32_t metric, uint32_t hops, const std::string &why)
{
	if (store_ && module == store_->module_id())
		return; // our own module's route, as seen from elsewhere
	if (mesh_route_locked(module, endpoint, up, metric, hops, why)) {
		lose_copies_on(module, "route withdrawn (" + why + ")");
		std::lock_guard<std::mutex> lk(where_mu_);
		std::erase_if(where_, [&](const auto &e) { return e.second == module; });
	}
}

// Plain-name hints kept at most (about 100 bytes each).
constexpr size_t kWhereEntries = 65536;

std::vector<NodeFederation::Peer *> NodeFederation::peers_nearest_first()
{
	auto peers = peer_list(false);
	std::lock_guard<std::mutex> lk(peers_mu_);
	std::stable_sort(peers.begin(), peers.end(), [](Peer *a, Peer *b) {
		return (a->mesh ? a->metric : 0) < (b->mesh ? b->metric : 0);
	});
	return peers;
}

std::optional<ModuleId> NodeFederation::where_is(const std::string &name)
{
	std::lock_guard<std::mutex> lk(where_mu_);
	auto it = where_.find(name);
	if (it == where_.end())
		return std::nullopt;
	return it->second;
}

void NodeFederation::remember_where(const std::string &name, ModuleId module)
{
	std::lock_guard<std::mutex> lk(where_mu_);
	if (where_.size() >= kWhereEntries)
		where_.clear(); // a hint: losing it costs one search
	where_[name] = module;
}

void NodeFederation::forget_where(const std::string &name)
{
	std::lock_guard<std::mutex> lk(where_mu_);
	where_.erase(name);
}

// A module whose route is withdrawn cannot be reached: its copies are lost
// now, as on a failed request, not at the first request that times out
// (reads go to the nearest copy and may never try it). A copy comes back
// when its module answers again (the keeper's probe).
void NodeFederation::lose_copies_on(ModuleId module, const std::string &why)
{
	std::vector<std::shared_ptr<ReplicaSet>> sets;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		for (auto &[group, set] : sets_)
			sets.push_back(set);
	}
	for (auto &set : sets)
		set->set_state(module, ReplicaSet::State::kLost, why);
}

bool NodeFederation::mesh_route_locked(ModuleId module, const std::string &endpoint, bool up,
				       uint32_t metric, uint32_t hops, const std::string &why)
{
	std::lock_guard<std::mutex> lk(peers_mu_);
	Peer *peer = nullptr;
	for (auto &p : peers_) {
		if (p->mesh && p->module == module)
			peer = p.get();
	}
	if (!peer) {
		if (!up)
			return false;
		auto p = std::make_unique<Peer>();
		p->endpoint = endpoint;
		p->module = module;
		p->mesh = true;
		peer = p.get();
		peers_.push_back(std::move(p));
	}
	bool was_up = peer->route_up;
	peer->route_up = up;
	peer->metric = metric;
	peer->hops = hops;
	if (up) {
		if (!was_up)
			LOG_INFO("federation", "module %s reachable again at %s (metric %u)",
				 module.to_string().c_str(), endpoint.c_str(), metric);
		peer->down_reason.clear();
		peer->down_since_unix_ms = 0;
	} else {
		peer->down_reason = why;
		peer->down_since_unix_ms = unix_ms();
		LOG_INFO("federation", "module %s unreachable: %s", module.to_string().c_str(),
			 why.c_str());
	}
	return was_up && !up;
}

NodeFederation::NodeFederation(ModuleStore *store, ModuleService *service, ModuleId self,
			       std::vector<std::string> peers,
			       std::shared_ptr<trust::TlsContext> tls)
	: store_(store), service_(service), self_(self), tls_(std::move(tls))
{
	for (auto &ep : peers) {
		auto p = std::make_unique<Peer>();
		p->endpoint = ep;
		peers_.push_back(std::move(p));
	}
}

NodeFederation::~NodeFederation() = default;

Status NodeFederation::Peer::failed(uint64_t started_ms, Status st)
{
	uint64_t now = mono_ms();
	if (st.code() != Code::kUnavailable || now - started_ms < uint64_t(kPeerTimeoutMs))
		return st; // refused or closed at once: nothing to wait out next time
	quiet_for_ms = std::clamp<uint64_t>(quiet_for_ms * 2, 2000, 30000);
	quiet_until_ms = now + quiet_for_ms;
	quiet_why = st.message();
	LOG_INFO("federation", "module %s at %s did not answer in time (%s); not asked again for %llu s",
		 module.to_string().c_str(), endpoint.c_str(), quiet_why.c_str(),
		 (unsigned long long)(quiet_for_ms / 1000));
	return st;
}

NodeFederation::Peer *NodeFederation::find_peer(ModuleId module)
{
	for (Peer *p : peer_list(false)) {
		if (!p->module.valid()) {
			// Not yet met: say hello to learn its module ID.
			(void)with_peer(*p, [](SyncClient &) -> Result<int> { return 0; });
		}
		if (p->module == module) {
			// A static peer refused as a second pool of this ID is not
			// it; a mesh peer is, and its requests say why they fail.
			std::lock_guard<std::mutex> lk(peers_mu_);
			if (p->mesh || p->conflict.empty())
				return p;
		}
	}
	return nullptr;
}

namespace
{
std::string describe_key(const std::string &key, const std::string &name)
{
	return name.empty() ? key : name + " (" + key + ")";
}
} // namespace

Status NodeFederation::admit_identity(Peer &p, const PeerInfo &info)
{
	const std::string id = info.module.to_string();
	const std::string key = info.authenticated ? trust::encode_key(info.key) : std::string();
	const std::string fix =
	        "give one of the two pools its own module ID: the ID lives in the pool, so "
	        "start that node on a new pool with another ID (memfedd --pool NEW_FILE "
	        "--module-id ID) and copy its regions over";
	std::string refused;
	std::lock_guard<std::mutex> lk(peers_mu_);
	if (p.mesh && !(info.module == p.module)) {
		refused = "the module at " + p.endpoint + " (the address of module " +
		          p.module.to_string() + ") answered HELLO as module " + id +
		          "; refused: a module listens on the address of its own ID";
	} else if (store_ && info.module == store_->module_id() && !key.empty()) {
		std::string own = tls_ ? trust::encode_key(tls_->own_key()) : std::string();
		refused = "module ID " + id + " is this node's own module's (key " + own +
		          "), but the module at " + p.endpoint + " (key " +
		          describe_key(key, info.key_name) +
		          ") answers as it too: two pools share one module ID; refused at HELLO, "
		          "never merged. To fix it, " +
		          fix;
	} else if (!key.empty()) {
		auto [it, fresh] = identities_.try_emplace(
		        info.module, Identity{key, info.key_name, p.endpoint, info.key});
		Identity &pinned = it->second;
		if (!fresh && pinned.key != key && tls_ && !tls_->peers().contains(pinned.raw)) {
			// The key met first is no longer trusted (`peer rm`): the
			// node was given a new key, and the new one is the module.
			LOG_INFO("federation",
			         "module %s now answers with key %s at %s; the key met before (%s) "
			         "is no longer trusted",
			         id.c_str(), describe_key(key, info.key_name).c_str(),
			         p.endpoint.c_str(), pinned.key.c_str());
			pinned = Identity{key, info.key_name, p.endpoint, info.key};
		}
		if (!fresh && pinned.key != key)
			refused = "module ID " + id + " is served by two pools: first by key " +
			          describe_key(pinned.key, pinned.key_name) + " at " +
			          pinned.endpoint + ", now by key " +
			          describe_key(key, info.key_name) + " at " + p.endpoint +
			          "; the second is refused at HELLO, never merged. To fix it, " +
			          fix;
	}
	if (refused.empty()) {
		p.conflict.clear();
		p.conflict_key.clear();
		p.conflict_endpoint.clear();
		return Status::ok();
	}
	// Logged once per module ID and refused key, however often it answers.
	auto &logged = conflicts_logged_[info.module];
	if (logged != key) {
		logged = key;
		LOG_ERROR("federation", "%s", refused.c_str());
	}
	p.conflict = refused;
	p.conflict_key = key;
	p.conflict_endpoint = p.endpoint;
	if (!p.mesh)
		p.module = info.module; // known, and skipped by find_peer while refused
	return Status(Code::kAlreadyExists, refused);
}

RegionLocation NodeFederation::location(ModuleId module, const wire::WireRegion &r)
{
	RegionLocation l;
	l.module = module;
	l.region_id = r.id;
	l.name = wire::region_name(r);
	l.fa_offset = r.fa_offset;
	l.size_bytes = r.size_bytes;
	l.owner_uid = r.owner_uid;
	l.mode = r.mode;
	l.ctime_ns = r.ctime_ns;
	l.length = r.length;
	l.replica_group = r.replica_group;
	l.replicas = r.replicas;
	l.access = r.access;
	return l;
}

uint32_t NodeFederation::preference_of(ModuleId module)
{
	if (store_ && module == store_->module_id())
		return 0;
	std::lock_guard<std::mutex> lk(peers_mu_);
	for (auto &p : peers_)
		if (p->module == module)
			return 1 + (p->mesh ? p->metric : 0);
	return UINT32_MAX;
}

Status NodeFederation::on_copy(const ReplicaLocation &copy,
			       const std::function<Status(ModuleStore &)> &local,
			       const std::function<Status(SyncClient &)> &remote)
{
	if (store_ && copy.module == store_->module_id())
		return local(*store_);
	Peer *p = find_peer(copy.module);
	if (!p)
		return Status(Code::kUnavailable,
			      "module " + copy.module.to_string() + " is unreachable");
	return with_peer(*p, [&](SyncClient &c) -> Result<int> {
		       Status st = remote(c);
		       if (!st)
			       return st;
		       return 0;
	       })
		.status();
}

Result<RegionLocation> NodeFederation::locate_region(const std::string &name)
{
	return locate(name, nullptr);
}

Result<RegionLocation> NodeFederation::locate_region(const std::string &name, const Asker &asker)
{
	return locate(name, &asker);
}

Result<RegionLocation> NodeFederation::locate(const std::string &name, const Asker *asker)
{
	// NAME@MODULE: that module only ('@' is never part of a region name).
	if (auto at = name.find('@'); at != std::string::npos) {
		std::string region = name.substr(0, at), id_text = name.substr(at + 1);
		auto id = ModuleId::parse(id_text);
		if (!id)
			return Status(Code::kInvalidArgument,
				      "'" + id_text + "' in '" + name +
					      "' is not a module ID like 02:00:00:00:00:01 (NAME@MODULE)");
		if (store_ && *id == store_->module_id()) {
			auto r = store_->lookup_region(region);
			if (!r)
				return r.status();
			auto w = to_wire(*r);
			if (asker && service_) {
				auto rights = service_->local_user_rights(region, asker->uid, asker->want);
				if (!rights)
					return rights.status();
				w.access = *rights;
			}
			return location(*id, w);
		}
		Peer *p = find_peer(*id);
		if (!p)
			return Status(Code::kUnavailable, "module " + id->to_string() +
								  " is not reachable from here (memfedctl "
								  "module ls)");
		auto r = with_peer(*p, [&](SyncClient &c) { return lookup(c, region, asker); });
		if (!r)
			return r.status();
		return location(*id, *r);
	}
	if (store_) {
		auto r = store_->lookup_region(name);
		if (r && !is_deleted(r->replica_group)) {
			auto w = to_wire(*r);
			if (asker && service_) {
				auto rights = service_->local_user_rights(name, asker->uid, asker->want);
				if (!rights)
					return rights.status();
				w.access = *rights;
			}
			return with_copies(location(store_->module_id(), w));
		}
		if (!r && r.status().code() != Code::kNotFound)
			return r.status();
	}
	auto peers = peers_nearest_first();
	if (auto hint = where_is(name)) {
		auto it = std::find_if(peers.begin(), peers.end(),
		                       [&](Peer *p) { return p->module == *hint; });
		if (it != peers.end()) {
			Peer *p = *it;
			auto r = with_peer(*p,
			                   [&](SyncClient &c) { return lookup(c, name, asker); });
			if (r && !is_deleted(r->replica_group))
				return with_copies(location(p->module, *r));
			if (r || r.status().code() == Code::kNotFound)
				forget_where(name); // gone from there: search
			else if (r.status().code() != Code::kUnavailable)
				return r.status(); // refused (access): that is the answer
		}
	}
	// Every reachable module at once, the nearest found first. A module
	// that does not answer may hold it (a module daemon restarting): then
	// the answer is "unavailable", which callers wait out, not "not found",
	// which ends them.
	auto answers = ask_peers(peers, [&](Peer &p) {
		return with_peer(p, [&](SyncClient &c) { return lookup(c, name, asker); });
	});
	std::string away;
	for (size_t i = 0; i < peers.size(); i++) {
		auto &r = *answers[i];
		if (r && is_deleted(r->replica_group))
			continue;
		if (r) {
			remember_where(name, peers[i]->module);
			return with_copies(location(peers[i]->module, *r));
		}
		if (r.status().code() == Code::kUnavailable)
			away += (away.empty() ? "" : ", ") + r.status().message();
		else if (r.status().code() != Code::kNotFound)
			return r.status();
	}
	if (!away.empty())
		return Status(Code::kUnavailable, "region '" + name +
							  "' is on no module that answers; not reachable: " +
							  away + " (memfedctl module ls)");
	return Status(Code::kNotFound, "region '" + name + "' not found on any module (memfedctl region ls)");
}

std::vector<ModuleEntry> NodeFederation::modules()
{
	std::vector<ModuleEntry> out;
	if (store_) {
		PoolInfo i = store_->info();
		out.push_back({store_->module_id(), "", true, true, i.capacity_bytes, i.free_bytes, 0});
	}
	// Every reachable module's STAT at once: a silent module costs its
	// timeout once, not once more for each module listed after it.
	auto peers = peer_list(true);
	auto stats = ask_peers(peers, [&](Peer &p) {
		bool down;
		{
			std::lock_guard<std::mutex> lk(peers_mu_);
			down = p.mesh && !p.route_up;
		}
		using StatResult = decltype(std::declval<SyncClient &>().stat());
		if (down)
			return StatResult(Status(Code::kUnavailable, "no route"));
		return with_peer(p, [](SyncClient &c) { return c.stat(); });
	});
	for (size_t i = 0; i < peers.size(); i++) {
		Peer *p = peers[i];
		ModuleEntry e;
		e.endpoint = p->endpoint;
		e.hops = 1;
		{
			std::lock_guard<std::mutex> lk(peers_mu_);
			e.mesh = p->mesh;
			if (p->mesh) {
				e.metric = p->metric;
				e.hops = p->hops;
				if (!p->route_up) {
					e.module = p->module;
					e.error = p->down_reason;
					e.down_since_unix_ms = p->down_since_unix_ms;
					out.push_back(e);
					continue;
				}
			}
		}
		auto &st = *stats[i];
		e.module = p->module;
		{
			std::lock_guard<std::mutex> lk(p->mu);
			e.key = p->key;
			e.key_name = p->key_name;
		}
		{
			std::lock_guard<std::mutex> lk(peers_mu_);
			if (!p->conflict.empty()) {
				// Shown as a conflict: the key met first and the refused one.
				e.module = p->module;
				e.conflict_key = p->conflict_key;
				e.conflict_endpoint = p->conflict_endpoint;
				if (auto it = identities_.find(p->module);
				    it != identities_.end()) {
					e.key = it->second.key;
					e.key_name = it->second.key_name;
					e.pinned_endpoint = it->second.endpoint;
				} else if (store_ && p->module == store_->module_id() && tls_) {
					e.key = trust::encode_key(tls_->own_key()); // ours
					e.key_name.clear();
					e.pinned_endpoint = "(local)";
				}
				e.error = p->conflict;
				out.push_back(e);
				continue;
			}
		}
		if (st) {
			e.reachable = true;
			e.capacity_bytes = st->capacity_bytes;
			e.free_bytes = st->free_bytes;
		} else {
			e.error = st.status().message();
		}
		out.push_back(e);
	}
	return out;
}

Result<std::unique_ptr<Channel>> NodeFederation::open_channel(EventLoop *loop, ModuleId module)
{
	if (is_replica_set(module))
		return open_replicated_channel(loop, module);
	if (store_ && module == store_->module_id())
		return std::unique_ptr<Channel>(std::make_unique<LocalChannel>(loop, store_, service_));
	Peer *p = find_peer(module);
	if (!p)
		return Status(Code::kNotFound, "module " + module.to_string() +
						       " is not among this node's peers (memfedctl module ls)");
	// One connection per traffic class, each marked with its DSCP
	// (class_channel.h): faults never queue behind bulk work on any hop.
	std::unique_ptr<Channel> conns[2];
	for (int i = 0; i < 2; i++) {
		TcpChannel::Options opts;
		opts.tls = tls_;
		opts.request_timeout_ms = request_timeout_ms_;
		opts.conn_class = i == ClassChannel::kFaultConn ? wire::TrafficClass::kFault
								: wire::TrafficClass::kBulk;
		// Every write goes on the bulk connection: sequenced in a session
		// that outlives the connection (request_session.h), so a write is
		// never applied twice, nor a late one after a newer write.
		if (i == ClassChannel::kBulkConn)
			opts.session = RequestSessions::process().acquire(module);
		std::shared_ptr<RequestSession> session = opts.session;
		auto ch = TcpChannel::connect(loop, p->endpoint, self_, opts);
		if (!ch) {
			if (session)
				session->release();
			return ch.status();
		}
		// The pager's own connections meet whoever answers at the endpoint
		// now (the route may have moved): the same check as the control
		// path's.
		if (Status id = admit_identity(*p, (*ch)->peer()); !id)
			return id;
		if (wrap_channel_)
			conns[i] = wrap_channel_(loop, std::move(*ch));
		else
			conns[i] = std::move(*ch);
	}
	return std::unique_ptr<Channel>(std::make_unique<ClassChannel>(
		std::move(conns[ClassChannel::kFaultConn]), std::move(conns[ClassChannel::kBulkConn])));
}

ModuleSize NodeFederation::local_size() const
{
	if (!store_)
		return {};
	PoolInfo i = store_->info();
	return {i.capacity_bytes, i.table_slots};
}

std::map<uint32_t, OwnerUsage> NodeFederation::local_usage() const
{
	return store_ ? store_->usage_by_owner() : std::map<uint32_t, OwnerUsage>{};
}

Result<RegionLocation> NodeFederation::create_region(const std::string &name, uint64_t size,
						      uint32_t uid, uint32_t mode,
						      std::optional<ModuleId> module,
						      const ModuleStore::AdmitFn &admit,
						      const Placement &placement)
{
	if (placement.replicas > 1 || !placement.on.empty()) {
		if (auto held = locate_region(name))
			return Status(Code::kAlreadyExists,
				      "region '" + name + "' already exists on module " +
					      held->module.to_string() +
					      " (memfedctl region ls; names are unique across the "
					      "federation)");
		return create_replicated(name, size, uid, mode, admit, placement);
	}
	if (auto held = locate_region(name))
		return Status(Code::kAlreadyExists, "region '" + name + "' already exists on module " +
							    held->module.to_string() +
							    " (memfedctl region ls; names are unique across the "
							    "federation)");
	if (store_ && (!module || *module == store_->module_id())) {
		auto r = store_->create_region(name, size, uid, mode, admit);
		if (!r)
			return r.status();
		return location(store_->module_id(), to_wire(*r));
	}
	auto spec = wire::make_region_spec(name, size, uid, mode);
	if (!spec)
		return spec.status();
	Status last(Code::kUnavailable, "no module is reachable to hold region '" + name +
						"' (memfedctl module ls)");
	for (Peer *p : peers_nearest_first()) {
		if (module && p->module.valid() && !(p->module == *module))
			continue;
		auto r = with_peer(*p, [&](SyncClient &c) { return c.region_create(*spec); });
		if (r) {
			remember_where(name, p->module);
			return location(p->module, *r);
		}
		last = r.status();
		// A module full, or full for this node (its node quota): the next.
		if (module || (last.code() != Code::kNoSpace && last.code() != Code::kQuota))
			break;
	}
	return last;
}

Result<RegionLocation> NodeFederation::clone_region(const RegionLocation &base, uint64_t offset,
						     const std::string &name, uint64_t size,
						     uint32_t uid, uint32_t mode,
						     const ModuleStore::AdmitFn &admit)
{
	if (!store_ || !(base.module == store_->module_id()))
		return Status(Code::kInvalidArgument,
			      "region '" + base.name + "' is on module " + base.module.to_string() +
				      ", and this node makes clones only on its own module; copy it "
				      "instead (region.copy)");
	if (auto held = locate_region(name))
		return Status(Code::kAlreadyExists, "region '" + name + "' already exists on module " +
							    held->module.to_string() +
							    " (memfedctl region ls; names are unique across the "
							    "federation)");
	auto r = store_->clone_region(name, base.name, offset, size, uid, mode, admit);
	if (!r)
		return r.status();
	return location(store_->module_id(), to_wire(*r));
}

Status NodeFederation::delete_region(const RegionLocation &loc)
{
	forget_where(loc.name);
	if (is_replica_set(loc.module))
		return delete_replicated(loc);
	if (store_ && loc.module == store_->module_id())
		return store_->delete_region(loc.name);
	Peer *p = find_peer(loc.module);
	if (!p)
		return Status(Code::kUnavailable, "module " + loc.module.to_string() + " is unreachable");
	auto r = with_peer(*p, [&](SyncClient &c) -> Result<int> {
		Status st = c.region_delete(loc.name);
		if (!st)
			return st;
		return 0;
	});
	return r.status();
}

Result<RegionLocation> NodeFederation::set_length(const RegionLocation &loc, uint64_t length,
						  bool grow_only)
{
	if (is_replica_set(loc.module))
		return set_length_replicated(loc, length, grow_only);
	if (store_ && loc.module == store_->module_id()) {
		auto r = store_->set_length(loc.name, length, grow_only);
		if (!r)
			return r.status();
		return location(loc.module, to_wire(*r));
	}
	Peer *p = find_peer(loc.module);
	if (!p)
		return Status(Code::kUnavailable, "module " + loc.module.to_string() + " is unreachable");
	auto r = with_peer(*p, [&](SyncClient &c) {
		return c.region_set_length(loc.name, length, grow_only);
	});
	if (!r)
		return r.status();
	return location(loc.module, *r);
}

std::vector<RegionLocation> NodeFederation::list_regions()
{
	// Page by page, as region.list does: no number of regions on a module
	// outgrows one wire response (REGION_LIST with a WireListRequest).
	std::vector<RegionLocation> out;
	std::string after;
	bool more = true;
	while (more) {
		auto page = list_regions_page(after, wire::kRegionListPage, &more);
		if (page.empty())
			break;
		after = page.back().name;
		out.insert(out.end(), std::make_move_iterator(page.begin()),
			   std::make_move_iterator(page.end()));
	}
	return out;
}

std::vector<RegionLocation> NodeFederation::list_regions_page(const std::string &after,
							     size_t limit, bool *more,
							     std::optional<uint32_t> asker_uid)
{
	// Each module's first `limit` after the cursor, merged: the first
	// `limit` of the merge are the page. Below one wire page, so no peer's
	// answer is cut short of what the merge needs.
	limit = std::clamp<size_t>(limit, 1, wire::kRegionListPage - 1);
	std::vector<RegionLocation> out;
	*more = false;
	if (store_)
		for (const auto &r : store_->list_regions(after, limit + 1)) {
			auto w = to_wire(r);
			if (asker_uid && service_)
				w.access = wire::kAccessAnswered |
					   service_->rights_for(service_->node_key(), *asker_uid, r);
			out.push_back(location(store_->module_id(), w));
		}
	uint32_t want = uint32_t(std::min<size_t>(limit + 1, wire::kRegionListPage));
	auto peers = peer_list(false);
	auto lists = ask_peers(peers, [&](Peer &p) {
		bool peer_more = false; // each page is cut at `want`; merged below
		return with_peer(p, [&](SyncClient &c) {
			return c.region_list_page(after, want, &peer_more, asker_uid);
		});
	});
	for (size_t i = 0; i < peers.size(); i++) {
		auto &list = *lists[i];
		if (!list) {
			LOG_WARN("federation", "listing regions of peer %s: %s",
			         peers[i]->endpoint.c_str(), list.status().to_string().c_str());
			continue;
		}
		for (const auto &r : *list)
			out.push_back(location(peers[i]->module, r));
	}
	std::sort(out.begin(), out.end(),
		  [](const RegionLocation &a, const RegionLocation &b) { return a.name < b.name; });
	out = merge_copies(std::move(out));
	if (out.size() > limit) {
		out.resize(limit);
		*more = true;
	}
	return out;
}

Status NodeFederation::read_pages(const RegionLocation &loc, uint64_t first_page, uint32_t count,
				  void *dst)
{
	if (is_replica_set(loc.module))
		return read_replicated(loc, first_page, count, dst);
	uint64_t fa = loc.fa_offset + first_page * wire::kPageSize;
	if (store_ && loc.module == store_->module_id())
		return store_->read_pages(loc.region_id, fa, count, dst);
	Peer *p = find_peer(loc.module);
	if (!p)
		return Status(Code::kUnavailable, "module " + loc.module.to_string() + " is unreachable");
	return with_peer(*p, [&](SyncClient &c) -> Result<int> {
		       Status st = c.read_pages(loc.region_id, fa, count, dst, wire::TrafficClass::kControl);
		       if (!st)
			       return st;
		       return 0;
	       })
		.status();
}

Status NodeFederation::write_pages(const RegionLocation &loc, uint64_t first_page, uint32_t count,
				   const void *src)
{
	if (loc.replica_group != 0 && !is_replica_set(loc.module))
		return Status(Code::kInvalidArgument,
			      "region '" + loc.name + "' has " + std::to_string(loc.replicas) +
				      " copies: write it by its name, not one copy at NAME@MODULE");
	if (is_replica_set(loc.module))
		return write_replicated(loc, first_page, count, src);
	uint64_t fa = loc.fa_offset + first_page * wire::kPageSize;
	if (store_ && loc.module == store_->module_id())
		return store_->write_pages(loc.region_id, fa, count, src);
	Peer *p = find_peer(loc.module);
	if (!p)
		return Status(Code::kUnavailable, "module " + loc.module.to_string() + " is unreachable");
	return with_peer(*p, [&](SyncClient &c) -> Result<int> {
		       Status st = c.write_pages(loc.region_id, fa, count, src, wire::TrafficClass::kControl);
		       if (!st)
			       return st;
		       return 0;
	       })
		.status();
}

Result<std::pair<RegionLocation, NodeKeyBytes>>
NodeFederation::local_region_owner(const std::string &name)
{
	if (!store_ || !service_)
		return Status(Code::kNotFound, "no module on this node");
	auto r = store_->lookup_region(name);
	if (!r)
		return r.status();
	auto a = store_->region_access(name);
	if (!a)
		return a.status();
	if (r->replica_group != 0 || is_zero_key(a->owner_key) ||
	    a->owner_key == service_->node_key())
		return Status(Code::kNotFound, "region '" + name + "' is not another node's here");
	return std::make_pair(location(store_->module_id(), to_wire(*r)), a->owner_key);
}

Result<wire::WireRegion> NodeFederation::lookup(SyncClient &c, const std::string &name,
						 const Asker *asker)
{
	if (!asker)
		return c.region_lookup(name);
	wire::Header h{};
	h.type = uint8_t(wire::MsgType::kRegionLookup);
	h.tclass = uint8_t(wire::TrafficClass::kControl);
	auto resp = c.call(h, wire::encode_asked_lookup(name, asker->uid, asker->want));
	if (!resp)
		return resp.status();
	return wire::decode_region(resp->payload);
}

Result<wire::WireAccessList> NodeFederation::region_access(const RegionLocation &loc,
							   uint32_t asker_uid, wire::AccessOp op,
							   const AccessGrant &g)
{
	wire::WireAccessRequest req{};
	req.name_len = uint8_t(std::min(loc.name.size(), wire::kMaxRegionName));
	std::memcpy(req.name, loc.name.data(), req.name_len);
	req.op = uint8_t(op);
	if (op == wire::AccessOp::kGrant)
		req.rights = uint8_t(((g.rights & kRightRead) ? wire::kAccessRead : 0) |
				     ((g.rights & kRightWrite) ? wire::kAccessWrite : 0));
	req.asker_uid = asker_uid;
	std::memcpy(req.key, g.key.data(), sizeof(req.key));
	req.uid = g.uid;
	std::vector<ModuleId> modules;
	if (loc.replica_group != 0)
		for (const ReplicaLocation &c : loc.copies)
			modules.push_back(c.module);
	if (modules.empty())
		modules.push_back(loc.module);
	std::optional<Result<wire::WireAccessList>> first;
	for (ModuleId m : modules) {
		Result<wire::WireAccessList> r = Status(Code::kInternal, "not asked");
		if (store_ && m == store_->module_id() && service_) {
			r = service_->local_access(req);
		} else if (Peer *p = find_peer(m)) {
			uint8_t payload[wire::kAccessRequestSize];
			wire::encode_access_request(req, payload);
			r = with_peer(*p, [&](SyncClient &c) -> Result<wire::WireAccessList> {
				wire::Header h{};
				h.type = uint8_t(wire::MsgType::kRegionAccess);
				h.tclass = uint8_t(wire::TrafficClass::kControl);
				auto resp = c.call(h, payload);
				if (!resp)
					return resp.status();
				return wire::decode_access_list(resp->payload);
			});
		} else {
			r = Status(Code::kUnavailable,
				   "module " + m.to_string() + " is not reachable from here (memfedctl "
							   "module ls)");
		}
		if (!r)
			return Status(r.status().code(),
				      modules.size() > 1 ? "the copy of region '" + loc.name + "' on module " +
								   m.to_string() + ": " + r.status().message()
							 : r.status().message());
		if (!first)
			first = std::move(r);
		if (op == wire::AccessOp::kShow)
			break;
	}
	return std::move(*first);
}

} // namespace memfed
