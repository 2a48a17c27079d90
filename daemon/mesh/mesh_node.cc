#include "daemon/mesh/mesh_node.h"

#include <algorithm>

#include "daemon/common/clock.h"
#include "daemon/common/log.h"

namespace memfed::mesh
{
namespace
{

const char *why_of(const BabelEvent &ev)
{
	if (ev.action == BabelEvent::Action::kFlush)
		return "route withdrawn";
	return ev.metric >= kBabelInfinity ? "route unreachable (metric infinite)"
	                                   : "route changed";
}

} // namespace

Result<std::unique_ptr<MeshNode>> MeshNode::start(const MeshOptions &o,
                                                  std::vector<in6_addr> announce)
{
	MF_RETURN_IF_ERROR(check_interfaces(o.interfaces));
	std::unique_ptr<MeshNode> n(new MeshNode(o));
	BabeldOptions bo;
	bo.babeld = o.babeld;
	bo.interfaces = o.interfaces;
	bo.announce = announce;
	bo.hello_interval_ms = o.hello_interval_ms;
	bo.interface_hello_ms = o.interface_hello_ms;
	bo.smoothing_half_life_s = o.smoothing_half_life_s;
	bo.config_path = o.run_dir + "/babeld.conf";
	bo.pid_path = o.run_dir + "/babeld.pid";
	bo.state_path = o.run_dir + "/babeld.state";
	bo.socket_path = o.run_dir + "/babeld.sock";
	auto bin = locate_babeld(bo.babeld);
	if (!bin)
		return bin.status();
	MF_RETURN_IF_ERROR(enable_ipv6_forwarding());
	if (Status st = link_local_at_once(o.interfaces); !st)
		LOG_WARN("mesh", "%s", st.message().c_str());
	MF_RETURN_IF_ERROR(n->addresses_.add(announce));
	for (const auto &i : o.interfaces) {
		if (!o.qos)
			break;
		auto q = PriorityQdisc::install(i, {o.qos_rate_bps});
		if (!q) {
			LOG_WARN("mesh", "no traffic-class priority on %s: %s", i.c_str(),
			         q.status().message().c_str());
			continue;
		}
		n->qdiscs_.push_back(std::move(*q));
	}
	auto responder = HopResponder::start(o.port);
	if (!responder)
		return responder.status();
	n->responder_ = std::move(*responder);
	n->babeld_ = std::make_unique<BabeldProcess>(bo, o.run_dir + "/babeld.log");
	MeshNode *self = n.get();
	n->babeld_->on_exit([self](const std::string &why) { self->lost("babeld " + why); });
	MF_RETURN_IF_ERROR(n->babeld_->start());
	n->monitor_ = std::make_unique<BabelMonitor>(
	        bo.socket_path, [self](const BabelEvent &ev) { self->event(ev); },
	        [self](const std::string &why) { self->lost(why); });
	MF_RETURN_IF_ERROR(n->monitor_->start());
	n->prober_ = std::thread([self] { self->probe_loop(); });
	LOG_INFO("mesh", "joined the mesh %s on %zu interface(s), hello every %u ms",
	         o.prefix.to_string().c_str(), o.interfaces.size(), o.hello_interval_ms);
	return n;
}

MeshNode::~MeshNode()
{
	if (monitor_)
		monitor_->stop();
	{
		std::lock_guard<std::mutex> lk(mu_);
		stopping_ = true;
	}
	probe_cv_.notify_all();
	if (prober_.joinable())
		prober_.join();
	if (babeld_)
		babeld_->stop();
}

void MeshNode::set_listener(ChangeFn f)
{
	std::lock_guard<std::mutex> lk(mu_);
	listener_ = std::move(f);
	for (const auto &r : table_.modules())
		listener_({RouteChange::Kind::kJoined, r}, "route found");
}

void MeshNode::tell(const RouteChange &c, const std::string &why)
{
	if (listener_)
		listener_(c, why);
	MeshEvent e;
	e.seq = next_seq_++;
	e.unix_ms = uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
	                             std::chrono::system_clock::now().time_since_epoch())
	                             .count());
	e.kind = c.kind;
	e.route = c.route;
	e.why = why;
	events_.push_back(std::move(e));
	if (events_.size() > 1024)
		events_.pop_front();
}

std::vector<MeshEvent> MeshNode::events_after(uint64_t seq, uint64_t *next)
{
	std::lock_guard<std::mutex> lk(mu_);
	std::vector<MeshEvent> out;
	for (const auto &e : events_) {
		if (e.seq > seq)
			out.push_back(e);
	}
	*next = next_seq_ - 1;
	return out;
}

void MeshNode::report(const std::vector<RouteChange> &changes, const std::string &why)
{
	for (RouteChange c : changes) {
		if (c.kind == RouteChange::Kind::kLeft) {
			// Gone only if no route is back within the grace.
			leaving_[c.route.module] = {
			        c, why,
			        std::chrono::steady_clock::now() +
			                std::chrono::milliseconds(opts_.leave_grace_ms)};
			probe_cv_.notify_one();
			continue;
		}
		if (c.kind == RouteChange::Kind::kJoined && leaving_.erase(c.route.module))
			c.kind = RouteChange::Kind::kMoved;
		tell(c, why);
		if (c.route.hops == 0 || c.route.hops_stale) {
			to_probe_.push_back(c.route.module);
			probe_cv_.notify_one();
		}
	}
}

void MeshNode::probe_loop()
{
	std::unique_lock<std::mutex> lk(mu_);
	while (true) {
		auto next_leave = std::chrono::steady_clock::time_point::max();
		for (const auto &[id, l] : leaving_)
			next_leave = std::min(next_leave, l.deadline);
		// Woken by stop, a module to probe or a new leave; the loop then
		// looks again at what is due.
		if (!stopping_ && to_probe_.empty())
			probe_cv_.wait_until(lk, next_leave);
		if (stopping_)
			return;
		auto now = std::chrono::steady_clock::now();
		for (auto it = leaving_.begin(); it != leaving_.end();) {
			if (it->second.deadline > now) {
				++it;
				continue;
			}
			tell(it->second.change, it->second.why);
			it = leaving_.erase(it);
		}
		if (to_probe_.empty())
			continue;
		ModuleId id = to_probe_.front();
		to_probe_.pop_front();
		const ModuleRoute *r = table_.find(id);
		if (!r || (r->hops != 0 && !r->hops_stale))
			continue;
		in6_addr dst = r->address;
		lk.unlock();
		std::optional<uint32_t> hops;
		for (int attempt = 0; attempt < 3 && !hops; attempt++)
			hops = measure_hops(dst, opts_.port, 300);
		lk.lock();
		r = table_.find(id);
		if (!r)
			continue;
		if (!hops) {
			LOG_WARN("mesh", "module %s does not answer hop probes on UDP port %u",
			         id.to_string().c_str(), unsigned(opts_.port));
			continue;
		}
		table_.set_hops(id, *hops);
		tell({RouteChange::Kind::kMoved, *table_.find(id)}, "hops measured");
	}
}

void MeshNode::event(const BabelEvent &ev)
{
	std::lock_guard<std::mutex> lk(mu_);
	std::vector<RouteChange> changes;
	table_.apply(ev, mono_ns(), &changes);
	report(changes, why_of(ev));
	if (ev.object != BabelEvent::Object::kRoute)
		return;
	// Two routers originating one module's address: two nodes claim its
	// ID. Said once while it lasts; whoever meets both refuses the second
	// at HELLO (NodeFederation), and route ls shows the originators.
	for (const auto &r : table_.modules()) {
		if (r.originators.size() < 2) {
			twins_.erase(r.module);
			continue;
		}
		if (!twins_.insert(r.module).second)
			continue;
		std::string ids;
		for (const auto &o : r.originators)
			ids += (ids.empty() ? "" : ", ") + o;
		LOG_ERROR(
		        "mesh",
		        "module ID %s: its address %s is announced by %zu babel routers (%s): two "
		        "nodes claim this module ID. The one met second is refused at HELLO "
		        "(memfedctl module ls shows DUP); give one of them a new pool with its own "
		        "ID (memfedd --pool NEW_FILE --module-id ID)",
		        r.module.to_string().c_str(), format_ipv6(r.address).c_str(),
		        r.originators.size(), ids.c_str());
	}
}

void MeshNode::lost(const std::string &why)
{
	std::lock_guard<std::mutex> lk(mu_);
	std::vector<RouteChange> changes;
	table_.clear(&changes);
	report(changes, why);
}

std::vector<ModuleRoute> MeshNode::routes()
{
	std::lock_guard<std::mutex> lk(mu_);
	return table_.modules();
}

} // namespace memfed::mesh
