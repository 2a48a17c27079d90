#include "daemon/service/node_federation.h"

#include <algorithm>
#include <chrono>

#include "daemon/common/log.h"
#include "daemon/service/local_channel.h"
#include "daemon/service/replicated_channel.h"
#include "daemon/transport/tcp_channel.h"
#include "daemon/wire/codec.h"

namespace memfed {

struct NodeFederation::Peer {
	std::string endpoint;
	std::mutex mu;
	std::unique_ptr<SyncClient> client; // null while unreachable
	ModuleId module;		    // learned at HELLO (mesh peers: known from the route)
	uint64_t capacity = 0;
	std::string key;      // its authenticated public key (base64), once connected
	std::string key_name; // that key's name among the trusted peers
	// Mesh peers only, guarded by peers_mu_: the route that makes it known.
	bool mesh = false;
	bool route_up = true;
	uint32_t metric = 0;
	uint32_t hops = 0;
	std::string down_reason;
	uint64_t down_since_unix_ms = 0;
	// Guarded by peers_mu_: set while its last HELLO was refused
	// (admit_identity), with the refused key and where it answered.
	std::string conflict;
	std::string conflict_key;
	std::string conflict_endpoint;
};

namespace {
constexpr int kPeerTimeoutMs = 3000;

uint64_t unix_ms()
{
	return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
				std::chrono::system_clock::now().time_since_epoch())
				.count());
}
} // namespace

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
	std::lock_guard<std::mutex> lk(peers_mu_);
	Peer *peer = nullptr;
	for (auto &p : peers_) {
		if (p->mesh && p->module == module)
			peer = p.get();
	}
	if (!peer) {
		if (!up)
			return;
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

template <typename Fn>
auto NodeFederation::with_peer(Peer &p, Fn fn) -> decltype(fn(*(SyncClient *)nullptr))
{
	std::lock_guard<std::mutex> lk(p.mu);
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!p.client) {
			auto c = SyncClient::connect(p.endpoint, self_, kPeerTimeoutMs, tls_);
			if (!c)
				return c.status();
			Status st = (*c)->hello();
			if (st.code() == Code::kAlreadyExists) {
				// The module refused us as a second pool of its ID
				// (ours): shown as a conflict, its message says why.
				std::lock_guard<std::mutex> lk(peers_mu_);
				p.conflict = st.message();
				p.conflict_endpoint = p.endpoint;
				if ((*c)->peer().authenticated)
					p.conflict_key = trust::encode_key((*c)->peer().key);
				if (store_ && !p.mesh)
					p.module = store_->module_id();
			}
			if (!st)
				return st;
			const PeerInfo &info = (*c)->peer();
			if (Status id = admit_identity(p, info); !id)
				return id;
			p.module = info.module;
			p.capacity = info.capacity_bytes;
			p.key = info.authenticated ? trust::encode_key(info.key) : std::string();
			p.key_name = info.key_name;
			p.client = std::move(*c);
			LOG_INFO("federation", "peer %s is module %s%s%s", p.endpoint.c_str(),
				 p.module.to_string().c_str(),
				 p.key.empty() ? " (not authenticated)" : ", key ",
				 p.key.empty() ? ""
					       : trust::TrustedPeers::describe(info.key, p.key_name).c_str());
		}
		auto r = fn(*p.client);
		// kCorrupt: a TLS record failed its tag (altered in transit) or a
		// page its checksum; either way a fresh connection may answer.
		Code c = r.status().code();
		if (r.is_ok() || (c != Code::kUnavailable && c != Code::kProtocol && c != Code::kIo &&
				  c != Code::kCorrupt))
			return r;
		// The connection broke (peer restarted? bytes altered?): reconnect once.
		log_line(c == Code::kCorrupt ? LogLevel::kWarn : LogLevel::kInfo, "federation",
			 "connection to module %s at %s broke: %s; reconnecting",
			 p.module.to_string().c_str(), p.endpoint.c_str(),
			 r.status().message().c_str());
		p.client.reset();
		if (attempt == 1)
			return r;
	}
	return Status(Code::kInternal, "unreachable");
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

RegionLocation NodeFederation::with_copies(RegionLocation first)
{
	if (first.replica_group == 0 || first.replicas <= 1 || is_replica_set(first.module))
		return first;
	std::vector<ReplicaLocation> found{
		{first.module, first.region_id, first.fa_offset, preference_of(first.module)}};
	auto consider = [&](ModuleId m, const wire::WireRegion &r) {
		if (r.replica_group == first.replica_group && r.size_bytes == first.size_bytes)
			found.push_back({m, r.id, r.fa_offset, preference_of(m)});
	};
	if (store_ && !(first.module == store_->module_id()))
		if (auto r = store_->lookup_region(first.name))
			consider(store_->module_id(), to_wire(*r));
	for (Peer *p : peer_list(false)) {
		if (p->module == first.module)
			continue;
		auto r = with_peer(*p, [&](SyncClient &c) { return c.region_lookup(first.name); });
		if (r)
			consider(p->module, *r);
	}
	auto set = set_for(first, found);
	RegionLocation v = std::move(first);
	v.module = set->module();
	v.region_id = replica_set_region_id(v.replica_group);
	v.fa_offset = 0;
	v.copies = std::move(found);
	return v;
}

std::shared_ptr<ReplicaSet> NodeFederation::set_for(const RegionLocation &r,
						    const std::vector<ReplicaLocation> &copies)
{
	std::shared_ptr<ReplicaSet> set;
	bool made = false;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		auto &slot = sets_[r.replica_group];
		if (!slot || slot->size_bytes() != r.size_bytes || slot->name() != r.name) {
			slot = std::make_shared<ReplicaSet>(r.replica_group, r.name, r.size_bytes,
							    r.replicas);
			made = true;
		}
		set = slot;
		if (!keeper_)
			keeper_ = std::make_unique<ReplicaKeeper>(this, [this] { sweep_deleted(); });
		if (made)
			keeper_->watch(set);
	}
	set->merge(copies);
	return set;
}

bool NodeFederation::is_deleted(uint64_t group)
{
	std::lock_guard<std::mutex> lk(sets_mu_);
	return group != 0 && deleted_.count(group) != 0;
}

void NodeFederation::sweep_deleted()
{
	std::map<uint64_t, Deleted> todo;
	{
		std::lock_guard<std::mutex> lk(sets_mu_);
		todo = deleted_;
	}
	for (auto &entry : todo) {
		// Plain copies: clang 14 cannot capture structured bindings in lambdas.
		const uint64_t group = entry.first;
		const Deleted &d = entry.second;
		std::vector<ReplicaLocation> left;
		for (const auto &copy : d.copies) {
			// Only the copy of that group: the name may since be another region's.
			Status st = on_copy(
				copy,
				[&](ModuleStore &s) -> Status {
					auto r = s.lookup_region(d.name);
					if (!r)
						return r.status();
					return r->replica_group == group ? s.delete_region(d.name)
									 : Status(Code::kNotFound, "");
				},
				[&](SyncClient &c) -> Status {
					auto r = c.region_lookup(d.name);
					if (!r)
						return r.status();
					return r->replica_group == group ? c.region_delete(d.name)
									 : Status(Code::kNotFound, "");
				});
			if (st || st.code() == Code::kNotFound) {
				if (st)
					LOG_INFO("federation",
						 "region '%s': the copy left on module %s is deleted now",
						 d.name.c_str(), copy.module.to_string().c_str());
				continue;
			}
			left.push_back(copy);
		}
		std::lock_guard<std::mutex> lk(sets_mu_);
		if (left.empty())
			deleted_.erase(group);
		else
			deleted_[group].copies = std::move(left);
	}
}

std::shared_ptr<ReplicaSet> NodeFederation::replica_set(uint64_t group)
{
	std::lock_guard<std::mutex> lk(sets_mu_);
	auto it = sets_.find(group);
	return it == sets_.end() ? nullptr : it->second;
}

unsigned NodeFederation::degraded_regions()
{
	std::lock_guard<std::mutex> lk(sets_mu_);
	unsigned n = 0;
	for (auto &[g, set] : sets_)
		n += set->degraded();
	return n;
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
			return location(*id, to_wire(*r));
		}
		Peer *p = find_peer(*id);
		if (!p)
			return Status(Code::kUnavailable, "module " + id->to_string() +
								  " is not reachable from here (memfedctl "
								  "module ls)");
		auto r = with_peer(*p, [&](SyncClient &c) { return c.region_lookup(region); });
		if (!r)
			return r.status();
		return location(*id, *r);
	}
	if (store_) {
		auto r = store_->lookup_region(name);
		if (r && !is_deleted(r->replica_group))
			return with_copies(location(store_->module_id(), to_wire(*r)));
		if (!r && r.status().code() != Code::kNotFound)
			return r.status();
	}
	// A module that does not answer may hold it (a module daemon
	// restarting): then the answer is "unavailable", which callers wait out,
	// not "not found", which ends them.
	std::string away;
	for (Peer *p : peer_list(false)) {
		auto r = with_peer(*p, [&](SyncClient &c) { return c.region_lookup(name); });
		if (r && is_deleted(r->replica_group))
			continue;
		if (r)
			return with_copies(location(p->module, *r));
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
	for (Peer *p : peer_list(true)) {
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
		auto st = with_peer(*p, [](SyncClient &c) { return c.stat(); });
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
	if (is_replica_set(module)) {
		std::shared_ptr<ReplicaSet> set;
		{
			std::lock_guard<std::mutex> lk(sets_mu_);
			for (auto &[g, s] : sets_)
				if (s->module() == module)
					set = s;
		}
		if (!set)
			return Status(Code::kNotFound, "no replicated region of replica set " +
							       module.to_string() +
							       " was looked up on this node");
		return std::unique_ptr<Channel>(std::make_unique<ReplicatedChannel>(loop, set, this));
	}
	if (store_ && module == store_->module_id())
		return std::unique_ptr<Channel>(std::make_unique<LocalChannel>(loop, store_, service_));
	Peer *p = find_peer(module);
	if (!p)
		return Status(Code::kNotFound, "module " + module.to_string() +
						       " is not among this node's peers (memfedctl module ls)");
	TcpChannel::Options opts;
	opts.tls = tls_;
	auto ch = TcpChannel::connect(loop, p->endpoint, self_, opts);
	if (!ch)
		return ch.status();
	// The pager's own connection meets whoever answers at the endpoint now
	// (the route may have moved): the same check as the control path's.
	if (Status id = admit_identity(*p, (*ch)->peer()); !id)
		return id;
	if (wrap_channel_)
		return wrap_channel_(loop, std::move(*ch));
	return std::unique_ptr<Channel>(std::move(*ch));
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
	// Nearest first: mesh peers by their route's metric; static peers,
	// direct neighbours, before them in the order configured.
	auto candidates = peer_list(false);
	{
		std::lock_guard<std::mutex> lk(peers_mu_);
		std::stable_sort(candidates.begin(), candidates.end(), [](Peer *a, Peer *b) {
			return (a->mesh ? a->metric : 0) < (b->mesh ? b->metric : 0);
		});
	}
	for (Peer *p : candidates) {
		if (module && p->module.valid() && !(p->module == *module))
			continue;
		auto r = with_peer(*p, [&](SyncClient &c) { return c.region_create(*spec); });
		if (r)
			return location(p->module, *r);
		last = r.status();
		if (module || last.code() != Code::kNoSpace)
			break;
	}
	return last;
}

Result<RegionLocation> NodeFederation::create_replicated(const std::string &name, uint64_t size,
							 uint32_t uid, uint32_t mode,
							 const ModuleStore::AdmitFn &admit,
							 const Placement &placement)
{
	unsigned want = std::clamp(placement.replicas, 1u, kMaxReplicas);
	unsigned need = placement.replicas_min ? std::min(placement.replicas_min, want) : want;
	uint64_t group = new_replica_group();
	auto spec = wire::make_region_spec(name, size, uid, mode);
	if (!spec)
		return spec.status();
	spec->replica_group = group;
	spec->replicas = uint8_t(want);
	// Candidates, nearest first: this node's module, then reachable peers by
	// their route's metric (static peers before mesh ones at equal cost).
	struct Candidate {
		ModuleId module;
		Peer *peer = nullptr; // null: the local module
		uint32_t preference = 0;
	};
	std::vector<Candidate> candidates;
	if (store_)
		candidates.push_back({store_->module_id(), nullptr, 0});
	for (Peer *p : peer_list(false)) {
		if (!p->module.valid())
			(void)with_peer(*p, [](SyncClient &) -> Result<int> { return 0; });
		if (p->module.valid())
			candidates.push_back({p->module, p, preference_of(p->module)});
	}
	if (!placement.on.empty()) {
		std::vector<Candidate> chosen;
		for (ModuleId m : placement.on) {
			auto it = std::find_if(candidates.begin(), candidates.end(),
					       [&](const Candidate &c) { return c.module == m; });
			if (it == candidates.end())
				return Status(Code::kUnavailable,
					      "module " + m.to_string() +
						      " (--on) is not reachable from here (memfedctl "
						      "module ls)");
			chosen.push_back(*it);
		}
		candidates = std::move(chosen);
	} else {
		std::stable_sort(candidates.begin(), candidates.end(),
				 [](const Candidate &a, const Candidate &b) {
					 return a.preference < b.preference;
				 });
	}
	// One copy per node: a node is its key (modules served by one node
	// share it); a peer whose key is unknown counts as its own node.
	std::vector<std::string> node_keys;
	std::vector<ReplicaLocation> made;
	std::string refusals;
	unsigned eligible = 0;
	for (const Candidate &c : candidates) {
		if (made.size() >= want)
			break;
		std::string key;
		if (c.peer) {
			std::lock_guard<std::mutex> lk(c.peer->mu);
			key = c.peer->key;
		} else {
			key = "(this node)";
		}
		if (!key.empty() &&
		    std::find(node_keys.begin(), node_keys.end(), key) != node_keys.end())
			continue;
		eligible++;
		Result<wire::WireRegion> r = Status(Code::kInternal, "");
		if (!c.peer) {
			auto info = store_->create_region(name, size, uid, mode, admit,
							  ReplicaSpec{group, uint8_t(want)});
			r = info ? Result<wire::WireRegion>(to_wire(*info))
				 : Result<wire::WireRegion>(info.status());
		} else {
			r = with_peer(*c.peer, [&](SyncClient &cl) { return cl.region_create(*spec); });
		}
		if (!r) {
			refusals += "; module " + c.module.to_string() + ": " + r.status().message();
			continue;
		}
		node_keys.push_back(key);
		made.push_back({c.module, r->id, r->fa_offset, c.preference});
	}
	if (made.size() < need) {
		for (const auto &copy : made)
			(void)on_copy(
				copy, [&](ModuleStore &st) { return st.delete_region(name); },
				[&](SyncClient &cl) { return cl.region_delete(name); });
		return Status(Code::kNoSpace,
			      "region '" + name + "' needs " + std::to_string(need) +
				      " copies on distinct nodes, but only " + std::to_string(eligible) +
				      " module(s) were eligible and " + std::to_string(made.size()) +
				      " took one" + refusals +
				      " (memfedctl module ls; --replicas-min allows fewer)");
	}
	if (made.size() < want)
		LOG_WARN("federation",
			 "region '%s' has %zu of %u copies: degraded from the start (--replicas-min %u)",
			 name.c_str(), made.size(), want, need);
	RegionLocation first;
	first.module = made[0].module;
	first.region_id = made[0].region_id;
	first.fa_offset = made[0].fa_offset;
	first.name = name;
	first.size_bytes = (size + wire::kPageSize - 1) / wire::kPageSize * wire::kPageSize;
	first.owner_uid = uid;
	first.mode = mode;
	first.replica_group = group;
	first.replicas = uint8_t(want);
	// Newly made, every copy is all zeros at version 0: in sync.
	auto loc = with_copies(first);
	if (auto set = replica_set(group))
		for (const auto &copy : made)
			set->set_state(copy.module, ReplicaSet::State::kInSync, "");
	LOG_INFO("federation", "region '%s' created with %zu copies", name.c_str(), made.size());
	return loc;
}

Status NodeFederation::delete_region(const RegionLocation &loc)
{
	if (is_replica_set(loc.module)) {
		std::vector<ReplicaLocation> copies = loc.copies;
		if (auto set = replica_set(loc.replica_group))
			for (const auto &r : set->snapshot())
				if (std::none_of(copies.begin(), copies.end(), [&](const ReplicaLocation &c) {
					    return c.module == r.loc.module;
				    }))
					copies.push_back(r.loc);
		Status first_error = Status::ok();
		unsigned deleted = 0;
		std::vector<ReplicaLocation> unreached;
		for (const auto &copy : copies) {
			Status st = on_copy(
				copy, [&](ModuleStore &s) { return s.delete_region(loc.name); },
				[&](SyncClient &c) { return c.region_delete(loc.name); });
			if (st || st.code() == Code::kNotFound) {
				deleted++;
				continue;
			}
			LOG_WARN("federation",
				 "region '%s': the copy on module %s is not deleted yet (%s); it will "
				 "be when the module is back",
				 loc.name.c_str(), copy.module.to_string().c_str(),
				 st.message().c_str());
			unreached.push_back(copy);
			if (first_error.is_ok())
				first_error = st;
		}
		if (deleted == 0 && !first_error.is_ok())
			return first_error;
		std::lock_guard<std::mutex> lk(sets_mu_);
		sets_.erase(loc.replica_group);
		if (!unreached.empty()) {
			deleted_[loc.replica_group] = {loc.name, unreached};
			if (!keeper_)
				keeper_ = std::make_unique<ReplicaKeeper>(this, [this] { sweep_deleted(); });
		}
		if (keeper_)
			keeper_->forget(loc.replica_group);
		return Status::ok();
	}
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
	if (is_replica_set(loc.module)) {
		auto set = replica_set(loc.replica_group);
		if (!set)
			return Status(Code::kNotFound, "region '" + loc.name + "' was not looked up");
		RegionLocation out = loc;
		Status last(Code::kUnavailable, "no copy of region '" + loc.name + "' is reachable");
		bool any = false;
		for (const auto &r : set->snapshot()) {
			if (r.state == ReplicaSet::State::kLost)
				continue;
			uint64_t got = 0;
			Status st = on_copy(
				r.loc,
				[&](ModuleStore &s) -> Status {
					auto x = s.set_length(loc.name, length, grow_only);
					if (x)
						got = x->length;
					return x.status();
				},
				[&](SyncClient &c) -> Status {
					auto x = c.region_set_length(loc.name, length, grow_only);
					if (x)
						got = x->length;
					return x.status();
				});
			if (!st) {
				set->set_state(r.loc.module, ReplicaSet::State::kLost, st.message());
				last = st;
				continue;
			}
			out.length = std::max(out.length, got);
			if (!any)
				out.length = got;
			any = true;
		}
		if (!any)
			return last;
		return out;
	}
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
							     size_t limit, bool *more)
{
	// Each module's first `limit` after the cursor, merged: the first
	// `limit` of the merge are the page. Below one wire page, so no peer's
	// answer is cut short of what the merge needs.
	limit = std::clamp<size_t>(limit, 1, wire::kRegionListPage - 1);
	std::vector<RegionLocation> out;
	*more = false;
	if (store_)
		for (const auto &r : store_->list_regions(after, limit + 1))
			out.push_back(location(store_->module_id(), to_wire(r)));
	uint32_t want = uint32_t(std::min<size_t>(limit + 1, wire::kRegionListPage));
	for (Peer *p : peer_list(false)) {
		bool peer_more = false;
		auto list = with_peer(*p, [&](SyncClient &c) {
			return c.region_list_page(after, want, &peer_more);
		});
		if (!list) {
			LOG_WARN("federation", "listing regions of peer %s: %s", p->endpoint.c_str(),
				 list.status().to_string().c_str());
			continue;
		}
		for (const auto &r : *list)
			out.push_back(location(p->module, r));
	}
	std::sort(out.begin(), out.end(),
		  [](const RegionLocation &a, const RegionLocation &b) { return a.name < b.name; });
	// A replicated region is one entry, reached through its set, whatever
	// number of its copies answered.
	std::vector<RegionLocation> merged;
	for (auto &r : out) {
		if (is_deleted(r.replica_group))
			continue;
		if (r.replica_group != 0 && r.replicas > 1 && !merged.empty() &&
		    merged.back().name == r.name && merged.back().replica_group == r.replica_group) {
			merged.back().copies.push_back(
				{r.module, r.region_id, r.fa_offset, preference_of(r.module)});
			continue;
		}
		if (r.replica_group != 0 && r.replicas > 1)
			r.copies.push_back({r.module, r.region_id, r.fa_offset, preference_of(r.module)});
		merged.push_back(std::move(r));
	}
	for (auto &r : merged) {
		if (r.copies.empty())
			continue;
		auto set = set_for(r, r.copies);
		r.module = set->module();
		r.region_id = replica_set_region_id(r.replica_group);
		r.fa_offset = 0;
	}
	out = std::move(merged);
	if (out.size() > limit) {
		out.resize(limit);
		*more = true;
	}
	return out;
}

void NodeFederation::repair_copy(ReplicaSet &set, const ReplicaLocation &good,
				 const ReplicaLocation &bad, uint64_t first_page, uint32_t count)
{
	// The good copy's pages with their versions, rewritten on the bad copy
	// at those versions (kRepair: applied over the same version, never over
	// a newer one), one write per run of pages at one version.
	std::vector<uint64_t> versions(count);
	std::vector<uint8_t> pages(size_t{count} * wire::kPageSize);
	uint64_t from = good.fa_offset + first_page * wire::kPageSize;
	Status st = on_copy(
		good,
		[&](ModuleStore &s) {
			uint32_t crc = 0;
			return s.read_pages_versioned(good.region_id, from, count, pages.data(),
						      versions.data(), &crc);
		},
		[&](SyncClient &c) {
			return c.read_pages_versioned(good.region_id, from, count, pages.data(),
						      versions.data());
		});
	uint32_t repaired = 0;
	for (uint32_t k = 0; st && k < count;) {
		uint32_t e = k + 1;
		while (e < count && versions[e] == versions[k])
			e++;
		if (versions[k] == 0) {
			k = e;
			continue;
		}
		uint64_t to = bad.fa_offset + (first_page + k) * wire::kPageSize;
		const uint8_t *src = pages.data() + size_t{k} * wire::kPageSize;
		uint32_t applied = 0;
		st = on_copy(
			bad,
			[&](ModuleStore &s) {
				return s.write_pages_versioned(bad.region_id, to, e - k, src, versions[k],
							       VersionedMode::kRepair, &applied);
			},
			[&](SyncClient &c) {
				return c.write_pages_versioned(bad.region_id, to, e - k, src, versions[k],
							       true, &applied);
			});
		repaired += applied;
		k = e;
	}
	if (!st) {
		LOG_WARN("replica", "region '%s': repairing pages on module %s failed: %s",
			 set.name().c_str(), bad.module.to_string().c_str(), st.message().c_str());
		return;
	}
	set.add_copied(bad.module, repaired, true);
	LOG_INFO("replica", "region '%s': %u damaged page(s) on module %s rewritten from module %s",
		 set.name().c_str(), repaired, bad.module.to_string().c_str(),
		 good.module.to_string().c_str());
}

Status NodeFederation::read_pages(const RegionLocation &loc, uint64_t first_page, uint32_t count,
				  void *dst)
{
	if (is_replica_set(loc.module)) {
		auto set = replica_set(loc.replica_group);
		if (!set)
			return Status(Code::kNotFound, "region '" + loc.name + "' was not looked up");
		Status last(Code::kUnavailable,
			    "no copy of region '" + loc.name + "' in sync is reachable");
		std::vector<ReplicaLocation> damaged; // copies whose pages failed their crc
		for (const auto &r : set->snapshot()) {
			if (r.state != ReplicaSet::State::kInSync)
				continue;
			uint64_t at = r.loc.fa_offset + first_page * wire::kPageSize;
			Status st = on_copy(
				r.loc,
				[&](ModuleStore &s) {
					return s.read_pages(r.loc.region_id, at, count, dst);
				},
				[&](SyncClient &c) {
					return c.read_pages(r.loc.region_id, at, count, dst,
							    wire::TrafficClass::kControl);
				});
			if (st) {
				for (const auto &b : damaged)
					repair_copy(*set, r.loc, b, first_page, count);
				return st;
			}
			if (st.code() == Code::kCorrupt)
				damaged.push_back(r.loc);
			else
				set->set_state(r.loc.module, ReplicaSet::State::kLost, st.message());
			last = st;
		}
		return last;
	}
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
	if (is_replica_set(loc.module)) {
		auto set = replica_set(loc.replica_group);
		if (!set)
			return Status(Code::kNotFound, "region '" + loc.name + "' was not looked up");
		uint64_t version = set->next_version();
		unsigned ok_in_sync = 0;
		Status last(Code::kUnavailable,
			    "no copy of region '" + loc.name + "' in sync is reachable");
		for (const auto &r : set->snapshot()) {
			if (r.state == ReplicaSet::State::kLost)
				continue;
			uint64_t at = r.loc.fa_offset + first_page * wire::kPageSize;
			uint32_t applied = 0;
			Status st = on_copy(
				r.loc,
				[&](ModuleStore &s) {
					return s.write_pages_versioned(r.loc.region_id, at, count, src,
								       version, VersionedMode::kNewer,
								       &applied);
				},
				[&](SyncClient &c) {
					return c.write_pages_versioned(r.loc.region_id, at, count, src,
								       version, false, &applied);
				});
			if (!st) {
				set->set_state(r.loc.module, ReplicaSet::State::kLost, st.message());
				last = st;
				continue;
			}
			ok_in_sync += r.state == ReplicaSet::State::kInSync;
		}
		return ok_in_sync > 0 ? Status::ok() : last;
	}
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

} // namespace memfed
