#include "daemon/mesh/mesh_node.h"

#include <time.h>

#include "daemon/common/log.h"

namespace memfed::mesh
{
namespace
{

uint64_t now_ns()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

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
	bo.config_path = o.run_dir + "/babeld.conf";
	bo.pid_path = o.run_dir + "/babeld.pid";
	bo.state_path = o.run_dir + "/babeld.state";
	bo.socket_path = o.run_dir + "/babeld.sock";
	auto bin = locate_babeld(bo.babeld);
	if (!bin)
		return bin.status();
	MF_RETURN_IF_ERROR(enable_ipv6_forwarding());
	MF_RETURN_IF_ERROR(n->addresses_.add(announce));
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

void MeshNode::report(const std::vector<RouteChange> &changes, const std::string &why)
{
	for (const auto &c : changes) {
		if (listener_)
			listener_(c, why);
		if (c.kind != RouteChange::Kind::kLeft && c.route.hops == 0) {
			to_probe_.push_back(c.route.module);
			probe_cv_.notify_one();
		}
	}
}

void MeshNode::probe_loop()
{
	std::unique_lock<std::mutex> lk(mu_);
	while (true) {
		probe_cv_.wait(lk, [this] { return stopping_ || !to_probe_.empty(); });
		if (stopping_)
			return;
		ModuleId id = to_probe_.front();
		to_probe_.pop_front();
		const ModuleRoute *r = table_.find(id);
		if (!r || r->hops != 0)
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
		if (listener_)
			listener_({RouteChange::Kind::kMoved, *table_.find(id)}, "hops measured");
	}
}

void MeshNode::event(const BabelEvent &ev)
{
	std::lock_guard<std::mutex> lk(mu_);
	std::vector<RouteChange> changes;
	table_.apply(ev, now_ns(), &changes);
	report(changes, why_of(ev));
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
