#include "daemon/mesh/route_table.h"

#include <algorithm>
#include <cstring>

namespace memfed::mesh
{

void RouteTable::apply(const BabelEvent &ev, uint64_t now_ns, std::vector<RouteChange> *changes)
{
	if (ev.object != BabelEvent::Object::kRoute)
		return;
	if (ev.action == BabelEvent::Action::kFlush) {
		auto it = routes_.find(ev.id);
		if (it == routes_.end())
			return;
		ModuleId id = it->second.module;
		routes_.erase(it);
		reselect(id, now_ns, changes);
		return;
	}
	if (ev.prefix_len != 128)
		return;
	auto id = module_of_address(prefix_, ev.prefix);
	if (!id)
		return;
	auto it = routes_.find(ev.id);
	if (it != routes_.end() && !(it->second.module == *id)) {
		// babeld reused a handle for another destination: the old one is gone.
		ModuleId old = it->second.module;
		routes_.erase(it);
		reselect(old, now_ns, changes);
	}
	routes_[ev.id] = BabelRoute{*id, ev};
	reselect(*id, now_ns, changes);
}

void RouteTable::reselect(ModuleId id, uint64_t now_ns, std::vector<RouteChange> *changes)
{
	const BabelEvent *best = nullptr;
	for (const auto &[handle, r] : routes_) {
		if (r.module == id && r.ev.installed && r.ev.metric < kBabelInfinity) {
			best = &r.ev;
			break;
		}
	}
	auto cur = installed_.find(id);
	if (!best) {
		if (cur != installed_.end()) {
			changes->push_back({RouteChange::Kind::kLeft, cur->second});
			installed_.erase(cur);
		}
		return;
	}
	ModuleRoute r;
	r.module = id;
	r.address = best->prefix;
	r.via = best->via;
	r.ifname = best->ifname;
	r.metric = best->metric;
	r.since_ns = now_ns;
	if (cur == installed_.end()) {
		installed_[id] = r;
		changes->push_back({RouteChange::Kind::kJoined, r});
		return;
	}
	ModuleRoute &old = cur->second;
	bool moved = std::memcmp(&old.via, &r.via, sizeof(r.via)) != 0 || old.ifname != r.ifname;
	if (!moved && old.metric == r.metric)
		return;
	// A metric change on the same next hop keeps the measured hop count on
	// show until it is measured again: the neighbour's own route may have
	// changed length (measured on a 4 x 4 grid: a route 3 hops long shown as
	// 5, its length when babeld first installed it).
	r.hops = moved ? 0 : old.hops;
	r.hops_stale = !moved && old.hops != 0;
	r.since_ns = moved ? now_ns : old.since_ns;
	old = r;
	changes->push_back({RouteChange::Kind::kMoved, r});
}

void RouteTable::clear(std::vector<RouteChange> *changes)
{
	for (const auto &[id, r] : installed_)
		changes->push_back({RouteChange::Kind::kLeft, r});
	installed_.clear();
	routes_.clear();
}

std::vector<ModuleRoute> RouteTable::modules() const
{
	std::vector<ModuleRoute> out;
	out.reserve(installed_.size());
	for (const auto &[id, r] : installed_) {
		out.push_back(r);
		out.back().originators = originators(id);
	}
	return out;
}

std::vector<std::string> RouteTable::originators(ModuleId id) const
{
	std::vector<std::string> out;
	for (const auto &[handle, r] : routes_)
		if (r.module == id && r.ev.metric < kBabelInfinity)
			out.push_back(r.ev.router_id);
	std::sort(out.begin(), out.end());
	out.erase(std::unique(out.begin(), out.end()), out.end());
	return out;
}

const ModuleRoute *RouteTable::find(ModuleId id) const
{
	auto it = installed_.find(id);
	return it == installed_.end() ? nullptr : &it->second;
}

void RouteTable::set_hops(ModuleId id, uint32_t hops)
{
	auto it = installed_.find(id);
	if (it != installed_.end()) {
		it->second.hops = hops;
		it->second.hops_stale = false;
	}
}

} // namespace memfed::mesh
