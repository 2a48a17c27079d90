#include "libclient/pager_link.h"

#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "daemon/common/log.h"
#include "daemon/pager/map_protocol.h"
#include "daemon/pager/uffd.h"
#include "libclient/pager_link_util.h"

namespace memfed::client
{

using control::Message;
using nlohmann::json;
using namespace link_util;

namespace
{

// The monitor settles unsettled program drops this often (drop_ledger.h).
constexpr int kSettleIntervalMs = 5;

// Every PagerLink that wants pthread_atfork handling. Fork handlers run on
// one thread, so the list only needs a lock against concurrent open/close.
std::mutex g_links_mu;
// Never destroyed: links held by other static objects unregister themselves
// during exit, after this file's statics would otherwise be gone.
std::vector<PagerLink *> &g_links = *new std::vector<PagerLink *>;

void atfork_prepare()
{
	g_links_mu.lock();
	for (auto *l : g_links)
		l->fork_prepare();
}

void atfork_parent()
{
	for (auto *l : g_links)
		l->fork_parent();
	g_links_mu.unlock();
}

void atfork_child()
{
	for (auto *l : g_links)
		l->fork_child();
	g_links_mu.unlock();
}

// First thing on every thread of the link. These threads must never touch the
// program's memory: with memfedd away, a page of it that was evicted blocks
// the thread that reconnects, and nothing else would. The program's own
// allocations include libc's state for its locale (setlocale allocates the
// locale data with malloc, which the preload serves from the remote heap),
// and json's number formatting, strerror and printf read that state. The C
// locale object is static in libc, so the thread uses it instead.
void enter_link_thread(void (*thread_init)())
{
	if (thread_init)
		thread_init();
	locale_t c = newlocale(LC_ALL_MASK, "C", locale_t(0)); // glibc's static C locale
	if (c != locale_t(0))
		uselocale(c);
}

// Reads what a new thread's start reads of the global locale (glibc's
// __ctype_init: the LC_CTYPE tables' pointers), so that a page of it in the
// remote heap is faulted in here, where a fault waits only for the pager.
void touch_global_ctype()
{
	locale_t mine = uselocale(LC_GLOBAL_LOCALE);
	for (nl_item item : {_NL_CTYPE_CLASS, _NL_CTYPE_TOUPPER, _NL_CTYPE_TOLOWER})
		(void)nl_langinfo(item);
	if (mine != locale_t(0))
		uselocale(mine);
}

} // namespace

Result<std::unique_ptr<PagerLink>> PagerLink::open(const Options &opt)
{
	std::unique_ptr<PagerLink> link(new PagerLink(opt));
	link->user_mode_only_ = geteuid() != 0;
	link->stop_fd_ = eventfd(0, EFD_CLOEXEC);
	if (link->stop_fd_ < 0)
		return Status::from_errno(errno, "creating the pager link's eventfd");
	{
		std::unique_lock<std::mutex> lk(link->mu_);
		MF_RETURN_IF_ERROR(link->establish());
	}
	MF_RETURN_IF_ERROR(link->start_monitor());
	if (opt.handle_fork) {
		static std::once_flag once;
		std::call_once(once,
		               [] { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); });
		std::lock_guard<std::mutex> lk(g_links_mu);
		g_links.push_back(link.get());
	}
	return link;
}

PagerLink::~PagerLink()
{
	if (opt_.handle_fork) {
		std::lock_guard<std::mutex> lk(g_links_mu);
		g_links.erase(std::remove(g_links.begin(), g_links.end(), this), g_links.end());
	}
	stopping_ = true;
	if (monitor_running_) {
		uint64_t one = 1;
		(void)!write(stop_fd_, &one, sizeof(one));
		pthread_join(monitor_, nullptr);
	}
	{
		std::lock_guard<std::mutex> lk(mu_);
		ctl_ = control::Client(); // the pager writes back and forgets the uffd
		connected_ = false;
		cv_.notify_all();
	}
	retire_evictor();
	// Closing the uffd releases an evictor blocked in madvise (its REMOVE
	// event is dropped with the uffd).
	if (uffd_ >= 0)
		close(uffd_);
	if (window_uffd_ >= 0)
		close(window_uffd_);
	(void)stop_evictor();
	for (auto &m : mappings_)
		if (m->memfd >= 0)
			close(m->memfd);
	if (stop_fd_ >= 0)
		close(stop_fd_);
}

Status PagerLink::establish()
{
	auto c = control::Client::connect(opt_.socket_path);
	if (!c)
		return c.status();
	auto hello = c->call_ok(request(pager::kOpHello));
	if (!hello)
		return hello.status();
	uint64_t features = 0, pmode = 0, smode = 0;
	if (!get_u64(hello->body, "uffd_features", &features) ||
	    !get_u64(hello->body, "private_register_mode", &pmode) ||
	    !get_u64(hello->body, "shared_register_mode", &smode))
		return Status(Code::kProtocol, "pager.hello reply from " + opt_.socket_path +
		                                       " lacks uffd_features or register modes "
		                                       "(memfedd and libmemfed versions differ)");
	// Forks are handled here (see the header): the child's ranges must stay
	// with a uffd the child itself holds.
	features &= ~uint64_t(UFFD_FEATURE_EVENT_FORK);
	auto mv = hello->body.find("move");
	bool move = mv != hello->body.end() && mv->is_boolean() && mv->get<bool>() &&
	            (features & UFFD_FEATURE_MOVE);
	// WP_ASYNC: a first write costs no fault; the pager offers it only
	// with eviction by move, so it goes with a staging area (below).
	auto wa = hello->body.find("wp_async");
	bool wp_async = move && wa != hello->body.end() && wa->is_boolean() && wa->get<bool>();
	if (uffd_ < 0) {
		uint64_t want = features | (wp_async ? uint64_t(UFFD_FEATURE_WP_ASYNC) : 0);
		auto fd = pager::open_uffd(want, user_mode_only_);
		if (!fd)
			return fd.status();
		auto wv = hello->body.find("window_uffd");
		if (wv != hello->body.end() && wv->is_boolean() && wv->get<bool>()) {
			// Shared windows on a uffd of their own, which never has
			// WP_ASYNC (map_protocol.h, "attach").
			auto wfd = pager::open_uffd(features & ~uint64_t(UFFD_FEATURE_WP_ASYNC),
			                            user_mode_only_);
			if (!wfd) {
				close(*fd);
				return wfd.status();
			}
			window_uffd_ = *wfd;
		}
		uffd_ = *fd;
		features_ = want;
		private_mode_ = pmode;
		shared_mode_ = smode;
	} else if (features != (features_ & ~uint64_t(UFFD_FEATURE_WP_ASYNC)) ||
	           pmode != private_mode_ || smode != shared_mode_) {
		LOG_WARN("libmemfed",
		         "memfedd at %s asks for uffd features 0x%llx, this process's uffd has "
		         "0x%llx; continuing with the existing uffd",
		         opt_.socket_path.c_str(), (unsigned long long)features,
		         (unsigned long long)features_);
	}
	// A staging area from a previous attach may hold pages the old pager
	// had moved out: they go back before any "map" (restore_staging).
	bool restore = staging_addr_ != 0;
	move = move && (features_ & UFFD_FEATURE_MOVE);
	if (move && staging_addr_ == 0) {
		Status st = map_staging();
		if (!st)
			LOG_WARN("libmemfed",
			         "no staging area (%s): the pager evicts this process's pages by "
			         "dropping them",
			         st.to_string().c_str());
	}
	if ((features_ & UFFD_FEATURE_WP_ASYNC) && staging_addr_ == 0) {
		// No staging area: the drop path, which WP_ASYNC would make
		// lose writes. Only possible right after the uffd was opened,
		// with nothing registered on it yet: open it again without.
		auto fd = pager::open_uffd(features_ & ~uint64_t(UFFD_FEATURE_WP_ASYNC),
		                           user_mode_only_);
		if (!fd)
			return fd.status();
		close(uffd_);
		uffd_ = *fd;
		features_ &= ~uint64_t(UFFD_FEATURE_WP_ASYNC);
	}

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return Status::from_errno(errno, "creating the evict channel");
	Message att = request(pager::kOpAttach,
	                      {{"features", features_}, {"budget", opt_.process_budget}});
	if (move && staging_addr_ != 0)
		att.body["staging"] = {{"addr", staging_addr_},
		                       {"len", uint64_t{pager::kStagingPages} * kPage}};
	att.fds = {uffd_, sv[1]};
	// Once opened, always sent: the shared windows are registered on it.
	if (window_uffd_ >= 0)
		att.fds.push_back(window_uffd_);
	auto ar = c->call_ok(att);
	close(sv[1]);
	if (!ar) {
		close(sv[0]);
		return ar.status();
	}
	close_fds(*ar);
	uint64_t id = 0;
	if (!get_u64(ar->body, "uffd_id", &id)) {
		close(sv[0]);
		return Status(Code::kProtocol, "attach reply lacks uffd_id");
	}
	// WP_ASYNC: the key of the content hashes the evictor sends back.
	uint64_t key = 0;
	(void)get_u64(ar->body, "content_key", &key);
	content_key_.store(key, std::memory_order_relaxed);
	// The old evictor may be in madvise for a drop the old pager asked for,
	// blocked until the new pager reads its REMOVE event. That event must
	// reach the new pager before any "map": with no mapping to apply it to,
	// it is ignored, and the pages are missing at the map, so they are
	// fetched (the old pager wrote them back before asking). After a map
	// it would read as the program's own MADV_DONTNEED and turn the pages
	// into zeroes. Retired, the evictor starts no other drop.
	// The program's own drops in flight finish the same way, and are
	// reported in the maps ("removed"), so those pages read as zero; new
	// ones wait until the maps are sent (remove_begin).
	drops_.remap_begin();
	auto reopen = [this] { drops_.remap_end(); };
	retire_evictor();
	// Then the pages the old pager had moved into staging go back to
	// their sources, and every slot is emptied (its REMOVE event, which
	// this pager only notes, waits like a drop's): from the first "map"
	// on, the new pager finds each page in its source or in its module.
	bool settled = wait_for_drops(c->fd());
	if (settled && restore) {
		settled = restore_staging(c->fd());
		if (settled) {
			post_empty_staging();
			settled = wait_for_drops(c->fd());
		}
	}
	if (!settled) {
		reopen();
		close(sv[0]);
		return Status(Code::kUnavailable,
		              "memfedd at " + opt_.socket_path + " went away while reattaching");
	}
	std::vector<Span> removed = drops_.to_report();
	ctl_ = std::move(*c);
	uffd_id_ = id;
	connected_ = true;
	for (auto &m : mappings_) {
		Status st = send_map(*m, /*adopt=*/true, removed);
		if (!st) {
			connected_ = false;
			reopen();
			close(sv[0]);
			return st;
		}
	}
	// Reported: this pager writes their zeroes back before answering the
	// maps.
	drops_.reported();
	reopen();
	// The evictor thread is made once, here at the first attach, and then
	// serves every later channel. A thread's start reads the global locale
	// (glibc's __ctype_init), which the program's setlocale() put in the
	// remote heap; a new evictor whose start faults on a page while the
	// pager, at its budget, waits for that evictor to drop pages would hang
	// the process for good (the hour soak found one). At the first attach
	// the program's main() has not run, so its locale is glibc's static
	// one. A forked child has no threads: its evictor is made only now, so
	// that the pages its start touches are served by the child's maps, and
	// just after those pages were touched here (start_evictor).
	Status ev = start_evictor(sv[0]);
	if (!ev) {
		connected_ = false;
		return ev;
	}
	cv_.notify_all();
	return Status::ok();
}

Status PagerLink::send_map(Mapping &m, bool adopt, const std::vector<Span> &removed)
{
	Message req = request(pager::kOpMap,
	                      {{"uffd_id", uffd_id_},
	                       {"region", m.region},
	                       {"region_offset", m.region_offset},
	                       {"addr", m.addr},
	                       {"length", m.length},
	                       {"kind", m.shared ? pager::kKindShared : pager::kKindPrivate},
	                       {"writable", m.writable},
	                       {"register_mode", m.shared ? shared_mode_ : private_mode_},
	                       {"budget", m.budget},
	                       {"prefetch", m.prefetch}});
	if (adopt && m.shared)
		req.fds = {m.memfd};
	if (!m.shared) {
		json rm = json::array();
		size_t untold = 0;
		for (auto [a, n] : removed) {
			uint64_t lo = std::max(a & ~(kPage - 1), m.addr);
			uint64_t hi =
			        std::min((a + n + kPage - 1) & ~(kPage - 1), m.addr + m.length);
			if (lo >= hi)
				continue;
			if (rm.size() < pager::kMaxRemovedRanges)
				rm.push_back({lo, hi - lo});
			else
				untold++;
		}
		// The monitor settles drops every few ms, so a handful is usual.
		if (untold > 0)
			LOG_ERROR("libmemfed",
			          "%zu dropped ranges of the mapping at 0x%llx are past the %u "
			          "a map can report: the new memfedd may serve their old content",
			          untold, (unsigned long long)m.addr, pager::kMaxRemovedRanges);
		if (!rm.empty())
			req.body["removed"] = std::move(rm);
	}
	auto r = ctl_.call(req);
	if (!r)
		return r.status();
	Status st = control::reply_status(*r);
	uint64_t id = 0;
	if (st && !get_u64(r->body, "mapping_id", &id))
		st = Status(Code::kProtocol, "map reply lacks mapping_id");
	if (st && m.shared && !adopt) {
		if (r->fds.empty())
			st = Status(Code::kProtocol,
			            "map reply for a shared mapping carries no memfd");
		else {
			m.memfd = r->fds[0];
			r->fds.erase(r->fds.begin());
		}
	}
	close_fds(*r);
	if (!st)
		return st;
	m.mapping_id = id;
	if (m.shared && !adopt) {
		int prot = PROT_READ | (m.writable ? PROT_WRITE : 0);
		void *p = mmap(reinterpret_cast<void *>(m.addr), m.length, prot,
		               MAP_SHARED | MAP_FIXED, m.memfd, 0);
		if (p == MAP_FAILED)
			return Status::from_errno(errno,
			                          "mapping the memfd of region '" + m.region + "'");
		int rc = pager::uffd_register(uffd_of(m), m.addr, m.length, shared_mode_);
		if (rc < 0)
			return Status::from_errno(-rc, "registering the mapping of region '" +
			                                       m.region + "' with userfaultfd");
	}
	if (m.shared) {
		auto rr = ctl_.call_ok(request(pager::kOpMapReady, {{"mapping_id", id}}));
		if (!rr)
			return rr.status();
		close_fds(*rr);
	}
	return Status::ok();
}

Result<Message> PagerLink::call_locked(const Message &req)
{
	if (!connected_)
		return Status(Code::kUnavailable,
		              "memfedd at " + opt_.socket_path + " is away; reconnecting");
	auto r = ctl_.call(req);
	if (!r) {
		connected_ = false;
		return r.status();
	}
	return r;
}

Result<Message> PagerLink::call(const Message &req)
{
	std::unique_lock<std::mutex> lk(mu_);
	return call_locked(req);
}

Result<Message> PagerLink::pager_call(std::unique_lock<std::mutex> &lk, const Message &req)
{
	for (;;) {
		wait_connected(lk);
		if (!connected_)
			return Status(Code::kUnavailable, closed_reason());
		auto r = ctl_.call(req);
		if (r)
			return r;
		// The daemon went away mid-call: the monitor reconnects and
		// re-maps; the request is sent again on the new connection.
		connected_ = false;
	}
}

Result<uint64_t> PagerLink::map_shared(const std::string &region, uint64_t offset, uint64_t length,
                                       bool writable, uint64_t budget, bool prefetch, uint64_t hint)
{
	if (length == 0 || length % kPage || offset % kPage)
		return Status(Code::kInvalidArgument, "mapping of region '" + region +
		                                              "': offset and length must be "
		                                              "page multiples and length non-zero");
	void *res = mmap(reinterpret_cast<void *>(hint), length, PROT_NONE,
	                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (res == MAP_FAILED)
		return Status::from_errno(errno,
		                          "reserving address space for region '" + region + "'");
	auto m = std::make_unique<Mapping>();
	m->region = region;
	m->region_offset = offset;
	m->addr = reinterpret_cast<uint64_t>(res);
	m->length = length;
	m->shared = true;
	m->writable = writable;
	m->budget = budget;
	m->prefetch = prefetch;
	std::unique_lock<std::mutex> lk(mu_);
	wait_connected(lk);
	Status st = connected_ ? send_map(*m, false) : Status(Code::kUnavailable, closed_reason());
	if (!st) {
		if (m->mapping_id)
			(void)call_locked(
			        request(pager::kOpUnmap, {{"mapping_id", m->mapping_id}}));
		if (m->memfd >= 0)
			close(m->memfd);
		munmap(res, length);
		return st;
	}
	uint64_t addr = m->addr;
	mappings_.push_back(std::move(m));
	return addr;
}

Status PagerLink::map_private(const std::string &region, uint64_t addr, uint64_t length,
                              uint64_t budget, PrivateForkHooks hooks)
{
	auto m = std::make_unique<Mapping>();
	m->region = region;
	m->addr = addr;
	m->length = length;
	m->writable = true;
	m->budget = budget;
	m->hooks = std::move(hooks);
	std::unique_lock<std::mutex> lk(mu_);
	int rc = pager::uffd_register(uffd_, addr, length, private_mode_);
	if (rc < 0)
		return Status::from_errno(-rc, "registering the memory backed by region '" +
		                                       region + "' with userfaultfd");
	wait_connected(lk);
	Status st = connected_ ? send_map(*m, false) : Status(Code::kUnavailable, closed_reason());
	if (!st) {
		pager::uffd_unregister(uffd_, addr, length);
		return st;
	}
	mappings_.push_back(std::move(m));
	publish_spans();
	return Status::ok();
}

PagerLink::Mapping *PagerLink::find(uint64_t addr)
{
	for (auto &m : mappings_)
		if (addr >= m->addr && addr < m->addr + m->length)
			return m.get();
	return nullptr;
}

const PagerLink::Mapping *PagerLink::find(uint64_t addr) const
{
	return const_cast<PagerLink *>(this)->find(addr);
}

Status PagerLink::unmap(uint64_t addr)
{
	std::unique_lock<std::mutex> lk(mu_);
	Mapping *m = find(addr);
	if (!m || m->addr != addr)
		return Status(
		        Code::kNotFound, "no memfed mapping starts at 0x" + [addr] {
			        char b[32];
			        snprintf(b, sizeof(b), "%llx", (unsigned long long)addr);
			        return std::string(b);
		        }());
	for (;;) {
		auto r = pager_call(lk, request(pager::kOpUnmap, {{"mapping_id", m->mapping_id}}));
		if (!r)
			return r.status();
		close_fds(*r);
		Status st = control::reply_status(*r);
		// A mapping id from before a reconnection is unknown to the new
		// daemon until the monitor has re-mapped it: ask again.
		if (st.code() == Code::kNotFound && !connected_)
			continue;
		MF_RETURN_IF_ERROR(st);
		break;
	}
	pager::uffd_unregister(uffd_of(*m), m->addr, m->length);
	if (m->shared) {
		munmap(reinterpret_cast<void *>(m->addr), m->length);
		close(m->memfd);
	}
	mappings_.erase(std::find_if(mappings_.begin(), mappings_.end(),
	                             [m](const auto &p) { return p.get() == m; }));
	publish_spans();
	return Status::ok();
}

Status PagerLink::sync(uint64_t addr, uint64_t length)
{
	std::unique_lock<std::mutex> lk(mu_);
	Mapping *m = find(addr);
	if (!m || addr + length > m->addr + m->length)
		return Status(Code::kNotFound,
		              "sync of a range that is not inside one memfed mapping");
	uint64_t off = (addr - m->addr) & ~(kPage - 1);
	uint64_t len = length == 0 ? m->length - off : (addr + length - m->addr) - off;
	auto r = pager_call(
	        lk, request(pager::kOpSync,
	                    {{"mapping_id", m->mapping_id}, {"offset", off}, {"length", len}}));
	if (!r)
		return r.status();
	close_fds(*r);
	return control::reply_status(*r);
}

Result<std::pair<std::string, uint64_t>> PagerLink::locate(uint64_t addr) const
{
	std::lock_guard<std::mutex> lk(mu_);
	const Mapping *m = find(addr);
	if (!m)
		return Status(Code::kNotFound, "address is not inside a memfed mapping");
	return std::make_pair(m->region, m->region_offset + (addr - m->addr));
}

int PagerLink::memfd_at(uint64_t addr) const
{
	std::lock_guard<std::mutex> lk(mu_);
	const Mapping *m = find(addr);
	return m && m->shared ? m->memfd : -1;
}

void PagerLink::publish_spans()
{
	std::lock_guard<std::mutex> lk(spans_mu_);
	private_spans_.clear();
	for (auto &m : mappings_)
		if (!m->shared)
			private_spans_.push_back({m->addr, m->length});
}

// ---- threads ----

void *PagerLink::monitor_main(void *self)
{
	auto *l = static_cast<PagerLink *>(self);
	enter_link_thread(l->opt_.thread_init);
	pthread_setname_np(pthread_self(), "memfed-monitor");
	l->monitor_loop();
	return nullptr;
}

void *PagerLink::evictor_main(void *self)
{
	auto *l = static_cast<PagerLink *>(self);
	enter_link_thread(l->opt_.thread_init);
	// Named, so that it can be told from the program's threads (top -H).
	pthread_setname_np(pthread_self(), "memfed-evictor");
	l->evictor_serve();
	return nullptr;
}

void PagerLink::evictor_serve()
{
	int sock = -1;
	std::unique_lock<std::mutex> lk(spans_mu_);
	for (;;) {
		if (sock >= 0) {
			// The channel ended: its pager went away, or it was retired.
			if (evict_sock_ == sock) {
				evict_sock_ = -1;
				evict_sock_taken_ = false;
			}
			close(sock);
			sock = -1;
		}
		evictor_cv_.wait(lk, [this] {
			return evictor_stop_ || empty_staging_job_ ||
			       (evict_sock_ >= 0 && !evict_sock_taken_);
		});
		if (evictor_stop_)
			break;
		if (empty_staging_job_) {
			empty_staging_job_ = false;
			lk.unlock();
			empty_staging();
			lk.lock();
			drops_inflight_--;
			evictors_cv_.notify_all();
			continue;
		}
		sock = evict_sock_;
		evict_sock_taken_ = true;
		lk.unlock();
		evictor_loop(sock);
		lk.lock();
	}
	evictor_running_ = false;
	evictors_cv_.notify_all();
}

Status PagerLink::start_monitor()
{
	int rc = pthread_create(&monitor_, nullptr, monitor_main, this);
	if (rc != 0)
		return Status::from_errno(rc, "starting the pager link's monitor thread");
	monitor_running_ = true;
	return Status::ok();
}

Status PagerLink::start_evictor(int sock)
{
	{
		std::lock_guard<std::mutex> lk(spans_mu_);
		evict_sock_ = sock;
		evict_sock_taken_ = false;
		evictor_cv_.notify_all();
		if (evictor_running_)
			return Status::ok();
		evictor_running_ = true;
		evictor_stop_ = false;
	}
	touch_global_ctype();
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t t;
	int rc = pthread_create(&t, &attr, evictor_main, this);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		std::lock_guard<std::mutex> lk(spans_mu_);
		evict_sock_ = -1;
		evict_sock_taken_ = false;
		evictor_running_ = false;
		close(sock);
		return Status::from_errno(rc, "starting the evictor thread");
	}
	return Status::ok();
}

bool PagerLink::wait_for_drops(int fd)
{
	uint64_t start = monotonic_ms();
	bool logged = false;
	for (;;) {
		{
			std::unique_lock<std::mutex> lk(spans_mu_);
			if (drops_inflight_ == 0) {
				lk.unlock();
				if (drops_.wait_inflight(std::chrono::milliseconds(100)))
					return true;
			} else {
				evictors_cv_.wait_for(lk, std::chrono::milliseconds(100));
			}
		}
		pollfd p = {fd, 0, 0};
		if (poll(&p, 1, 0) > 0)
			return false; // hung up
		if (!logged && monotonic_ms() - start > 5000) {
			logged = true;
			LOG_WARN("libmemfed",
			         "reattaching to memfedd at %s: drops of memory from before "
			         "are still waiting for their events to be read",
			         opt_.socket_path.c_str());
		}
	}
}

bool PagerLink::stop_evictor()
{
	std::unique_lock<std::mutex> lk(spans_mu_);
	evictor_stop_ = true;
	evictor_cv_.notify_all();
	return evictors_cv_.wait_for(lk, std::chrono::seconds(5),
	                             [this] { return !evictor_running_; });
}

void PagerLink::retire_evictor()
{
	// Under spans_mu_, so the evictor cannot close (and the fd be reused)
	// between the check and the shutdown.
	std::lock_guard<std::mutex> lk(spans_mu_);
	if (evict_sock_ >= 0) {
		shutdown(evict_sock_, SHUT_RDWR);
		if (!evict_sock_taken_)
			close(evict_sock_); // the evictor never saw it
	}
	evict_sock_ = -1;
	evict_sock_taken_ = false;
}

bool PagerLink::settle_removes()
{
	auto to_settle = drops_.settle_ranges();
	if (!to_settle)
		return true; // a pager is being attached: later
	auto &[ranges, upto] = *to_settle;
	if (ranges.empty())
		return false;
	{
		std::lock_guard<std::mutex> lk(mu_);
		if (!connected_)
			return true;
		for (auto [addr, len] : ranges) {
			// A drop may span several mappings (or lie outside the ones
			// left): each part inside a private mapping is synced.
			for (auto &m : mappings_) {
				if (m->shared)
					continue;
				uint64_t lo = std::max(addr & ~(kPage - 1), m->addr);
				uint64_t hi = std::min((addr + len + kPage - 1) & ~(kPage - 1),
				                       m->addr + m->length);
				if (lo >= hi)
					continue;
				auto r = call_locked(
				        request(pager::kOpSync, {{"mapping_id", m->mapping_id},
				                                 {"offset", lo - m->addr},
				                                 {"length", hi - lo}}));
				if (!r)
					return true; // memfedd went away: the reattach reports them
				close_fds(*r);
				Status st = control::reply_status(*r);
				// not_found: the region was deleted, nothing to make durable.
				if (!st && st.code() != Code::kNotFound) {
					LOG_DEBUG("libmemfed", "syncing dropped memory: %s",
					          st.to_string().c_str());
					return true;
				}
			}
		}
	}
	// Durable: forget them, and the pieces the evictor split them into
	// meanwhile (inside the synced ranges); drops made since stay.
	return drops_.settled(upto);
}

void PagerLink::monitor_loop()
{
	uint64_t backoff_ms = 10;
	uint64_t away_since = 0, last_away_log = 0; // monotonic ms; 0: attached
	bool unsettled = true;                      // unsettled program drops may be waiting
	while (!stopping_) {
		int fd;
		bool up;
		{
			std::lock_guard<std::mutex> lk(mu_);
			fd = ctl_.fd();
			up = connected_;
		}
		if (up) {
			// events = 0: report only hang-up and errors, so the
			// replies other threads wait for are left alone.
			pollfd p[2] = {{fd, 0, 0}, {stop_fd_, POLLIN, 0}};
			int n = poll(p, 2, unsettled ? kSettleIntervalMs : 1000);
			if (n == 0) {
				unsettled = settle_removes();
				continue;
			}
			if (n < 0 || (p[1].revents & POLLIN))
				continue;
			if (!(p[0].revents & (POLLHUP | POLLERR | POLLNVAL)))
				continue;
			std::lock_guard<std::mutex> lk(mu_);
			if (ctl_.fd() == fd && connected_) {
				LOG_WARN("libmemfed", "lost memfedd at %s; reconnecting",
				         opt_.socket_path.c_str());
				connected_ = false;
			}
			continue;
		}
		uint64_t now = monotonic_ms();
		if (away_since == 0)
			away_since = last_away_log = now;
		Status st;
		{
			std::lock_guard<std::mutex> lk(mu_);
			if (connected_)
				continue;
			st = establish();
			if (st) {
				reconnects_++;
				backoff_ms = 10;
				LOG_INFO("libmemfed", "reattached to memfedd at %s after %.1f s",
				         opt_.socket_path.c_str(), double(now - away_since) / 1000);
				away_since = 0;
				continue;
			}
		}
		LOG_DEBUG("libmemfed", "reconnect: %s", st.to_string().c_str());
		uint64_t away = now - away_since;
		if (opt_.soft_grace_ms && away >= opt_.soft_grace_ms) {
			LOG_ERROR("libmemfed",
			          "memfedd at %s has been away for %.1f s, past the soft grace of "
			          "%.1f s; giving up its memory: every access to it raises SIGBUS "
			          "(last error: %s)",
			          opt_.socket_path.c_str(), double(away) / 1000,
			          double(opt_.soft_grace_ms) / 1000, st.to_string().c_str());
			{
				std::lock_guard<std::mutex> lk(mu_);
				given_up_ = true;
				cv_.notify_all();
			}
			serve_sigbus();
			return;
		}
		if (opt_.away_log_ms && now - last_away_log >= opt_.away_log_ms) {
			last_away_log = now;
			if (opt_.soft_grace_ms)
				LOG_WARN("libmemfed",
				         "memfedd at %s away for %.0f s; threads that touch its "
				         "memory "
				         "wait, and get SIGBUS in %.0f s (soft mode): %s",
				         opt_.socket_path.c_str(), double(away) / 1000,
				         double(opt_.soft_grace_ms - away) / 1000,
				         st.to_string().c_str());
			else
				LOG_WARN("libmemfed",
				         "memfedd at %s away for %.0f s; threads that touch its "
				         "memory "
				         "wait until it is back (hard mode): %s",
				         opt_.socket_path.c_str(), double(away) / 1000,
				         st.to_string().c_str());
		}
		pollfd p = {stop_fd_, POLLIN, 0};
		poll(&p, 1, int(backoff_ms));
		backoff_ms = std::min<uint64_t>(backoff_ms * 2, 500);
	}
}

void PagerLink::wait_connected(std::unique_lock<std::mutex> &lk)
{
	cv_.wait(lk, [this] { return connected_ || stopping_ || given_up_; });
}

std::string PagerLink::closed_reason() const
{
	if (given_up_)
		return "memfedd at " + opt_.socket_path +
		       " stayed away past the soft grace; this process's memfed memory is "
		       "given up";
	return "the pager link is closing";
}

void PagerLink::serve_sigbus()
{
	// Threads the dead pager had read faults of wait on a uffd without a
	// message queued: wake them, so they fault again and are seen here.
	struct Wake {
		int uffd;
		uint64_t addr, len;
	};
	std::vector<Wake> wakes;
	{
		std::lock_guard<std::mutex> lk(mu_);
		for (auto &m : mappings_)
			wakes.push_back({uffd_of(*m), m->addr, m->length});
	}
	for (auto [uffd, addr, len] : wakes)
		(void)pager::uffd_wake(uffd, addr, len);
	uint64_t raised = 0;
	// Both uffds: the shared windows' faults come on the window uffd.
	pollfd p[3] = {{stop_fd_, POLLIN, 0}, {uffd_, POLLIN, 0}, {window_uffd_, POLLIN, 0}};
	while (!stopping_) {
		int n = poll(p, window_uffd_ >= 0 ? 3 : 2, 1000);
		if (n < 0 && errno != EINTR)
			return;
		if (n <= 0 || (p[0].revents & POLLIN))
			continue;
		int fd = (p[1].revents & POLLIN) ? uffd_ : window_uffd_;
		uffd_msg msgs[16];
		ssize_t got = read(fd, msgs, sizeof(msgs));
		if (got < 0)
			continue;
		for (size_t i = 0; i < size_t(got) / sizeof(uffd_msg); i++) {
			const uffd_msg &msg = msgs[i];
			// Address-space events are acknowledged by the read: with
			// the memory given up, there is nothing to keep in step.
			if (msg.event != UFFD_EVENT_PAGEFAULT)
				continue;
			pid_t tid = pid_t(msg.arg.pagefault.feat.ptid);
			if (raised++ == 0 || raised % 1000 == 0)
				LOG_ERROR(
				        "libmemfed",
				        "SIGBUS to thread %d: it touched 0x%llx, memory of memfedd "
				        "at %s, which is gone (soft mode)",
				        int(tid), (unsigned long long)msg.arg.pagefault.address,
				        opt_.socket_path.c_str());
			// The thread is woken by the signal; without a thread id
			// the whole process gets it.
			if (tid <= 0 || syscall(SYS_tgkill, getpid(), tid, SIGBUS) < 0)
				kill(getpid(), SIGBUS);
		}
	}
}

void PagerLink::evictor_loop(int sock)
{
	// The pager sends either record; the magic (first in both) tells which.
	union {
		uint32_t magic;
		pager::DropRequest drop;
		pager::MoveRequest move;
	} rec;
	pager::DropRequest &req = rec.drop;
	for (;;) {
		ssize_t n = recv(sock, &rec, sizeof(rec), 0);
		if (n == 0 || (n < 0 && errno != EINTR))
			return;
		if (n < 0)
			continue;
		if (size_t(n) >= pager::move_request_size(0, 0) &&
		    rec.magic == pager::kMoveRequestMagic) {
			if (!serve_move(sock, rec.move, size_t(n)))
				return;
			continue;
		}
		if (size_t(n) < pager::drop_request_size(0) ||
		    req.magic != pager::kDropRequestMagic || req.count == 0 ||
		    req.count > pager::kMaxDropRanges ||
		    uint64_t(n) != pager::drop_request_size(req.count)) {
			LOG_ERROR("libmemfed",
			          "malformed drop request of %zd bytes from the pager; "
			          "closing the evict channel",
			          n);
			return;
		}
		pager::DropReply rep{pager::kDropReplyMagic, 0, req.seq};
		uint32_t keep = 0;
		{
			// Only the check holds spans_mu_: madvise may wait for the
			// pager to read its REMOVE event, maybe a pager that is
			// still being attached under that lock.
			std::lock_guard<std::mutex> sk(spans_mu_);
			// Retired (its pager is gone): a drop now would reach the
			// next pager as a REMOVE it cannot tell from the program's.
			if (evict_sock_ != sock)
				return;
			drops_inflight_++;
			for (uint32_t i = 0; i < req.count; i++) {
				const auto &r = req.ranges[i];
				bool inside =
				        r.addr % kPage == 0 && r.length % kPage == 0 &&
				        r.addr + r.length > r.addr &&
				        std::any_of(private_spans_.begin(), private_spans_.end(),
				                    [&r](const Span &s) {
					                    return r.addr >= s.first &&
					                           r.addr + r.length <=
					                                   s.first + s.second;
				                    });
				if (inside)
					req.ranges[keep++] = r;
				else
					LOG_WARN("libmemfed",
					         "pager asked to drop 0x%llx+%llu outside every "
					         "private mapping; ignored",
					         (unsigned long long)r.addr,
					         (unsigned long long)r.length);
			}
		}
		// The pager wrote these pages back durably before asking, after
		// it had read the events of the program's earlier drops: those
		// drops are settled here.
		for (uint32_t i = 0; i < keep; i++)
			drops_.forget(req.ranges[i].addr, req.ranges[i].length, req.sent_ns);
		{
			std::lock_guard<std::mutex> ek(evict_mu_);
			for (uint32_t i = 0; i < keep; i++)
				if (syscall(SYS_madvise, req.ranges[i].addr, req.ranges[i].length,
				            MADV_DONTNEED) < 0 &&
				    rep.error == 0)
					rep.error = -errno;
		}
		{
			std::lock_guard<std::mutex> sk(spans_mu_);
			drops_inflight_--;
		}
		evictors_cv_.notify_all();
		if (send(sock, &rep, sizeof(rep), MSG_NOSIGNAL) < 0)
			return;
	}
}

} // namespace memfed::client
