// memfedd: the memfed node daemon.
//
// Roles (config "roles"): module — exports the local pool over the wire
// protocol (one io_uring loop thread); pager — serves page faults of local
// processes. Both share the control socket, where memfedctl and libmemfed
// talk to the daemon. SIGTERM/SIGINT stop it cleanly; SIGKILL is survivable:
// the pool recovers from its redo log and clients reconnect.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <pthread.h>
#include <thread>
#include <unistd.h>

#include "daemon/common/log.h"
#include "daemon/common/size.h"
#include "daemon/control/server.h"
#include "daemon/pager/pager.h"
#include "daemon/service/config.h"
#include "daemon/service/control_ops.h"
#include "daemon/service/module_service.h"
#include "daemon/service/node_federation.h"
#include "daemon/service/table_mirror.h"
#include "daemon/service/window_table.h"
#include "daemon/store/pool.h"
#include "daemon/transport/event_loop.h"
#include "daemon/transport/tcp_server.h"

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
	set_log_level(cfg.log_level);

	// Block the stop signals in every thread; the main thread waits for them.
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

	// Module role: the pool and its wire server.
	std::unique_ptr<ModuleStore> store;
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
		auto loop = EventLoop::create();
		if (!loop)
			return die(loop.status());
		module_loop = std::move(*loop);
		ServerIdentity id{self, wire::kCapModule, store->info().capacity_bytes};
		auto srv = TcpServer::listen(module_loop.get(), cfg.listen, id, service.get());
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

	NodeFederation fed(store.get(), service.get(), self, cfg.peers);
	control::Server control;
	if (!(st = control.listen(cfg.socket)))
		return die(st);
	ControlOps ops(cfg, &fed, listen_ep);
	ops.register_ops(control);

	// The window table, mirrored into memfed.ko when it is loaded; a
	// restarted daemon takes back the windows the kmod kept.
	TableMirror mirror(cfg, &fed);
	mirror.open();
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
		pc.prefetch = cfg.pager_prefetch_pages > 0;
		if (pc.prefetch)
			pc.prefetch_window = cfg.pager_prefetch_pages;
		pager = std::make_unique<pager::Pager>(fed, pc);
		pager->register_ops(control);
		ops.set_pager_stats([&pager] { return pager->stats(0); });
		ops.add_region_users([&pager](const std::string &r) { return pager->region_users(r); });
	}
	if (pager && !(st = pager->start()))
		return die(st);
	if (!(st = control.start()))
		return die(st);

	if (module_loop)
		module_thread = std::thread([&] { module_loop->run(); });
	mirror.start(windows);


	LOG_INFO("memfedd", "ready: node %s, listen %s, socket %s, %zu peers", self.to_string().c_str(),
		 listen_ep.empty() ? "(none)" : listen_ep.c_str(), cfg.socket.c_str(), cfg.peers.size());

	int sig = 0;
	sigwait(&stop_sigs, &sig);
	LOG_INFO("memfedd", "signal %s: stopping", strsignal(sig));

	control.stop();
	if (pager)
		pager->stop();
	mirror.stop();
	if (module_loop) {
		module_loop->stop();
		module_thread.join();
		server.reset();
	}
	LOG_INFO("memfedd", "stopped");
	return 0;
}
