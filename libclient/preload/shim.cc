// Start-up of libmemfed-preload.so: reads MEMFED_RUN, connects to memfedd,
// creates this process's heap region and registers the heap with the pager.
#include "libclient/preload/shim.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "libclient/preload/file_hooks.h"
#include "libclient/preload/internal_alloc.h"

namespace memfed::preload
{

namespace
{

constexpr uint64_t kHeapAlign = uint64_t{32} << 20;

Shim *g_shim = nullptr;
std::atomic<bool> g_heap_ready{false};

std::vector<client::Span> live_spans()
{
	// Called by PagerLink::fork_prepare with heap_mu held (see fork_prepare).
	return g_shim->ranges->used_spans();
}

// Called in a forked child: its heap region is named after its own pid.
std::string child_region_name(const std::string &)
{
	g_shim->heap_region = g_shim->cfg.heap_prefix() + std::to_string(getpid());
	return g_shim->heap_region;
}

Status create_heap(Shim *s)
{
	auto link = shim_link();
	if (!link)
		return link.status();
	// A process cannot delete its own heap region as it exits (the pager
	// still maps it): whoever starts next collects those of dead processes.
	(void)(*link)->collect_dead(s->cfg.heap_prefix());
	s->heap_region = s->cfg.heap_prefix() + std::to_string(getpid());
	auto make = [&]() {
		control::Message m;
		m.body = {{"op", "region.create"},
		          {"name", s->heap_region},
		          {"size", s->cfg.heap_size},
		          {"mode", 0600}};
		return (*link)->call(m);
	};
	auto r = make();
	if (r && control::reply_status(*r).code() == Code::kAlreadyExists) {
		// Left by the image this process exec'd from (same pid): gone now,
		// but busy until the pager has let go of its pages; then by force.
		control::Message d;
		d.body = {{"op", "region.delete"}, {"name", s->heap_region}};
		for (int attempt = 0; attempt < 100; attempt++) {
			auto del = (*link)->call(d);
			if (!del || control::reply_status(*del).code() != Code::kBusy)
				break;
			if (attempt == 98)
				d.body["force"] = true;
			usleep(20 * 1000);
		}
		r = make();
	}
	if (!r)
		return r.status();
	MF_RETURN_IF_ERROR(control::reply_status(*r));

	uint64_t size = s->cfg.heap_size;
	void *p = raw_mmap(nullptr, size + kHeapAlign, PROT_READ | PROT_WRITE,
	                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return Status::from_errno(errno, "reserving " + std::to_string(size) +
		                                         " bytes of address space for the heap");
	uint64_t start = reinterpret_cast<uint64_t>(p);
	uint64_t base = (start + kHeapAlign - 1) & ~(kHeapAlign - 1);
	if (base > start)
		raw_munmap(p, base - start);
	if (start + kHeapAlign > base)
		raw_munmap(reinterpret_cast<void *>(base + size), start + kHeapAlign - base);
	client::PrivateForkHooks hooks{child_region_name, live_spans, s->cfg.heap_prefix()};
	Status st = (*link)->map_private(s->heap_region, base, size, s->cfg.heap_budget, hooks);
	if (!st) {
		raw_munmap(reinterpret_cast<void *>(base), size);
		return st;
	}
	s->heap_base = base;
	s->heap_size = size;
	s->ranges.emplace(base, size);
	return Status::ok();
}

// Fork: the order of the locks is heap_mu, the link's, the internal
// allocator's (the link allocates while preparing the child's copy).
void fork_prepare()
{
	t_internal++;
	g_shim->heap_mu.lock();
	if (g_shim->link)
		g_shim->link->fork_prepare();
	internal_lock_all();
}

void fork_parent()
{
	internal_unlock_all();
	if (g_shim->link)
		g_shim->link->fork_parent();
	g_shim->heap_mu.unlock();
	t_internal--;
}

void fork_child()
{
	internal_unlock_all();
	if (g_shim->link)
		g_shim->link->fork_child();
	g_shim->heap_mu.unlock();
	t_internal--;
}

__attribute__((constructor)) void shim_init()
{
	const char *env = getenv(client::kRunEnv);
	if (!env || !*env) {
		heap_settled();
		return;
	}
	InternalScope in;
	auto cfg = client::RunConfig::from_json(env);
	if (!cfg) {
		fprintf(stderr, "memfed preload: %s\n", cfg.status().message().c_str());
		_exit(2);
	}
	auto *s = new Shim();
	s->cfg = std::move(*cfg);
	g_shim = s;
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	file_adopt_inherited();
	if (s->cfg.heap_size == 0) {
		heap_settled();
		return;
	}
	Status st = create_heap(s);
	// memfedd away as the program starts (dying, restarting): wait as the
	// run's hard or soft mode says, like a program already running.
	uint64_t waited_ms = 0, backoff_ms = 10, next_log_ms = 10000;
	while (st.code() == Code::kUnavailable &&
	       (s->cfg.soft_grace_ms == 0 || waited_ms < s->cfg.soft_grace_ms)) {
		if (waited_ms >= next_log_ms) {
			next_log_ms += 10000;
			char msg[256];
			snprintf(msg, sizeof(msg), "pid %d waits for memfedd to start its heap: %s",
			         getpid(), st.message().c_str());
			shim_log(msg);
		}
		usleep(useconds_t(backoff_ms * 1000));
		waited_ms += backoff_ms;
		backoff_ms = backoff_ms < 500 ? backoff_ms * 2 : 500;
		st = create_heap(s);
	}
	if (!st) {
		fprintf(stderr,
		        "memfed preload: cannot put the heap of pid %d in remote memory: %s\n",
		        getpid(), st.to_string().c_str());
		_exit(st.exit_code());
	}
	g_heap_ready.store(true, std::memory_order_release);
	heap_settled();
}

} // namespace

Shim *shim()
{
	return g_shim;
}

bool heap_ready()
{
	return g_heap_ready.load(std::memory_order_acquire);
}

Result<client::PagerLink *> shim_link()
{
	Shim *s = g_shim;
	std::lock_guard<std::mutex> lk(s->link_mu);
	if (!s->link) {
		client::PagerLink::Options o;
		o.socket_path =
		        s->cfg.socket.empty() ? control::default_socket_path() : s->cfg.socket;
		o.process_budget = s->cfg.heap_budget;
		o.soft_grace_ms = s->cfg.soft_grace_ms;
		o.handle_fork = false; // the shim's own atfork handlers call it
		// The link's threads run shim code only: never the remote heap.
		o.thread_init = [] { t_internal++; };
		auto l = client::PagerLink::open(o);
		if (!l)
			return l.status();
		s->link = std::move(*l);
	}
	return s->link.get();
}

void *raw_mmap(void *addr, size_t len, int prot, int flags, int fd, long off)
{
	// syscall() returns -1 and sets errno on failure.
	long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
	return r == -1 ? MAP_FAILED : reinterpret_cast<void *>(r);
}

int raw_munmap(void *addr, size_t len)
{
	return int(syscall(SYS_munmap, addr, len));
}
int raw_madvise(void *addr, size_t len, int advice)
{
	return int(syscall(SYS_madvise, addr, len, advice));
}
int raw_mprotect(void *addr, size_t len, int prot)
{
	return int(syscall(SYS_mprotect, addr, len, prot));
}

void shim_log(const char *msg)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "memfed preload: %s\n", msg);
	if (n > 0)
		(void)!write(2, buf, size_t(n) < sizeof(buf) ? size_t(n) : sizeof(buf) - 1);
}

} // namespace memfed::preload
