// Colocation (colocation.cc) on real threads: a thread of the test process
// faults at random over a mapping larger than its budget, and the pager pins
// it, and the pager thread, to one CPU; what inherits the pin gets its CPUs
// back; the pin ends when the faults stop, leaving alone CPUs the program set
// itself.
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "daemon/pager/pager_fixture.h"
#include "tests/thread_util.h"

using namespace memfed;
using namespace memfed::pager;
using namespace memfed::pager::testing;
using memfed::testing::cpus_of;
using memfed::testing::thread_named;

namespace
{

int single_cpu(const cpu_set_t &s)
{
	if (CPU_COUNT(&s) != 1)
		return -1;
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &s))
			return c;
	return -1;
}

// A thread that reads random pages of `m` while `fault` is set; under a
// budget a tenth of the mapping, nearly every read faults.
struct Faulter {
	explicit Faulter(const TestClient::Mapped &m) : m_(m)
	{
		thread_ = std::thread([this] { run(); });
		while (tid.load() == 0)
			usleep(1000);
	}
	~Faulter()
	{
		quit = true;
		thread_.join();
		if (spawned_.joinable())
			spawned_.join();
	}
	void run()
	{
		tid = gettid();
		std::mt19937 rng(17);
		uint64_t pages = m_.length / kPage;
		while (!quit.load()) {
			if (!fault.load()) {
				usleep(1000);
				continue;
			}
			sum += m_.addr[(rng() % pages) * kPage];
			if (spawn.exchange(false)) {
				// Both inherit this thread's CPUs: a thread and a
				// child process, each waiting to be looked at.
				spawned_ = std::thread([this] {
					spawned_tid = gettid();
					while (!quit.load())
						usleep(1000);
				});
				pid_t c = fork();
				if (c == 0) {
					pause();
					_exit(0);
				}
				child = c;
			}
			if (set_cpus.load()) {
				set_ok = sched_setaffinity(0, sizeof(wanted), &wanted) == 0;
				set_cpus = false;
			}
		}
	}

	std::atomic<pid_t> tid{0}, spawned_tid{0}, child{0};
	std::atomic<bool> fault{true}, quit{false}, spawn{false}, set_cpus{false}, set_ok{false};
	cpu_set_t wanted{};
	uint64_t sum = 0;

private:
	const TestClient::Mapped &m_;
	std::thread thread_, spawned_;
};

// Attaches `c` to `f` and maps a 4096-page region under a budget of 400
// pages, prefetch off: random reads of it nearly all fault.
TestClient::Mapped map_for_faults(PagerFixture &f, TestClient &c)
{
	f.store.add_region("r", 4096);
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 4096 * kPage, 400 * kPage, false);
	REQUIRE(m.is_ok());
	return *m;
}

// Whether this process may run on more than one CPU (a pin is then told
// from no pin); if not, says loudly that colocation is not tested.
bool several_cpus()
{
	cpu_set_t all = cpus_of(0);
	if (CPU_COUNT(&all) >= 2)
		return true;
	WARN("this process may run on one CPU only: colocation is NOT tested");
	return false;
}

} // namespace

TEST_CASE("a thread that waits on its faults is pinned beside its pager thread while it does",
          "[pager][colocation]")
{
	if (!several_cpus())
		return;
	const cpu_set_t all = cpus_of(0);
	PagerFixture f;
	if (!f.pager->caps().anon_wp) {
		WARN("no userfaultfd write-protect here: budgets are not enforced, colocation "
		     "is NOT tested");
		return;
	}
	TestClient c;
	TestClient::Mapped m = map_for_faults(f, c);
	pid_t pager_tid = thread_named("mf-pager0");
	REQUIRE(pager_tid != 0);

	// The faulting thread ends before the mapping goes (a thread that
	// touches unmapped memory gets SIGSEGV, or waits for good).
	std::optional<Faulter> faulter(std::in_place, m);
	Faulter &w = *faulter;
	auto pinned_cpu = [&] { return single_cpu(cpus_of(w.tid)); };
	INFO("the faulting thread is pinned once it has faulted often for a window");
	REQUIRE(eventually(10, [&] { return pinned_cpu() >= 0; }));
	int cpu = pinned_cpu();
	CHECK(single_cpu(cpus_of(pager_tid)) == cpu);
	auto state = f.proc_stats()["state"];
	CHECK(state["colocations"].get<uint32_t>() >= 1);
	CHECK(state["colocated"]["tid"].get<pid_t>() == w.tid.load());
	CHECK(state["colocated"]["cpu"].get<int>() == cpu);

	SECTION("what inherits the pin gets the faulting thread's CPUs back")
	{
		w.spawn = true;
		REQUIRE(eventually(
		        5, [&] { return w.spawned_tid.load() != 0 && w.child.load() != 0; }));
		// Unless the pin ended meanwhile, in which case all three are
		// free anyway; the pager gives them back within a window.
		CHECK(eventually(2, [&] {
			cpu_set_t t = cpus_of(w.spawned_tid), ch = cpus_of(w.child);
			return CPU_EQUAL(&t, &all) && CPU_EQUAL(&ch, &all);
		}));
		kill(w.child, SIGKILL);
		waitpid(w.child, nullptr, 0);
		INFO("the faulting thread itself stays pinned");
		CHECK(pinned_cpu() == cpu);
	}
	SECTION("when the faults stop, the thread and the pager thread get their CPUs back")
	{
		w.fault = false;
		CHECK(eventually(3, [&] {
			cpu_set_t t = cpus_of(w.tid), p = cpus_of(pager_tid);
			return CPU_EQUAL(&t, &all) && CPU_EQUAL(&p, &all);
		}));
		CHECK(f.proc_stats()["state"]["colocated"].is_null());
	}
	SECTION("CPUs the program set itself while pinned are left as it set them")
	{
		CPU_ZERO(&w.wanted);
		for (int c2 = 0; c2 < CPU_SETSIZE; c2++)
			if (CPU_ISSET(c2, &all) && c2 != cpu)
				CPU_SET(c2, &w.wanted);
		w.set_cpus = true;
		REQUIRE(eventually(5, [&] { return !w.set_cpus.load(); }));
		REQUIRE(w.set_ok.load());
		w.fault = false;
		REQUIRE(eventually(3,
		                   [&] { return f.proc_stats()["state"]["colocated"].is_null(); }));
		cpu_set_t now = cpus_of(w.tid);
		CHECK(CPU_EQUAL(&now, &w.wanted));
	}
	faulter.reset();
	REQUIRE(c.unmap(m).is_ok());
}

TEST_CASE("with pager.colocate off nothing is pinned", "[pager][colocation]")
{
	PagerConfig cfg;
	cfg.colocate = false;
	PagerFixture f(cfg);
	if (!f.pager->caps().anon_wp) {
		WARN("no userfaultfd write-protect here: colocation is NOT tested");
		return;
	}
	TestClient c;
	TestClient::Mapped m = map_for_faults(f, c);
	cpu_set_t before = cpus_of(0);
	{
		Faulter w(m);
		// Long enough for several windows of faults that would pin it.
		REQUIRE(eventually(10, [&] {
			return f.proc_stats()["faults"].get<uint64_t>() >=
			       4 * kColocationStartFaults;
		}));
		usleep(300000);
		cpu_set_t now = cpus_of(w.tid);
		CHECK(CPU_EQUAL(&now, &before));
	}
	CHECK(f.proc_stats()["state"]["colocations"].get<uint32_t>() == 0);
	REQUIRE(c.unmap(m).is_ok());
}

TEST_CASE("a pin left by a pager that died is undone by the next one to start",
          "[pager][colocation]")
{
	if (!several_cpus())
		return;
	const cpu_set_t all = cpus_of(0);
	char tmpl[] = "/tmp/memfed-pins-XXXXXX";
	REQUIRE(mkdtemp(tmpl) != nullptr);
	std::string dir = tmpl;
	PagerConfig cfg;
	cfg.pin_dir = dir + "/pins";
	std::string record;
	pid_t tid = 0;
	int cpu = -1;
	// A pager pins a faulting thread and records it; the record is read
	// while the pin lasts, as a pager killed then would have left it.
	std::optional<Faulter> faulter;
	{
		PagerFixture f(cfg);
		if (!f.pager->caps().anon_wp) {
			WARN("no userfaultfd write-protect here: colocation is NOT tested");
			return;
		}
		TestClient c;
		TestClient::Mapped m = map_for_faults(f, c);
		faulter.emplace(m);
		tid = faulter->tid;
		REQUIRE(eventually(10, [&] { return single_cpu(cpus_of(tid)) >= 0; }));
		cpu = single_cpu(cpus_of(tid));
		std::string path = cfg.pin_dir + "/" + std::to_string(tid);
		REQUIRE(eventually(2, [&] { return std::filesystem::exists(path); }));
		std::ifstream in(path);
		std::getline(in, record);
		INFO(record);
		CHECK(record.rfind(std::to_string(getpid()) + " " + std::to_string(tid) + " ", 0) ==
		      0);
		faulter->fault = false;
		// Unpinned, the record goes.
		CHECK(eventually(3, [&] { return !std::filesystem::exists(path); }));
		faulter.reset();
		REQUIRE(c.unmap(m).is_ok());
	}
	// The thread the record names must still be there: a new one, pinned
	// by hand as the dead pager left its faulting thread.
	std::atomic<bool> quit{false};
	std::atomic<pid_t> other{0};
	std::thread t([&] {
		other = gettid();
		while (!quit.load())
			usleep(1000);
	});
	REQUIRE(eventually(2, [&] { return other.load() != 0; }));
	cpu_set_t pin;
	CPU_ZERO(&pin);
	CPU_SET(cpu, &pin);
	REQUIRE(sched_setaffinity(other, sizeof(pin), &pin) == 0);
	auto put_record = [&](pid_t who, const std::string &rec) {
		std::filesystem::create_directories(cfg.pin_dir);
		std::ofstream(cfg.pin_dir + "/" + std::to_string(who)) << rec << "\n";
	};
	SECTION("the thread recorded gets its CPUs back")
	{
		// The same record, naming this thread and its start time.
		std::istringstream in(record);
		std::string pid_s, tid_s;
		in >> pid_s >> tid_s;
		std::string rest;
		std::getline(in, rest);
		std::ifstream st("/proc/self/task/" + std::to_string(other) + "/stat");
		std::string stat((std::istreambuf_iterator<char>(st)), {});
		std::istringstream fields(stat.substr(stat.rfind(')') + 2));
		std::string field, start;
		for (int i = 3; i <= 22 && fields >> field; i++)
			start = field;
		std::istringstream rest_in(rest);
		std::string old_start, pin_cpu, saved_cpus;
		rest_in >> old_start >> pin_cpu;
		std::getline(rest_in, saved_cpus);
		put_record(other, std::to_string(getpid()) + " " + std::to_string(other) + " " +
		                          start + " " + pin_cpu + saved_cpus);
		PagerFixture again(cfg);
		cpu_set_t now = cpus_of(other);
		CHECK(CPU_EQUAL(&now, &all));
	}
	SECTION("a record of another thread with that id changes nothing")
	{
		put_record(other, std::to_string(getpid()) + " " + std::to_string(other) + " 1 " +
		                          std::to_string(cpu) + " 0 1");
		PagerFixture again(cfg);
		cpu_set_t now = cpus_of(other);
		CHECK(CPU_EQUAL(&now, &pin));
	}
	CHECK(std::filesystem::is_empty(cfg.pin_dir));
	quit = true;
	t.join();
	std::filesystem::remove_all(dir);
}

TEST_CASE("while a thread is pinned, its process's move requests name the pin's CPU",
          "[pager][colocation]")
{
	// So that the evictor runs there too (libclient/evictor_pin.h): its
	// MOVEs then need no TLB-flush interrupt to the pinned thread's CPU.
	if (!several_cpus())
		return;
	PagerFixture f;
	TestClient c;
	if (!evict_path(c, f, EvictPath::kMove))
		return;
	TestClient::Mapped m = map_for_faults(f, c);
	Faulter w(m);
	REQUIRE(eventually(10, [&] { return single_cpu(cpus_of(w.tid)) >= 0; }));
	const int cpu = single_cpu(cpus_of(w.tid));
	auto names_cpu = [&] {
		uint32_t fl = c.last_move_flags();
		return (fl & kMoveOnCpu) && int(fl >> kMoveCpuShift) == cpu;
	};
	INFO("last move flags " << c.last_move_flags() << ", pinned to cpu " << cpu);
	CHECK(eventually(5, names_cpu));
	CHECK(c.moved_pages() > 0);
}
