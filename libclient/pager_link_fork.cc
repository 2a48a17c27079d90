// PagerLink across fork(): the pthread_atfork handlers and the child's own
// heap region (a copy-on-write clone of the parent's, or a copy), made while
// the parent waits in fork() with its evictions held (pager_link.h).
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "daemon/common/log.h"
#include "daemon/pager/uffd.h"
#include "libclient/pager_link.h"
#include "libclient/pager_link_util.h"

namespace memfed::client
{

using namespace link_util;
using nlohmann::json;

namespace
{

// A forked child's copy of its parent's memory goes in requests of up to
// this much, so that no one request holds the daemon's control thread long.
constexpr uint64_t kCopyChunk = uint64_t{64} << 20;

} // namespace

Status PagerLink::collect_dead_locked(const std::string &prefix)
{
	std::vector<std::string> names;
	MF_RETURN_IF_ERROR(control::for_each_region(
	        ctl_, prefix, [&](const json &reg) { names.push_back(reg.value("name", "")); }));
	for (const std::string &name : names) {
		if (name.rfind(prefix, 0) != 0)
			continue;
		char *end = nullptr;
		long pid = strtol(name.c_str() + prefix.size(), &end, 10);
		if (pid <= 0 || *end != 0 || pid == getpid())
			continue;
		if (kill(pid_t(pid), 0) < 0 && errno == ESRCH)
			(void)ctl_.call(request("region.delete", {{"name", name}}));
	}
	return Status::ok();
}

Status PagerLink::collect_dead(const std::string &prefix)
{
	std::unique_lock<std::mutex> lk(mu_);
	if (!connected_)
		return Status(Code::kUnavailable, "memfedd is away");
	return collect_dead_locked(prefix);
}

// In the child: makes the child's region of a private mapping, holding every
// page the child does not (resident pages reached the child as copy-on-write
// copies; the others live only in the parent's region, which stays as it was
// at fork because the parent's evictions are held, and which holds the
// parent's staged pages because fork_prepare synced them). First as a
// copy-on-write clone of the parent's part of its region at the module
// (region.clone), which costs a table entry whatever the heap holds; where
// the module cannot clone (an older pool, a region on another module), by
// copying the pages.
// REQUIRES: ctl_ connected (a connection of the child's own).
Status PagerLink::copy_for_child(Mapping &m)
{
	std::string child = m.hooks.child_region_name ? m.hooks.child_region_name(m.region)
	                                              : m.region + "." + std::to_string(getpid());
	if (!m.hooks.dead_prefix.empty())
		(void)collect_dead_locked(m.hooks.dead_prefix);
	auto clone = [&] {
		return ctl_.call(request("region.clone", {{"name", m.region},
		                                          {"offset", m.region_offset},
		                                          {"length", m.length},
		                                          {"to", child},
		                                          {"mode", 0600}}));
	};
	auto cl = clone();
	if (cl && control::reply_status(*cl).code() == Code::kAlreadyExists) {
		// Left by a dead process that had this pid.
		(void)ctl_.call(request("region.delete", {{"name", child}}));
		cl = clone();
	}
	if (!cl)
		return cl.status();
	Status cloned = control::reply_status(*cl);
	if (cloned.is_ok()) {
		m.region = child;
		m.region_offset = 0;
		return Status::ok();
	}
	if (cloned.code() == Code::kUnavailable)
		return cloned; // the module is away: the caller tries again
	LOG_DEBUG("libmemfed", "forked child: no clone of region '%s' (%s); copying it",
	          m.region.c_str(), cloned.to_string().c_str());
	auto shown = ctl_.call_ok(request("region.show", {{"name", m.region}}));
	if (!shown)
		return shown.status();
	uint64_t size = 0;
	if (!shown->body.contains("region") || !get_u64(shown->body["region"], "size", &size))
		return Status(Code::kProtocol, "region.show reply lacks region.size");
	auto make = [&] {
		return ctl_.call(request("region.create",
		                         {{"name", child}, {"size", size}, {"mode", 0600}}));
	};
	auto cr = make();
	if (cr && control::reply_status(*cr).code() == Code::kAlreadyExists) {
		// Left by a dead process that had this pid.
		(void)ctl_.call(request("region.delete", {{"name", child}}));
		cr = make();
	}
	if (!cr)
		return cr.status();
	MF_RETURN_IF_ERROR(control::reply_status(*cr));

	std::vector<Span> spans =
	        m.hooks.live_spans ? m.hooks.live_spans() : std::vector<Span>{{0, m.length}};
	std::vector<unsigned char> vec;
	for (auto [off, len] : spans) {
		if (len == 0 || off + len > m.length)
			continue;
		vec.resize(len / kPage);
		if (mincore(reinterpret_cast<void *>(m.addr + off), len, vec.data()) < 0)
			return Status::from_errno(errno, "mincore on a private mapping");
		uint64_t i = 0, pages = len / kPage;
		while (i < pages) {
			if (vec[i] & 1) {
				i++;
				continue;
			}
			uint64_t j = i;
			while (j < pages && !(vec[j] & 1) && (j - i + 1) * kPage <= kCopyChunk)
				j++;
			// The daemon copies module to module; pages never written
			// (zeros) stay unwritten in the new region.
			uint64_t at = off + i * kPage, n = (j - i) * kPage;
			auto cp = ctl_.call_ok(
			        request("region.copy", {{"name", m.region},
			                                {"offset", m.region_offset + at},
			                                {"length", n},
			                                {"to", child},
			                                {"to_offset", at},
			                                {"sparse", true}}));
			if (!cp)
				return cp.status();
			i = j;
		}
	}
	m.region = child;
	m.region_offset = 0;
	return Status::ok();
}

std::vector<PagerLink::SyncRange> PagerLink::staged_sync_ranges() const
{
	std::vector<uint64_t> sources;
	for (uint64_t src : staged_)
		if (src != 0)
			sources.push_back(src);
	// Sorted, so that contiguous sources make one range whatever slots
	// they sit in.
	std::sort(sources.begin(), sources.end());
	std::vector<SyncRange> out;
	const Mapping *m = nullptr;
	uint64_t end = 0; // of the last range's sources
	for (uint64_t src : sources) {
		if (m != nullptr && src < end)
			continue; // one source in two slots (record_move's F8 case)
		if (m != nullptr && src == end && src < m->addr + m->length) {
			out.back().length += kPage;
			end += kPage;
			continue;
		}
		m = find(src);
		// A source no private mapping holds any more: nothing of it
		// reaches the child.
		if (m == nullptr || m->shared) {
			m = nullptr;
			continue;
		}
		out.push_back({m->mapping_id, src - m->addr, kPage});
		end = src + kPage;
	}
	return out;
}

void PagerLink::sync_staged_for_fork(std::unique_lock<std::mutex> &lk)
{
	fork_unsynced_.clear();
	for (;;) {
		// At most one "sync" per range, and at most pager::kStagingPages
		// ranges.
		std::vector<SyncRange> ranges = staged_sync_ranges();
		if (ranges.empty())
			return;
		if (!connected_) {
			fork_unsynced_ = closed_reason();
			break;
		}
		Status synced;
		bool lost = false;
		for (const SyncRange &r : ranges) {
			auto rep = ctl_.call(request(pager::kOpSync, {{"mapping_id", r.mapping_id},
			                                              {"offset", r.offset},
			                                              {"length", r.length}}));
			if (!rep) {
				lost = true;
				break;
			}
			close_fds(*rep);
			Status st = control::reply_status(*rep);
			// not_found: the region was deleted; the child cannot
			// clone it either, and says so.
			if (!st && st.code() != Code::kNotFound) {
				synced = st;
				break;
			}
		}
		if (!lost) {
			if (synced)
				return;
			fork_unsynced_ = synced.to_string();
			break;
		}
		// memfedd went away mid-fork. Its successor's attach moves every
		// staged page back to its source (restore_staging), where the
		// child inherits it, so wait for the monitor's reattach (it takes
		// evict_mu_ for that) and look at the table again: empty, or
		// holding only what the new pager moved since.
		LOG_WARN("libmemfed",
		         "lost memfedd at %s while syncing staged pages for a fork; the fork "
		         "waits for the reattach, which moves them back",
		         opt_.socket_path.c_str());
		connected_ = false;
		evict_mu_.unlock();
		wait_connected(lk);
		evict_mu_.lock();
	}
	// The parent keeps its staged pages and goes on; the child must not
	// read the region's older content for them, and no retry here would
	// be bounded (a module that is away may stay away): the child exits
	// with this reason (fork_child).
	LOG_ERROR("libmemfed",
	          "fork: staged pages could not be made durable (%s); the child will exit "
	          "rather than read their older content",
	          fork_unsynced_.c_str());
}

void PagerLink::fork_prepare()
{
	std::unique_lock<std::mutex> lk(mu_);
	// Wait out a reconnection: the child's copy needs the daemon.
	wait_connected(lk);
	// No page leaves memory from here until the child has its copy.
	evict_mu_.lock();
	// The child does not inherit the staging area (MADV_DONTFORK) and
	// takes every page it lacks from the region at the module: the pages
	// staged now must be durable there first. The pager answers a sync
	// without the evictor, which now waits for the fork.
	sync_staged_for_fork(lk);
	lk.release();
	spans_mu_.lock();
	drops_.lock();
	fork_pipe_[0] = fork_pipe_[1] = -1;
	bool has_private = std::any_of(mappings_.begin(), mappings_.end(),
	                               [](const auto &m) { return !m->shared; });
	if (has_private && pipe2(fork_pipe_, O_CLOEXEC) < 0)
		fork_pipe_[0] = fork_pipe_[1] = -1;
}

void PagerLink::fork_parent()
{
	if (fork_pipe_[0] >= 0) {
		// Wait until the child has copied what it needs (or died).
		close(fork_pipe_[1]);
		char c;
		while (read(fork_pipe_[0], &c, 1) < 0 && errno == EINTR) {
		}
		close(fork_pipe_[0]);
	}
	drops_.unlock();
	spans_mu_.unlock();
	evict_mu_.unlock();
	mu_.unlock();
}

void PagerLink::fork_child()
{
	// Only this thread exists; the monitor and evictor stayed in the parent.
	auto die = [](const std::string &what, const char *instead = "zeroes") {
		std::string msg = "memfed: forked child " + std::to_string(getpid()) + ": " + what +
		                  "; exiting rather than reading " + instead + "\n";
		(void)!write(2, msg.data(), msg.size());
		_exit(70);
	};
	if (!fork_unsynced_.empty())
		die("its parent's staged pages are not durable on the module (" + fork_unsynced_ +
		            ")",
		    "their older content");
	if (fork_pipe_[0] >= 0)
		close(fork_pipe_[0]);
	ctl_ = control::Client();
	connected_ = false;
	close(uffd_);
	// The parent's uffds stay the parent's: the child opens fresh ones.
	bool window = window_uffd_ >= 0;
	if (window)
		close(window_uffd_);
	window_uffd_ = -1;
	if (evict_sock_ >= 0)
		close(evict_sock_);
	evict_sock_ = -1;
	evict_sock_taken_ = false;
	evictor_running_ = false; // it stayed in the parent, with its drops
	drops_inflight_ = 0;
	empty_staging_job_ = false;
	// The parent's staging area is not inherited (MADV_DONTFORK): the
	// child's establish() maps its own.
	staging_addr_ = 0;
	staged_.clear();
	drops_.unlock_in_child(); // so did the threads that were dropping
	monitor_running_ = false;
	// This thread is the program's: for the link's work, the static C
	// locale (see enter_link_thread); the program's is restored at the end.
	locale_t c_locale = newlocale(LC_ALL_MASK, "C", locale_t(0));
	locale_t program_locale = c_locale != locale_t(0) ? uselocale(c_locale) : locale_t(0);
	auto fd = pager::open_uffd(features_, user_mode_only_);
	if (!fd)
		die(fd.status().to_string());
	uffd_ = *fd;
	if (window) {
		auto wfd = pager::open_uffd(features_ & ~uint64_t(UFFD_FEATURE_WP_ASYNC),
		                            user_mode_only_);
		if (!wfd)
			die(wfd.status().to_string());
		window_uffd_ = *wfd;
	}
	// Register first: from here a missing page waits for the pager instead
	// of reading as zeroes.
	for (auto &m : mappings_) {
		int rc = pager::uffd_register(uffd_of(*m), m->addr, m->length,
		                              m->shared ? shared_mode_ : private_mode_);
		if (rc < 0)
			die(std::string("registering its memory with userfaultfd: ") +
			    strerrordesc_np(-rc));
	}
	if (fork_pipe_[1] >= 0) {
		// memfedd may die during the copy (or be away), or reply that the
		// module holding the region is away (unavailable: a module daemon
		// restarting): the copy starts again on a new connection, as the
		// hard or soft mode says. Any other error memfedd replies with
		// ends the child.
		std::vector<bool> copied(mappings_.size(), false);
		uint64_t backoff_ms = 10, since = monotonic_ms(), last_log = since;
		for (;;) {
			Status st;
			auto c = control::Client::connect(opt_.socket_path);
			if (c) {
				ctl_ = std::move(*c);
				for (size_t i = 0; i < mappings_.size() && st; i++) {
					if (mappings_[i]->shared || copied[i])
						continue;
					st = copy_for_child(*mappings_[i]);
					copied[i] = st.is_ok();
				}
				if (st)
					break;
				pollfd hup = {ctl_.fd(), 0, 0};
				if (poll(&hup, 1, 0) == 0 && st.code() != Code::kUnavailable)
					die("copying its private memory: " + st.to_string());
			} else {
				st = c.status();
			}
			uint64_t now = monotonic_ms();
			if (opt_.soft_grace_ms && now - since >= opt_.soft_grace_ms)
				die("memfedd stayed away past the soft grace: " + st.to_string());
			if (opt_.away_log_ms && now - last_log >= opt_.away_log_ms) {
				last_log = now;
				LOG_WARN("libmemfed",
				         "forked child %d waits for memfedd at %s to copy its "
				         "memory (%s)",
				         int(getpid()), opt_.socket_path.c_str(),
				         st.to_string().c_str());
			}
			usleep(useconds_t(backoff_ms * 1000));
			backoff_ms = std::min<uint64_t>(backoff_ms * 2, 500);
		}
		ctl_ = control::Client();
		char one = 1;
		(void)!write(fork_pipe_[1], &one, 1);
		close(fork_pipe_[1]);
	}
	spans_mu_.unlock();
	evict_mu_.unlock();
	Status st = establish();
	mu_.unlock();
	if (!st)
		LOG_WARN("libmemfed", "forked child could not attach yet (%s); retrying",
		         st.to_string().c_str());
	publish_spans();
	Status ms = start_monitor();
	if (!ms)
		die(ms.to_string());
	if (program_locale != locale_t(0))
		uselocale(program_locale);
}

} // namespace memfed::client
