#include "daemon/pager/pager.h"
#include "daemon/pager/content_hash.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>

#include "daemon/common/log.h"
#include "daemon/pager/map_protocol.h"
#include "daemon/wire/protocol.h"

namespace memfed::pager
{

namespace
{

constexpr const char *kLog = "pager";
using control::Message;
using nlohmann::json;

Status bad(const std::string &op, const std::string &what)
{
	return Status(Code::kInvalidArgument, "'" + op + "' request: " + what);
}

// A non-negative integer field; `def` when absent and not required.
Result<uint64_t> get_u64(const json &b, const char *op, const char *key, bool required,
                         uint64_t def = 0)
{
	auto it = b.find(key);
	if (it == b.end()) {
		if (required)
			return bad(op, std::string("missing field \"") + key + "\"");
		return def;
	}
	if (!it->is_number_integer() ||
	    (it->is_number_integer() && !it->is_number_unsigned() && it->get<int64_t>() < 0))
		return bad(op, std::string("field \"") + key + "\" must be a non-negative integer");
	return it->get<uint64_t>();
}

Result<bool> get_bool(const json &b, const char *op, const char *key, bool def)
{
	auto it = b.find(key);
	if (it == b.end())
		return def;
	if (!it->is_boolean())
		return bad(op, std::string("field \"") + key + "\" must be true or false");
	return it->get<bool>();
}

bool is_userfaultfd(int fd)
{
	char path[64], target[64] = {};
	std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	return n > 0 && std::strstr(target, "userfaultfd") != nullptr;
}

bool is_seqpacket(int fd)
{
	int type = 0;
	socklen_t len = sizeof(type);
	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET;
}

void close_fds(Message &m)
{
	for (int fd : m.fds)
		close(fd);
	m.fds.clear();
}

} // namespace

Pager::Pager(Federation &fed, PagerConfig cfg) : fed_(fed), cfg_(std::move(cfg))
{
	if (cfg_.threads == 0)
		cfg_.threads = 1;
}

Pager::~Pager()
{
	stop();
}

void Pager::register_ops(control::Server &server)
{
	auto bind = [this](Message (Pager::*fn)(const control::Peer &, Message &)) {
		return [this, fn](const control::Peer &peer, Message &req) {
			if (!started_) {
				close_fds(req);
				return control::error_reply(
				        Status(Code::kUnavailable,
				               "the pager role is not running in "
				               "this memfedd (enable it in the config)"));
			}
			return (this->*fn)(peer, req);
		};
	};
	server.add_op(kOpHello, bind(&Pager::op_hello));
	server.add_op(kOpAttach, bind(&Pager::op_attach));
	server.add_op(kOpMap, bind(&Pager::op_map));
	server.add_op(kOpMapReady, bind(&Pager::op_map_ready));
	server.add_op(kOpUnmap, bind(&Pager::op_unmap));
	server.add_op(kOpSync, bind(&Pager::op_sync));
	server.add_op(kOpStats, bind(&Pager::op_stats));
	server.on_disconnect([this](const control::Peer &peer) { on_disconnect(peer); });
}

Status Pager::start()
{
	auto caps = probe_uffd();
	if (!caps)
		return caps.status();
	caps_ = *caps;
	LOG_INFO(kLog, "userfaultfd features: %s; %u thread(s)", caps_.describe().c_str(),
	         cfg_.threads);
	if (!cfg_.pin_dir.empty())
		restore_recorded_pins(cfg_.pin_dir);
	for (unsigned i = 0; i < cfg_.threads; i++) {
		auto t = std::make_unique<PagerThread>(fed_, cfg_, caps_, int(i), &ids_);
		t->on_region_gone = [this](ModuleId module, uint32_t id, const std::string &name,
		                           int from) { on_region_gone(module, id, name, from); };
		MF_RETURN_IF_ERROR(t->start());
		threads_.push_back(std::move(t));
	}
	started_ = true;
	return Status::ok();
}

void Pager::stop()
{
	if (!started_)
		return;
	started_ = false;
	for (auto &t : threads_)
		t->stop();
	threads_.clear();
	MutexLock lk(&mu_);
	procs_.clear();
	maps_.clear();
}

Status Pager::run_on(int t, std::function<void(std::function<void(Status)>)> fn)
{
	auto prom = std::make_shared<std::promise<Status>>();
	auto fut = prom->get_future();
	threads_[size_t(t)]->loop()->post([fn = std::move(fn), prom] {
		fn([prom](Status st) { prom->set_value(std::move(st)); });
	});
	if (fut.wait_for(std::chrono::milliseconds(cfg_.control_timeout_ms)) !=
	    std::future_status::ready)
		return Status(Code::kUnavailable, "the pager did not finish in " +
		                                          std::to_string(cfg_.control_timeout_ms) +
		                                          " ms (is the module reachable?)");
	return fut.get();
}

Message Pager::op_hello(const control::Peer &peer, Message &req)
{
	close_fds(req);
	uint64_t features = caps_.client_features();
	// The kernel reserves EVENT_FORK for CAP_SYS_PTRACE.
	if (!peer.privileged())
		features &= ~uint64_t(UFFD_FEATURE_EVENT_FORK);
	// WP_ASYNC only with eviction by move (async_dirty.cc); the client asks
	// for it only if it also maps a staging area.
	bool wp_async = caps_.wp_async && caps_.anon_wp && caps_.move && cfg_.evict_by_move &&
	                cfg_.wp_async;
	return control::ok_reply({{"uffd_features", features},
	                          {"private_register_mode", caps_.private_register_mode()},
	                          {"shared_register_mode", caps_.shared_register_mode()},
	                          {"wp", caps_.anon_wp},
	                          {"minor_shmem", caps_.minor_shmem},
	                          {"move", caps_.move},
	                          {"wp_async", wp_async},
	                          {"window_uffd", true},
	                          {"page_size", kPageSize},
	                          {"version", kMapProtocolVersion}});
}

Message Pager::op_attach(const control::Peer &peer, Message &req)
{
	auto fail = [&req](Status st) {
		close_fds(req);
		return control::error_reply(st);
	};
	if (req.fds.empty() || req.fds.size() > 3)
		return fail(bad(kOpAttach,
		                "needs fds[0] = the process's userfaultfd (and optionally "
		                "fds[1] = its evict channel, fds[2] = its userfaultfd for shared "
		                "windows)"));
	if (!is_userfaultfd(req.fds[0]))
		return fail(bad(kOpAttach, "fds[0] is not a userfaultfd"));
	if (req.fds.size() >= 2 && !is_seqpacket(req.fds[1]))
		return fail(bad(kOpAttach, "fds[1] (the evict channel) must be a SOCK_SEQPACKET "
		                           "socket"));
	if (req.fds.size() == 3 && !is_userfaultfd(req.fds[2]))
		return fail(bad(kOpAttach, "fds[2] (the uffd for shared windows) is not a "
		                           "userfaultfd; send one opened with \"features\" minus "
		                           "UFFD_FEATURE_WP_ASYNC, or no fds[2]"));
	auto features = get_u64(req.body, kOpAttach, "features", false, caps_.client_features());
	if (!features)
		return fail(features.status());
	auto budget = get_u64(req.body, kOpAttach, "budget", false, 0);
	if (!budget)
		return fail(budget.status());
	uint64_t staging_addr = 0, staging_len = 0;
	if (auto it = req.body.find("staging"); it != req.body.end()) {
		if (!it->is_object())
			return fail(bad(kOpAttach,
			                "\"staging\" must be an object {\"addr\", \"len\"}"));
		auto sa = get_u64(*it, "attach staging", "addr", true);
		auto sl = get_u64(*it, "attach staging", "len", true);
		if (!sa)
			return fail(sa.status());
		if (!sl)
			return fail(sl.status());
		if (*sa == 0 || *sa % kPageSize || *sl == 0 || *sl % kPageSize ||
		    *sl > kMaxStagingBytes || *sa + *sl < *sa)
			return fail(
			        bad(kOpAttach,
			            "\"staging\" must have addr non-zero and page aligned (4096) "
			            "and len a page multiple of 4096.." +
			                    std::to_string(kMaxStagingBytes) + " bytes"));
		staging_addr = *sa;
		staging_len = *sl;
	}
	// Under WP_ASYNC no write-protect holds a write, so the drop path
	// would lose writes that land between its copy and its drop: such a
	// uffd is evicted by moving its pages, which needs a staging area and
	// no EVENT_FORK (move_eviction.cc, moves_victims).
	if ((*features & UFFD_FEATURE_WP_ASYNC) &&
	    (staging_len == 0 || (*features & UFFD_FEATURE_EVENT_FORK) || !caps_.move ||
	     !cfg_.evict_by_move))
		return fail(bad(kOpAttach,
		                "\"features\" has UFFD_FEATURE_WP_ASYNC, which this pager serves "
		                "only with a \"staging\" area, without UFFD_FEATURE_EVENT_FORK, "
		                "and with eviction by move (pager.evict_by_move); open the uffd "
		                "without WP_ASYNC"));

	auto p = std::make_unique<Process>();
	p->uffd_id = ids_.fetch_add(1);
	p->uffd = req.fds[0];
	p->evict_fd = req.fds.size() >= 2 ? req.fds[1] : -1;
	p->window_uffd = req.fds.size() == 3 ? req.fds[2] : -1;
	req.fds.clear();
	p->pid = peer.pid;
	p->uid = peer.uid;
	p->conn_id = peer.conn_id;
	p->features = *features;
	p->wp_async = (*features & UFFD_FEATURE_WP_ASYNC) != 0;
	if (p->wp_async)
		p->content_key = content_hash_key();
	const uint64_t content_key = p->content_key;
	p->staging_addr = staging_addr;
	p->staging_len = staging_len;
	uint64_t b = *budget ? *budget : cfg_.default_process_budget;
	p->budget_pages = (b + kPageSize - 1) / kPageSize;
	bool evict = p->evict_fd >= 0;
	bool window_uffd = p->window_uffd >= 0;
	uint64_t id = p->uffd_id;
	int t = int(next_thread_.fetch_add(1) % threads_.size());
	{
		MutexLock lk(&mu_);
		procs_[id] = {t, peer.conn_id, peer.pid, peer.uid};
	}
	Process *raw = p.release();
	threads_[size_t(t)]->loop()->post(
	        [this, t, raw] { threads_[size_t(t)]->adopt(std::unique_ptr<Process>(raw)); });
	LOG_DEBUG(kLog, "pid %d attached uffd %lu (thread %d, evict channel: %s, window uffd: %s)",
	          int(peer.pid), (unsigned long)id, t, evict ? "yes" : "no",
	          window_uffd ? "yes" : "no");
	Message reply = control::ok_reply({{"uffd_id", id}, {"evict", evict}});
	if (content_key != 0)
		reply.body["content_key"] = content_key;
	return reply;
}

Message Pager::op_map(const control::Peer &peer, Message &req)
{
	// fds[0], for kind "shared" after a daemon restart: the client's memfd.
	int client_memfd = -1;
	if (req.fds.size() == 1) {
		client_memfd = req.fds[0];
		req.fds.clear();
	}
	close_fds(req);
	struct FdGuard {
		int &fd;
		~FdGuard()
		{
			if (fd >= 0)
				close(fd);
		}
	} guard{client_memfd};
	const json &b = req.body;
	auto err = [](Status st) { return control::error_reply(st); };
	auto uffd_id = get_u64(b, kOpMap, "uffd_id", true);
	auto offset = get_u64(b, kOpMap, "region_offset", false, 0);
	auto addr = get_u64(b, kOpMap, "addr", true);
	auto length = get_u64(b, kOpMap, "length", true);
	auto mode = get_u64(b, kOpMap, "register_mode", false, caps_.private_register_mode());
	auto budget = get_u64(b, kOpMap, "budget", false, 0);
	auto writable = get_bool(b, kOpMap, "writable", true);
	auto prefetch = get_bool(b, kOpMap, "prefetch", true);
	for (const Status *st :
	     {&uffd_id.status(), &offset.status(), &addr.status(), &length.status(), &mode.status(),
	      &budget.status(), &writable.status(), &prefetch.status()})
		if (!st->is_ok())
			return err(*st);
	auto region = b.find("region");
	if (region == b.end() || !region->is_string() || region->get<std::string>().empty())
		return err(bad(kOpMap, "missing field \"region\" (the region's name)"));
	auto kind_it = b.find("kind");
	std::string kind = kind_it != b.end() && kind_it->is_string() ? kind_it->get<std::string>()
	                                                              : std::string(kKindPrivate);
	if (kind != kKindPrivate && kind != kKindShared)
		return err(bad(kOpMap, "\"kind\" must be \"private\" or \"shared\""));
	if (*addr == 0 || *addr % kPageSize || *offset % kPageSize || *length == 0 ||
	    *length % kPageSize)
		return err(bad(kOpMap, "addr, region_offset and length must be page aligned (4096) "
		                       "and addr, length non-zero"));
	if (!(*mode & UFFDIO_REGISTER_MODE_MISSING))
		return err(bad(kOpMap, "register_mode must include UFFDIO_REGISTER_MODE_MISSING"));
	if (*length / kPageSize > UINT32_MAX)
		return err(bad(kOpMap, "length too large"));

	ProcInfo pi;
	{
		MutexLock lk(&mu_);
		auto it = procs_.find(*uffd_id);
		if (it == procs_.end() || it->second.conn_id != peer.conn_id)
			return err(Status(
			        Code::kNotFound,
			        "uffd " + std::to_string(*uffd_id) +
			                " is not attached on this connection (send \"attach\" "
			                "first)"));
		pi = it->second;
	}
	// Asked for the mapping uid: its module decides by the region's owner
	// node and grants, not only its owner uid and mode (a uid here is not
	// the same user as that uid on the node that owns the region).
	const uint8_t want = *writable ? wire::kAccessRead | wire::kAccessWrite : wire::kAccessRead;
	auto loc = fed_.locate_region(region->get<std::string>(), Asker{peer.uid, want});
	if (!loc)
		return err(loc.status());
	if (*offset > loc->size_bytes || *length > loc->size_bytes - *offset)
		return err(Status(Code::kOutOfRange,
		                  "region '" + loc->name + "' is " +
		                          std::to_string(loc->size_bytes) + " bytes; window at " +
		                          std::to_string(*offset) + " + " +
		                          std::to_string(*length) + " runs past its end"));
	if (loc->access != 0 && (loc->access & want) != want)
		return err(Status(Code::kPermission,
		                  "uid " + std::to_string(peer.uid) + " may not map region '" +
		                          loc->name + "' " +
		                          (*writable ? "writable" : "read-only") + " (module " +
		                          loc->module.to_string() + " gives it only " +
		                          ((loc->access & wire::kAccessWrite)  ? "read and write"
		                           : (loc->access & wire::kAccessRead) ? "read"
		                                                               : "nothing") +
		                          ")"));
	if (loc->access == 0 && peer.uid != 0 && peer.uid != loc->owner_uid) {
		uint32_t need = *writable ? 06 : 04;
		if ((loc->mode & need) != need)
			return err(Status(Code::kPermission,
			                  "uid " + std::to_string(peer.uid) +
			                          " may not map region '" + loc->name + "' " +
			                          (*writable ? "writable" : "read-only") +
			                          " (owner uid " + std::to_string(loc->owner_uid) +
			                          ", mode " + std::to_string(loc->mode) + ")"));
	}

	auto m = std::make_unique<Mapping>();
	m->id = ids_.fetch_add(1);
	m->region = loc->name;
	m->region_id = loc->region_id;
	m->fa_base = loc->fa_offset + *offset;
	m->addr = *addr;
	m->npages = uint32_t(*length / kPageSize);
	m->writable = *writable;
	m->wp = (*mode & UFFDIO_REGISTER_MODE_WP) && caps_.anon_wp;
	m->prefetch = *prefetch;
	uint64_t bud = *budget ? *budget : cfg_.default_mapping_budget;
	m->budget_pages = (bud + kPageSize - 1) / kPageSize;
	m->pages.resize(m->npages);
	if (kind == kKindPrivate)
		m->history.resize(m->npages);
	// "removed": ranges the program dropped (MADV_DONTNEED) while no daemon
	// had this mapping; they read as zero unless present again (add_mapping).
	if (auto rm = b.find("removed"); rm != b.end()) {
		if (kind != kKindPrivate || !rm->is_array() || rm->size() > kMaxRemovedRanges)
			return err(bad(kOpMap,
			               "\"removed\" must be an array of at most " +
			                       std::to_string(kMaxRemovedRanges) +
			                       " [addr, length] pairs, kind \"private\" only"));
		for (const auto &r : *rm) {
			if (!r.is_array() || r.size() != 2 || !r[0].is_number_unsigned() ||
			    !r[1].is_number_unsigned())
				return err(
				        bad(kOpMap, "\"removed\" entries must be [addr, length]"));
			uint64_t a = r[0].get<uint64_t>(), n = r[1].get<uint64_t>();
			if (a % kPageSize || n % kPageSize || a < *addr || n > *length ||
			    a - *addr > *length - n)
				return err(bad(kOpMap, "a \"removed\" range is not page aligned "
				                       "inside the mapping"));
			for (uint64_t i = (a - *addr) / kPageSize; i < (a - *addr + n) / kPageSize;
			     i++) {
				m->pages[i].state = PageState::kZero;
				m->pages[i].flags = kDirty;
				m->touch(uint32_t(i));
			}
		}
	}
	int reply_fd = -1;
	if (kind == kKindShared) {
		m->wp = (*mode & UFFDIO_REGISTER_MODE_WP) && caps_.shmem_wp;
		std::string key = loc->name + "#" + std::to_string(loc->region_id) + "@" +
		                  std::to_string(*offset) + "+" + std::to_string(*length);
		MutexLock lk(&mu_);
		std::shared_ptr<SharedWindow> w = windows_[key].lock();
		if (!w) {
			int fd = -1;
			if (client_memfd >= 0) {
				Status st = SharedWindow::check_memfd(client_memfd, m->npages);
				if (!st)
					return err(st);
				fd = client_memfd;
				client_memfd = -1;
			} else {
				auto created = SharedWindow::create_memfd(loc->name, m->npages);
				if (!created)
					return err(created.status());
				fd = *created;
			}
			w = std::make_shared<SharedWindow>(key, *m, fd);
			MutexLock wl(&w->mu);
			w->budget_pages = m->budget_pages;
			w->adopt_present();
			windows_[key] = w;
		}
		{
			// The smallest budget any mapper asked for holds.
			MutexLock wl(&w->mu);
			if (m->budget_pages &&
			    (w->budget_pages == 0 || m->budget_pages < w->budget_pages))
				w->budget_pages = m->budget_pages;
		}
		m->window = w;
		reply_fd = w->memfd;
	}
	uint64_t id = m->id, pages = m->npages;
	ModuleId module = loc->module;
	auto shared = std::make_shared<std::unique_ptr<Mapping>>(std::move(m));
	Status st = run_on(pi.thread, [this, t = pi.thread, uffd = *uffd_id, shared,
	                               module](std::function<void(Status)> done) {
		done(threads_[size_t(t)]->add_mapping(uffd, std::move(*shared), module));
	});
	if (!st)
		return err(st);
	{
		MutexLock lk(&mu_);
		maps_[id] = {.uffd_id = *uffd_id,
		             .thread = pi.thread,
		             .conn_id = peer.conn_id,
		             .pages = pages,
		             .region = loc->name,
		             .pid = pi.pid,
		             .module = loc->module,
		             .region_id = loc->region_id,
		             .gone = false};
	}
	LOG_DEBUG(kLog, "pid %d mapped region '%s' +%lu (%lu pages) at 0x%lx as %s mapping %lu",
	          int(peer.pid), loc->name.c_str(), (unsigned long)*offset, (unsigned long)pages,
	          (unsigned long)*addr, kind.c_str(), (unsigned long)id);
	Message reply = control::ok_reply({{"mapping_id", id}});
	// The window keeps its memfd: the server sends a copy and does not
	// close reply fds.
	if (reply_fd >= 0)
		reply.fds.push_back(reply_fd);
	return reply;
}

Message Pager::op_map_ready(const control::Peer &peer, Message &req)
{
	close_fds(req);
	auto id = get_u64(req.body, kOpMapReady, "mapping_id", true);
	if (!id)
		return control::error_reply(id.status());
	auto mi = find_mapping(peer, *id);
	if (!mi)
		return control::error_reply(mi.status());
	Status st = run_on(mi->thread, [this, t = mi->thread, mid = *id](auto done) {
		threads_[size_t(t)]->mapping_ready(mid, std::move(done));
	});
	if (!st)
		return control::error_reply(st);
	return control::ok_reply();
}

Result<Pager::MapInfo> Pager::find_mapping(const control::Peer &peer, uint64_t id)
{
	MutexLock lk(&mu_);
	auto it = maps_.find(id);
	if (it == maps_.end() || it->second.conn_id != peer.conn_id)
		return Status(Code::kNotFound, "mapping " + std::to_string(id) +
		                                       " is not mapped on this connection");
	return it->second;
}

Message Pager::op_unmap(const control::Peer &peer, Message &req)
{
	close_fds(req);
	auto id = get_u64(req.body, kOpUnmap, "mapping_id", true);
	if (!id)
		return control::error_reply(id.status());
	auto mi = find_mapping(peer, *id);
	if (!mi)
		return control::error_reply(mi.status());
	Status st = run_on(mi->thread, [this, t = mi->thread, mid = *id](auto done) {
		threads_[size_t(t)]->unmap(mid, done);
	});
	if (!st)
		return control::error_reply(st);
	MutexLock lk(&mu_);
	maps_.erase(*id);
	forget_gone_if_unmapped(mi->module, mi->region_id);
	return control::ok_reply();
}

Message Pager::op_sync(const control::Peer &peer, Message &req)
{
	close_fds(req);
	auto id = get_u64(req.body, kOpSync, "mapping_id", true);
	auto off = get_u64(req.body, kOpSync, "offset", false, 0);
	auto len = get_u64(req.body, kOpSync, "length", false, UINT64_MAX);
	for (const Status *st : {&id.status(), &off.status(), &len.status()})
		if (!st->is_ok())
			return control::error_reply(*st);
	auto mi = find_mapping(peer, *id);
	if (!mi)
		return control::error_reply(mi.status());
	uint64_t bytes = mi->pages * kPageSize;
	if (*off >= bytes)
		return control::error_reply(
		        Status(Code::kOutOfRange, "sync offset " + std::to_string(*off) +
		                                          " is past the mapping's end (" +
		                                          std::to_string(bytes) + " bytes)"));
	uint64_t end = *len > bytes - *off ? bytes : *off + *len;
	uint32_t first = uint32_t(*off / kPageSize);
	uint32_t count = uint32_t((end + kPageSize - 1) / kPageSize - first);
	Status st = run_on(mi->thread, [this, t = mi->thread, mid = *id, first, count](auto done) {
		threads_[size_t(t)]->sync(mid, first, count, done);
	});
	if (!st)
		return control::error_reply(st);
	return control::ok_reply();
}

nlohmann::json Pager::stats(pid_t pid, const std::string &after, size_t max_bytes)
{
	// The cursor: "r:NAME" (regions after NAME), "p:ID" (regions done,
	// processes after uffd ID).
	bool in_procs = after.rfind("p:", 0) == 0;
	std::string region_after = after.rfind("r:", 0) == 0 ? after.substr(2) : "";
	uint64_t proc_after = 0;
	if (in_procs)
		proc_after = std::strtoull(after.c_str() + 2, nullptr, 10);
	else if (!after.empty() && region_after.empty())
		return {{"error", "\"after\" must be the \"next\" of the previous stats reply"},
		        {"bad_cursor", true}};
	auto shared = std::make_shared<StatsSnapshot>();
	for (size_t t = 0; t < threads_.size(); t++) {
		Status st = run_on(int(t), [this, t, shared](auto done) {
			threads_[t]->collect(shared.get());
			done(Status::ok());
		});
		if (!st)
			return {{"error", st.message()}};
	}
	StatsSnapshot &snap = *shared;
	json regions = json::array(), procs = json::array();
	size_t bytes = 0;
	std::string next;
	// Always at least one entry a page, so that every page moves on.
	auto full = [&] { return bytes >= max_bytes && !(regions.empty() && procs.empty()); };
	if (!in_procs) {
		std::vector<const std::string *> names;
		for (auto &[name, s] : snap.regions)
			if (name > region_after)
				names.push_back(&name);
		std::sort(names.begin(), names.end(),
		          [](const std::string *a, const std::string *b) { return *a < *b; });
		for (const std::string *name : names) {
			if (full()) {
				next = "r:" + regions.back()["region"].get<std::string>();
				break;
			}
			json r = snap.regions[*name].to_json();
			r["region"] = *name;
			bytes += r.dump().size();
			regions.push_back(std::move(r));
		}
	}
	if (next.empty()) {
		std::sort(snap.processes.begin(), snap.processes.end(),
		          [](const auto &a, const auto &b) { return a.uffd_id < b.uffd_id; });
		for (auto &p : snap.processes) {
			if ((pid != 0 && p.pid != pid) || (in_procs && p.uffd_id <= proc_after))
				continue;
			if (full()) {
				next = procs.empty()
				               ? "r:" + regions.back()["region"].get<std::string>()
				               : "p:" + std::to_string(procs.back()["uffd_id"]
				                                               .get<uint64_t>());
				break;
			}
			json j = p.stats.to_json();
			j["pid"] = p.pid;
			j["uffd_id"] = p.uffd_id;
			j["fork_child"] = p.fork_child;
			j["state"] = std::move(p.state);
			bytes += j.dump().size();
			procs.push_back(std::move(j));
		}
	}
	json b = {{"regions", regions},
	          {"processes", procs},
	          {"writebacks_dropped", snap.writebacks_dropped},
	          {"more", !next.empty()}};
	if (!next.empty())
		b["next"] = next;
	return b;
}

std::vector<TransportState> Pager::transport_states()
{
	auto all = std::make_shared<std::vector<TransportState>>();
	for (size_t t = 0; t < threads_.size(); t++) {
		Status st = run_on(int(t), [this, t, all](auto done) {
			threads_[t]->collect_transports(all.get());
			done(Status::ok());
		});
		if (!st)
			return {};
	}
	return std::move(*all);
}

Message Pager::op_stats(const control::Peer &, Message &req)
{
	close_fds(req);
	auto pid = get_u64(req.body, kOpStats, "pid", false, 0);
	if (!pid)
		return control::error_reply(pid.status());
	auto after = req.body.find("after");
	if (after != req.body.end() && !after->is_string())
		return control::error_reply(Status(Code::kInvalidArgument,
		                                   "\"after\" must be the \"next\" string of the "
		                                   "previous pager.stats reply"));
	json s = stats(pid_t(*pid), after != req.body.end() ? after->get<std::string>() : "",
	               kStatsPageBytes);
	if (s.contains("error"))
		return control::error_reply(Status(s.contains("bad_cursor") ? Code::kInvalidArgument
		                                                            : Code::kUnavailable,
		                                   s["error"].get<std::string>()));
	return control::ok_reply(s);
}

void Pager::on_disconnect(const control::Peer &peer)
{
	if (!started_)
		return;
	std::vector<std::pair<uint64_t, int>> gone;
	{
		MutexLock lk(&mu_);
		for (auto it = procs_.begin(); it != procs_.end();) {
			if (it->second.conn_id == peer.conn_id) {
				gone.emplace_back(it->first, it->second.thread);
				it = procs_.erase(it);
			} else {
				++it;
			}
		}
	}
	for (auto [id, t] : gone) {
		Status st = run_on(t, [this, t = t, id = id](auto done) {
			threads_[size_t(t)]->detach(id, [done] { done(Status::ok()); });
		});
		if (!st)
			LOG_WARN(kLog, "detaching uffd %lu of pid %d: %s", (unsigned long)id,
			         int(peer.pid), st.message().c_str());
	}
	// Only now: until the detach wrote the pages back, region_users()
	// still names the process, so a delete waits for the write-back.
	MutexLock lk(&mu_);
	std::set<std::pair<ModuleId, uint32_t>> unmapped;
	for (auto it = maps_.begin(); it != maps_.end();) {
		if (it->second.conn_id != peer.conn_id) {
			++it;
			continue;
		}
		unmapped.insert({it->second.module, it->second.region_id});
		it = maps_.erase(it);
	}
	for (auto [module, id] : unmapped)
		forget_gone_if_unmapped(module, id);
}

void Pager::forget_gone_if_unmapped(ModuleId module, uint32_t id)
{
	auto it = gone_.find({module, id});
	if (it == gone_.end())
		return;
	for (const auto &[mid, mi] : maps_)
		if (mi.module == module && mi.region_id == id)
			return;
	gone_.erase(it);
}

size_t Pager::deleted_regions_remembered()
{
	MutexLock lk(&mu_);
	return gone_.size();
}

std::vector<pid_t> Pager::region_users(const std::string &name)
{
	std::vector<pid_t> pids;
	{
		MutexLock lk(&mu_);
		for (const auto &[id, mi] : maps_)
			if (mi.region == name && !mi.gone)
				pids.push_back(mi.pid);
	}
	std::sort(pids.begin(), pids.end());
	pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
	return pids;
}

std::vector<pid_t> Pager::mark_gone(ModuleId module, uint32_t id)
{
	std::vector<pid_t> pids;
	for (auto &[mid, mi] : maps_) {
		if (mi.module != module || mi.region_id != id || mi.gone)
			continue;
		mi.gone = true;
		pids.push_back(mi.pid);
	}
	std::sort(pids.begin(), pids.end());
	pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
	return pids;
}

namespace
{

std::string pid_list(const std::vector<pid_t> &pids)
{
	std::string s;
	for (pid_t pid : pids)
		s += (s.empty() ? "" : ", ") + std::to_string(pid);
	return s.empty() ? "no process" : (pids.size() > 1 ? "pids " : "pid ") + s;
}

} // namespace

void Pager::region_deleted(const RegionLocation &loc)
{
	if (!started_)
		return;
	for (auto &t : threads_)
		t->loop()->post([t = t.get(), name = loc.name] { t->forget_region_stats(name); });
	std::vector<pid_t> pids;
	{
		MutexLock lk(&mu_);
		pids = mark_gone(loc.module, loc.region_id);
		// Nobody maps it (or a fetch found it gone first and said so).
		if (pids.empty())
			return;
		gone_.insert({loc.module, loc.region_id});
	}
	for (size_t t = 0; t < threads_.size(); t++) {
		Status st = run_on(int(t),
		                   [this, t, module = loc.module, id = loc.region_id](auto done) {
			                   threads_[t]->poison_region(module, id, nullptr);
			                   done(Status::ok());
		                   });
		if (!st)
			LOG_WARN(kLog, "poisoning the mappings of deleted region '%s': %s",
			         loc.name.c_str(), st.message().c_str());
	}
	LOG_WARN(kLog,
	         "region '%s' (id %u) deleted while %s mapped it: poisoned its mappings; "
	         "their next access gets SIGBUS",
	         loc.name.c_str(), loc.region_id, pid_list(pids).c_str());
}

void Pager::on_region_gone(ModuleId module, uint32_t id, const std::string &name, int from)
{
	std::vector<pid_t> pids;
	{
		MutexLock lk(&mu_);
		bool first = gone_.insert({module, id}).second;
		pids = mark_gone(module, id); // a mapping made since, too
		// Its mappings may all have ended while the report was on its way.
		forget_gone_if_unmapped(module, id);
		if (!first)
			return; // reported already
	}
	for (size_t t = 0; t < threads_.size(); t++) {
		if (int(t) == from)
			continue;
		threads_[t]->loop()->post(
		        [this, t, module, id] { threads_[t]->poison_region(module, id, nullptr); });
	}
	LOG_WARN(kLog,
	         "region '%s' (id %u) on module %s is gone (deleted there) while %s mapped it: "
	         "poisoned its mappings; their next access gets SIGBUS",
	         name.c_str(), id, module.to_string().c_str(), pid_list(pids).c_str());
}

} // namespace memfed::pager
