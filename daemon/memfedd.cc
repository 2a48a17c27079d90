// memfedd: the memfed node daemon.
//
// Roles (config "roles"): module — exports the local pool over the wire
// protocol (one io_uring loop thread); pager — serves page faults of local
// processes. Both share the control socket, where memfedctl and libmemfed
// talk to the daemon. SIGTERM/SIGINT stop it cleanly; SIGKILL is survivable:
// the pool recovers from its redo log and clients reconnect. SIGHUP re-reads
// the config (plan_reload() says which keys apply at once).
//
// Under systemd (Type=notify, packaging/systemd/memfedd.service) it reports
// READY=1 once the control socket answers, RELOADING=1 ... READY=1 around a
// reload and STOPPING=1 on the way out; sd_notify is a no-op elsewhere.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <pthread.h>
#include <systemd/sd-daemon.h>
#include <thread>
#include <unistd.h>

#include "daemon/common/log.h"
#include "daemon/common/size.h"
#include "daemon/control/server.h"
#include "daemon/mesh/mesh_node.h"
#include "daemon/pager/pager.h"
#include "daemon/service/config.h"
#include "daemon/service/control_ops.h"
#include "daemon/service/metrics_server.h"
#include "daemon/service/module_service.h"
#include "daemon/service/node_federation.h"
#include "daemon/service/table_mirror.h"
#include "daemon/service/trust_ops.h"
#include "daemon/service/window_table.h"
#include "daemon/store/pool.h"
#include "daemon/transport/event_loop.h"
#include "daemon/transport/tcp_server.h"
#include "daemon/trust/node_key.h"
#include "daemon/trust/tls_context.h"
#include "daemon/trust/trusted_peers.h"
#ifdef MEMFED_HAVE_RDMA
#include "daemon/rdma/rdma_channel.h"
#include "daemon/rdma/rdma_server.h"
#endif

using namespace memfed;

namespace {

// Exit codes: the Status code of the failure (status.h), so scripts can tell
// a busy port (9) from a corrupt pool (7) from a bad config (2).
int die(const Status &st)
{
	LOG_ERROR("memfedd", "%s", st.message().c_str());
	return st.exit_code();
}

Status ensure_dir(const std::string &path)
{
	std::error_code ec;
	std::filesystem::create_directories(path, ec);
	if (ec)
		return Status(Code::kIo, "cannot create directory " + path + ": " + ec.message() +
						 " (set --state-dir / --socket to writable paths)");
	return Status::ok();
}

// SIGHUP: loads the config again from the same file and flags, applies what
// can change at run time and logs one line naming the rest.
void reload(int argc, char **argv, DaemonConfig *running, ControlOps *ops,
            TrustOps *trust_ops, ModuleService *service)
{
	timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
	           (unsigned long long)now.tv_sec * 1000000ull +
	                   (unsigned long long)now.tv_nsec / 1000);
	DaemonConfig fresh;
	bool help = false;
	Status st = load_config(argc, argv, &fresh, &help);
	if (!st) {
		log_line(LogLevel::kError, "memfedd", "reload: %s; kept the running config",
		         st.message().c_str());
	} else {
		// `peer add` and `peer rm` may have changed the set since the start.
		running->trust.peers = trust_ops->trusted();
		ConfigReload r = plan_reload(*running, fresh);
		set_log_level(fresh.log_level);
		running->log_level = fresh.log_level;
		ops->set_quota(fresh.quota);
		if (service)
			service->set_quota(fresh.quota, running->config_path);
		running->quota = fresh.quota;
		trust_ops->reload(fresh.trust);
		running->trust.peers = fresh.trust.peers;
		running->trust.file_peers = fresh.trust.file_peers;
		running->trust.rekey_seconds = fresh.trust.rekey_seconds;
		running->trust.rekey_bytes = fresh.trust.rekey_bytes;
		std::string applied, restart;
		for (const auto &a : r.applied)
			applied += (applied.empty() ? "" : ", ") + a;
		for (const auto &k : r.need_restart)
			restart += (restart.empty() ? "" : ", ") + k;
		// Always logged, whatever the level: an operator asked for it.
		log_line(restart.empty() ? LogLevel::kInfo : LogLevel::kWarn, "memfedd",
		         "reload from %s: %s%s%s",
		         fresh.config_path.empty() ? "built-in defaults"
		                                   : fresh.config_path.c_str(),
		         applied.empty() ? "nothing to apply" : applied.c_str(),
		         restart.empty() ? "" : "; changed but waiting for a restart: ",
		         restart.c_str());
	}
	sd_notify(0, "READY=1");
}

// The port of a HOST:PORT endpoint ("7700" when it has none).
std::string port_of(const std::string &endpoint)
{
	auto colon = endpoint.rfind(':');
	return colon == std::string::npos ? "7700" : endpoint.substr(colon + 1);
}

// Routes as the mesh sees them, for "mesh.routes" (memfedctl route ls).
nlohmann::json routes_json(mesh::MeshNode &m)
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
	nlohmann::json list = nlohmann::json::array();
	for (const auto &r : m.routes())
		list.push_back({{"dest", r.module.to_string()},
		                {"address", mesh::format_ipv6(r.address)},
		                {"next_hop", mesh::format_ipv6(r.via)},
		                {"interface", r.ifname},
		                {"metric", r.metric},
		                {"hops", r.hops},
		                {"originators", r.originators},
		                {"age_ms", (now - r.since_ns) / 1000000}});
	return list;
}

} // namespace

int main(int argc, char **argv)
{
	DaemonConfig cfg;
	bool help = false;
	Status st = load_config(argc, argv, &cfg, &help);
	if (help) {
		std::fputs(config_usage().c_str(), stdout);
		return 0;
	}
	if (!st) {
		std::fprintf(stderr, "memfedd: %s\n", st.message().c_str());
		return st.exit_code();
	}
	if (cfg.print_config) {
		std::printf("%s\n", config_to_json(cfg).dump(2).c_str());
		return 0;
	}
	set_log_level(cfg.log_level);

	// Block the stop and reload signals in every thread; the main thread
	// waits for them.
	sigset_t stop_sigs;
	sigemptyset(&stop_sigs);
	sigaddset(&stop_sigs, SIGTERM);
	sigaddset(&stop_sigs, SIGINT);
	sigaddset(&stop_sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_sigs, nullptr);
	std::signal(SIGPIPE, SIG_IGN);

	if (!(st = ensure_dir(cfg.state_dir)))
		return die(st);
	if (!(st = ensure_dir(std::filesystem::path(cfg.socket).parent_path().string())))
		return die(st);
	// The node's identity, and the keys it talks to.
	if (cfg.trust.key_file.empty())
		cfg.trust.key_file = cfg.state_dir + "/node.key";
	bool key_created = false;
	auto node_key = trust::load_or_create_node_key(cfg.trust.key_file, &key_created);
	if (!node_key)
		return die(node_key.status());
	auto trusted = std::make_shared<trust::TrustedPeers>(cfg.trust.peers);
	LOG_INFO("memfedd", "node key %s (%s %s), %zu trusted peers",
	         trust::encode_key(node_key->pub).c_str(), key_created ? "created in" : "from",
	         cfg.trust.key_file.c_str(), trusted->size());
	// Every connection between nodes, both ways, is TLS 1.3 with these keys.
	auto tls = trust::TlsContext::create(
	        *node_key, trusted, {cfg.trust.rekey_bytes, cfg.trust.rekey_seconds});
	if (!tls)
		return die(tls.status());
	const bool in_mesh = !cfg.mesh.interfaces.empty();
	mesh::MeshPrefix mesh_prefix;
	if (in_mesh && port_of(cfg.listen) == "0")
		return die(Status(Code::kInvalidArgument,
				  "the mesh needs a fixed port every node shares: --listen with a "
				  "port, e.g. [::]:7700, not 0"));
	if (in_mesh) {
		auto p = mesh::MeshPrefix::parse(cfg.mesh.prefix);
		if (!p)
			return die(p.status());
		mesh_prefix = *p;
	}
	// The mesh starts once the node's own address is known (its module's,
	// from the pool); the federation, made later, then listens to it.
	std::unique_ptr<mesh::MeshNode> mesh_node;
	auto join_mesh = [&](const in6_addr &own) -> Status {
		mesh::MeshOptions mo;
		mo.interfaces = cfg.mesh.interfaces;
		mo.prefix = mesh_prefix;
		mo.hello_interval_ms = cfg.mesh.hello_interval_ms;
		mo.interface_hello_ms = cfg.mesh.interface_hello_ms;
		mo.smoothing_half_life_s = cfg.mesh.smoothing_half_life_s;
		mo.leave_grace_ms = cfg.mesh.leave_grace_ms;
		mo.babeld = cfg.mesh.babeld;
		mo.qos = cfg.mesh.qos;
		mo.qos_rate_bps = uint64_t{cfg.mesh.qos_rate_mbit} * 1'000'000;
		mo.run_dir = cfg.state_dir;
		mo.port = uint16_t(std::stoul(port_of(cfg.listen)));
		auto m = mesh::MeshNode::start(mo, {own});
		if (!m)
			return m.status();
		mesh_node = std::move(*m);
		return Status::ok();
	};

	// Module role: the pool and its wire server.
	std::unique_ptr<ModuleStore> store;
#ifdef MEMFED_HAVE_RDMA
	// Destroyed after the service, whose writer may still change regions
	// (the store calls the RDMA server when a region's keys must die).
	std::unique_ptr<RdmaServer> rdma_server;
#endif
	std::unique_ptr<ModuleService> service;
	std::unique_ptr<EventLoop> module_loop;
	std::unique_ptr<TcpServer> server;
	std::thread module_thread;
	std::string listen_ep;
	ModuleId self = cfg.module_id.valid() ? cfg.module_id : ModuleId::random();
	if (cfg.role_module) {
		PoolOptions po{cfg.pool_path, cfg.pool_size, cfg.module_id};
		auto s = ModuleStore::open_or_create(po);
		if (!s)
			return die(s.status());
		store = std::move(*s);
		self = store->module_id();
		service = std::make_unique<ModuleService>(store.get());
		service->set_node_key(node_key->pub);
		service->set_quota(cfg.quota, cfg.config_path);
		auto loop = EventLoop::create();
		if (!loop)
			return die(loop.status());
		module_loop = std::move(*loop);
		std::string listen = cfg.listen;
		if (in_mesh) {
			// In the mesh a module listens on its module address.
			in6_addr own = mesh::module_address(mesh_prefix, self);
			if (!(st = join_mesh(own)))
				return die(st);
			listen = mesh::mesh_endpoint(own, port_of(cfg.listen));
		}
		ServerIdentity id{self, wire::kCapModule, store->info().capacity_bytes, *tls};
		RequestHandler *handler = service.get();
		if (!cfg.rdma_listen.empty()) {
#ifdef MEMFED_HAVE_RDMA
			// One-sided reads of the pool; HELLO offers them (kCapRdma).
			auto r = RdmaServer::listen(cfg.rdma_listen, store.get(), service.get());
			if (!r)
				return die(r.status());
			rdma_server = std::move(*r);
			id.capabilities |= wire::kCapRdma;
			handler = rdma_server.get();
#else
			return die(Status(Code::kInvalidArgument,
					  "--rdma-listen: this memfedd was built without RDMA (rdma-core "
					  "was missing at build time: make deps, then rebuild)"));
#endif
		}
		auto srv = TcpServer::listen(module_loop.get(), listen, id, handler);
		if (!srv)
			return die(srv.status());
		server = std::move(*srv);
		listen_ep = server->endpoint();
		PoolInfo pi = store->info();
		LOG_INFO("memfedd", "module %s: pool %s, %s capacity, %u regions, %lu log records replayed",
			 self.to_string().c_str(), cfg.pool_path.c_str(),
			 format_size(pi.capacity_bytes).c_str(), pi.regions,
			 (unsigned long)pi.log_replays);
	}

	if (in_mesh && !mesh_node) {
		// A pager-only node or a relay: its own address to originate from.
		if (!(st = join_mesh(mesh::node_address(mesh_prefix, self))))
			return die(st);
	}
	// The modules to dial: the configured endpoints, and those of trusted
	// peers that have one.
	std::vector<std::string> dial = cfg.peers;
	for (const auto &p : cfg.trust.peers)
		if (!p.endpoint.empty() &&
		    std::find(dial.begin(), dial.end(), p.endpoint) == dial.end())
			dial.push_back(p.endpoint);
	NodeFederation fed(store.get(), service.get(), self, dial, *tls);
	fed.set_request_timeout_ms(cfg.request_timeout_ms);
	fed.set_replica_grace_seconds(cfg.replica_grace_seconds);
	fed.keep_tombstones_in(cfg.state_dir);
#ifdef MEMFED_HAVE_RDMA
	// The transport to a module: its node's "transport" in trust.peers (read
	// at each connection, so `peer add --transport` applies to the next
	// one), else this node's.
	fed.set_channel_wrapper([trusted, node_transport = cfg.transport](
					EventLoop *loop, std::unique_ptr<TcpChannel> tcp) {
		std::string t = node_transport;
		if (auto p = trusted->find(tcp->peer().key); p && !p->transport.empty())
			t = p->transport;
		if (t == "tcp")
			return std::unique_ptr<Channel>(std::move(tcp));
		RdmaChannel::Options ro;
		ro.mode = t == "rdma" ? RdmaChannel::Mode::kRdma : RdmaChannel::Mode::kAuto;
		return std::unique_ptr<Channel>(RdmaChannel::wrap(loop, std::move(tcp), ro));
	});
#else
	bool rdma_asked = cfg.transport == "rdma";
	for (const auto &p : cfg.trust.peers)
		rdma_asked = rdma_asked || p.transport == "rdma";
	if (rdma_asked)
		return die(Status(Code::kInvalidArgument,
				  "transport rdma: this memfedd was built without RDMA (rdma-core "
				  "was missing at build time: make deps, then rebuild)"));
#endif
	// Stops the mesh before `fed` goes, on every way out of main().
	struct MeshStopper {
		std::unique_ptr<mesh::MeshNode> &node;
		~MeshStopper() { node.reset(); }
	} mesh_stopper{mesh_node};
	// Mesh changes wake the kmod mirror, which exists further down; it is
	// unset again before the mirror goes (mirror_wake_guard).
	struct MirrorWake {
		std::mutex mu;
		TableMirror *mirror = nullptr;
	} mirror_wake;
	if (mesh_node) {
		// Every module in the mesh listens on the mesh port (this node's).
		const std::string port = port_of(cfg.listen);
		mesh_node->set_listener([&fed, &mirror_wake, port](const mesh::RouteChange &c,
								   const std::string &why) {
			fed.mesh_route(c.route.module, mesh::mesh_endpoint(c.route.address, port),
				       c.kind != mesh::RouteChange::Kind::kLeft, c.route.metric,
				       c.route.hops, why);
			std::lock_guard<std::mutex> lk(mirror_wake.mu);
			if (mirror_wake.mirror)
				mirror_wake.mirror->kick();
		});
	}
	control::Server control;
	if (!(st = control.listen(cfg.socket)))
		return die(st);
	ControlOps ops(cfg, &fed, listen_ep);
	ops.set_trusted_peers(trusted);
	ops.register_ops(control);
	TrustOps trust_ops(node_key->pub, cfg, trusted);
	trust_ops.on_rekey_limits([tls = *tls](uint32_t seconds, uint64_t bytes) {
		tls->set_limits({bytes, seconds});
	});
	trust_ops.register_ops(control);
	control.add_op("mesh.routes", [&mesh_node](const control::Peer &, control::Message &) {
		if (!mesh_node)
			return control::error_reply(Status(
				Code::kNotFound, "this node is not in a mesh (memfedd --mesh IFACE)"));
		return control::ok_reply({{"routes", routes_json(*mesh_node)}});
	});
	// memfedctl watch without memfed.ko: the mesh's changes after "after".
	control.add_op("mesh.events", [&mesh_node](const control::Peer &, control::Message &m) {
		if (!mesh_node)
			return control::error_reply(Status(
				Code::kNotFound, "this node is not in a mesh (memfedd --mesh IFACE)"));
		uint64_t after = 0;
		auto it = m.body.find("after");
		if (it != m.body.end() && !it->is_number_unsigned())
			return control::error_reply(
				Status(Code::kInvalidArgument, "\"after\" must be an event number"));
		if (it != m.body.end())
			after = it->get<uint64_t>();
		uint64_t next = 0;
		nlohmann::json list = nlohmann::json::array();
		static const char *const kKinds[] = {"join", "leave", "move"};
		for (const auto &e : mesh_node->events_after(after, &next))
			list.push_back({{"seq", e.seq},
					{"unix_ms", e.unix_ms},
					{"event", kKinds[int(e.kind)]},
					{"module", e.route.module.to_string()},
					{"next_hop", mesh::format_ipv6(e.route.via)},
					{"interface", e.route.ifname},
					{"metric", e.route.metric},
					{"hops", e.route.hops},
					{"why", e.why}});
		return control::ok_reply({{"events", list}, {"next", next}});
	});

	// The window table, mirrored into memfed.ko when it is loaded; a
	// restarted daemon takes back the windows the kmod kept.
	TableMirror mirror(cfg, &fed);
	mirror.open();
	if (mesh_node)
		mirror.set_mesh_routes([&mesh_node] { return mesh_node->routes(); });
	struct MirrorWakeGuard {
		MirrorWake &wake;
		MirrorWakeGuard(MirrorWake &w, TableMirror *m) : wake(w)
		{
			std::lock_guard<std::mutex> lk(wake.mu);
			wake.mirror = m;
		}
		~MirrorWakeGuard()
		{
			std::lock_guard<std::mutex> lk(wake.mu);
			wake.mirror = nullptr;
		}
	} mirror_wake_guard(mirror_wake, &mirror);
	WindowTable windows(mirror.va_bits());
	windows.restore(mirror.saved_windows());
	windows.on_change([&mirror](const Window &w) { mirror.window_changed(w); });
	windows.register_ops(control, &fed);
	ops.add_region_users([&windows](const std::string &r) {
		std::vector<pid_t> pids;
		for (const auto &w : windows.list())
			if (w.region == r && w.pid != 0)
				pids.push_back(pid_t(w.pid));
		return pids;
	});
	ops.set_status_hook([&mirror, &windows](nlohmann::json &b) {
		b["table_source"] = mirror.source();
		b["va_bits"] = windows.va_bits();
		b["windows"] = windows.list().size();
	});
	// Pager role: userfaultfds from local processes.
	std::unique_ptr<pager::Pager> pager;
	if (cfg.role_pager) {
		pager::PagerConfig pc;
		pc.default_mapping_budget = cfg.pager_budget;
		pc.default_process_budget = cfg.pager_process_budget;
		pc.threads = cfg.pager_threads;
		pc.cpus = cfg.pager_cpus;
		pc.colocate = cfg.pager_colocate;
		pc.refault_turns = uint8_t(cfg.pager_refault_turns);
		pc.pin_dir = cfg.state_dir + "/pins";
		pc.prefetch = cfg.pager_prefetch_pages > 0;
		pc.evict_by_move = cfg.pager_evict_by_move;
		pc.wp_async = cfg.pager_wp_async;
		if (pc.prefetch)
			pc.prefetch_window = cfg.pager_prefetch_pages;
		pager = std::make_unique<pager::Pager>(fed, pc);
		pager->register_ops(control);
		ops.set_pager_stats([&pager](const std::string &after, size_t max_bytes) {
			return pager->stats(0, after, max_bytes);
		});
		ops.set_transport_states([&pager] { return pager->transport_states(); });
#ifdef MEMFED_HAVE_RDMA
		ops.set_rdma_stats([] {
			RdmaChannel::Counters c = RdmaChannel::totals();
			return nlohmann::json{{"reads", c.reads.load()},
					      {"pages", c.pages.load()},
					      {"bytes", c.bytes.load()},
					      {"torn_retries", c.torn_retries.load()},
					      {"fallbacks", c.fallbacks.load()},
					      {"errors", c.errors.load()},
					      {"refused", c.refused.load()},
					      {"connects", c.connects.load()},
					      {"writes", c.writes.load()},
					      {"pages_written", c.pages_written.load()},
					      {"write_fallbacks", c.write_fallbacks.load()},
					      {"fences", c.fences.load()},
					      {"bulk_to_tcp", c.bulk_to_tcp.load()}};
		});
#endif
		ops.add_region_users([&pager](const std::string &r) { return pager->region_users(r); });
		ops.on_region_deleted([&pager](const RegionLocation &loc) { pager->region_deleted(loc); });
	}
	if (pager && !(st = pager->start()))
		return die(st);
	// Prometheus endpoint (metrics_server.h), off unless configured.
	std::unique_ptr<MetricsServer> metrics;
	if (!cfg.metrics.empty()) {
		auto m = MetricsServer::start(cfg.metrics, [&ops] { return ops.metrics_text(); });
		if (!m)
			return die(m.status());
		metrics = std::move(*m);
		ops.set_metrics_endpoint(metrics->endpoint());
	}
	if (!(st = control.start()))
		return die(st);

	if (module_loop)
		module_thread = std::thread([&] { module_loop->run(); });
	mirror.start(windows, int(cfg.kmod_refresh_ms));


	LOG_INFO("memfedd", "ready: node %s, listen %s, socket %s, %zu peers", self.to_string().c_str(),
		 listen_ep.empty() ? "(none)" : listen_ep.c_str(), cfg.socket.c_str(), cfg.peers.size());

	sd_notifyf(0, "READY=1\nSTATUS=node %s, listen %s", self.to_string().c_str(),
	           listen_ep.empty() ? "(none)" : listen_ep.c_str());

	int sig = 0;
	DaemonConfig running = cfg;
	while (sigwait(&stop_sigs, &sig) == 0 && sig == SIGHUP)
		reload(argc, argv, &running, &ops, &trust_ops, service.get());
	LOG_INFO("memfedd", "signal %s: stopping", strsignal(sig));
	sd_notify(0, "STOPPING=1");

	metrics.reset();
	control.stop();
	if (pager)
		pager->stop();
	mirror.stop();
	if (module_loop) {
		module_loop->stop();
		module_thread.join();
		server.reset();
	}
	mesh_node.reset(); // babeld withdraws our routes as it goes
	LOG_INFO("memfedd", "stopped");
	return 0;
}
