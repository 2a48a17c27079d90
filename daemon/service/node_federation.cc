#include "daemon/service/node_federation.h"

#include <algorithm>
#include <chrono>

#include "daemon/common/log.h"
#include "daemon/service/local_channel.h"
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
			if (!st)
				return st;
			const PeerInfo &info = (*c)->peer();
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
		if (p->module == module)
			return p;
	}
	return nullptr;
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
	return l;
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
		if (r)
			return location(store_->module_id(), to_wire(*r));
		if (r.status().code() != Code::kNotFound)
			return r.status();
	}
	for (Peer *p : peer_list(false)) {
		auto r = with_peer(*p, [&](SyncClient &c) { return c.region_lookup(name); });
		if (r)
			return location(p->module, *r);
		if (r.status().code() != Code::kNotFound && r.status().code() != Code::kUnavailable)
			return r.status();
	}
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
						      const ModuleStore::AdmitFn &admit)
{
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

Status NodeFederation::delete_region(const RegionLocation &loc)
{
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
	if (out.size() > limit) {
		out.resize(limit);
		*more = true;
	}
	return out;
}

Status NodeFederation::read_pages(const RegionLocation &loc, uint64_t first_page, uint32_t count,
				  void *dst)
{
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
