// crash_test: a module daemon is SIGKILLed at random instants during a write
// storm, again and again. After every kill:
//   - `memfedctl pool check` on the pool is clean (exit 0, "clean": true);
//   - the restarted daemon serves every page as one complete version, and that
//     version is the last one the daemon acknowledged or the one in flight when
//     it died: acknowledged writes are durable, pages are never torn.
// Each page written carries its own stamp (magic, page index, version, crc32c
// of the rest) and a body derived from (page, version), so a mixed or stale
// page cannot pass. The second writer uses versioned writes (WRITE_VERSIONED,
// the version in the stamp): after every kill each of its pages' stored page
// version must equal the version in its content (page and version are atomic
// across a crash), and the first writer's pages must have none.
//
//
// Copy-on-write clones ride along: before each storm the test clones the
// region (snap.R), and clones a clone of it (mid.R, then sub.R of mid.R);
// during the storm it deletes the oldest snapshot and mid.R (which gives
// sub.R every page it shares), so kills land in the middle of copies into
// clones and of those deletes. A copy is a clone page's first write, and a
// kill while it is applied leaves the page holding part of it with its meta
// still saying "never written": `pool check` must accept that (the copy's
// redo-log record is pending) and the restart must replay it. After every
// kill every clone still present must read exactly the region as it was
// when the clone was made.
//
// usage: crash_test --memfedd PATH --memfedctl PATH [--rounds N] [--seed S]
// Prints one "ok" line per round; exits 1 with a reason on the first failure.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/common/crc32c.h"
#include "daemon/common/ids.h"
#include "daemon/transport/sync_client.h"
#include "daemon/trust/node_key.h"
#include "daemon/trust/tls_context.h"
#include "daemon/wire/protocol.h"

using namespace memfed;
using nlohmann::json;

namespace
{

constexpr uint32_t kPage = wire::kPageSize;
constexpr uint32_t kRegionPages = 512; // 2 MiB, small enough to overwrite often
constexpr uint32_t kWriters = 2;       // each owns a contiguous half of the region
constexpr uint32_t kMaxPagesPerWrite = 16;
// The last writer's half, written with WRITE_VERSIONED.
constexpr uint32_t kVersionedFirst = (kWriters - 1) * kRegionPages / kWriters;
constexpr uint64_t kStampMagic = 0x504d415453485243ULL; // "CRHSTAMP"
const char *kRegion = "storm";
const ModuleId kModule{0x020000000042};

// The daemon under test and its log, so a failure never leaves it running.
std::atomic<pid_t> g_daemon{-1};
std::string g_log;

[[noreturn]] void die(const std::string &why)
{
	std::fprintf(stderr, "FAIL: %s\n", why.c_str());
	pid_t pid = g_daemon.exchange(-1);
	if (pid > 0)
		kill(pid, SIGKILL);
	if (!g_log.empty())
		std::fprintf(stderr, "daemon log: %s\n", g_log.c_str());
	std::_Exit(1);
}

// --- page stamps --------------------------------------------------------------
// bytes [0,8) magic, [8,12) page index, [12,16) crc32c of [16,4096),
// [16,24) version, [24,4096) body from a generator seeded by (page, version).

void make_page(uint32_t page, uint64_t version, uint8_t *out)
{
	std::mt19937_64 gen((uint64_t{page} << 40) ^ version);
	for (uint32_t i = 24; i < kPage; i += 8) {
		uint64_t v = gen();
		memcpy(out + i, &v, 8);
	}
	memcpy(out, &kStampMagic, 8);
	memcpy(out + 8, &page, 4);
	memcpy(out + 16, &version, 8);
	uint32_t crc = crc32c(out + 16, kPage - 16);
	memcpy(out + 12, &crc, 4);
}

// The version a page holds; dies if the page is not exactly one complete
// stamped version (or all zeros: version 0).
uint64_t page_version(uint32_t page, const uint8_t *p)
{
	if (std::all_of(p, p + kPage, [](uint8_t b) { return b == 0; }))
		return 0;
	uint64_t magic, version;
	uint32_t idx, crc;
	memcpy(&magic, p, 8);
	memcpy(&idx, p + 8, 4);
	memcpy(&crc, p + 12, 4);
	memcpy(&version, p + 16, 8);
	if (magic != kStampMagic || idx != page || crc != crc32c(p + 16, kPage - 16))
		die("page " + std::to_string(page) + " is torn or foreign (bad stamp)");
	std::vector<uint8_t> want(kPage);
	make_page(page, version, want.data());
	if (memcmp(want.data(), p, kPage) != 0)
		die("page " + std::to_string(page) + " version " + std::to_string(version) +
		    " does not match its expected content");
	return version;
}

// --- processes ----------------------------------------------------------------

struct Cmd {
	int exit_code;
	std::string out;
};

std::string quote(const std::string &s)
{
	return "'" + s + "'";
}

Cmd run(const std::string &cmd)
{
	Cmd r{-1, {}};
	FILE *f = popen((cmd + " 2>&1").c_str(), "r");
	if (f == nullptr)
		die("popen " + cmd);
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		r.out.append(buf, n);
	int st = pclose(f);
	r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	return r;
}

struct Env {
	std::string memfedd, memfedctl, dir;
	std::string state() const { return dir + "/module"; }
	std::string sock() const { return state() + "/sock"; }
	std::string pool() const { return state() + "/pool.mfp"; }
	std::string log() const { return dir + "/module.log"; }
};

struct Daemon {
	pid_t pid = -1;
	std::string endpoint;
	std::string key_file; // its node key, made on its first start
};

// This test's own node key: the daemon trusts it (--trust), and the test
// trusts the daemon's key (read from its key file once it has started).
const trust::NodeKey &client_key()
{
	static const trust::NodeKey key = [] {
		auto k = trust::generate_node_key();
		if (!k)
			die("node key: " + k.status().to_string());
		return *k;
	}();
	return key;
}

std::string log_tail(const Env &env)
{
	return run("tail -n 5 " + quote(env.log())).out;
}

Daemon start_daemon(const Env &env)
{
	std::filesystem::create_directories(env.state());
	std::vector<std::string> args = {env.memfedd,
	                                 "--state-dir",
	                                 env.state(),
	                                 "--socket",
	                                 env.sock(),
	                                 "--kmod",
	                                 "off",
	                                 "--roles",
	                                 "module",
	                                 "--listen",
	                                 "127.0.0.1:0",
	                                 "--pool-size",
	                                 "32M",
	                                 "--module-id",
	                                 kModule.to_string(),
	                                 "--trust",
	                                 trust::encode_key(client_key().pub)};
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		int fd = open(env.log().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
		dup2(fd, 1);
		dup2(fd, 2);
		std::vector<char *> argv;
		for (auto &a : args)
			argv.push_back(a.data());
		argv.push_back(nullptr);
		execv(argv[0], argv.data());
		_exit(127);
	}
	Daemon d{pid, {}, env.state() + "/node.key"};
	g_daemon = pid;
	g_log = env.log();
	for (int i = 0; i < 400; i++) {
		Cmd c = run(quote(env.memfedctl) + " --socket " + quote(env.sock()) + " -j status");
		if (c.exit_code == 0) {
			d.endpoint = json::parse(c.out).at("listen").get<std::string>();
			return d;
		}
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid)
			die("memfedd exited during start: " + log_tail(env));
		std::this_thread::sleep_for(std::chrono::milliseconds(25));
	}
	die("memfedd did not answer on " + env.sock() + ": " + log_tail(env));
}

void stop_daemon(Daemon &d, int sig)
{
	g_daemon = -1;
	kill(d.pid, sig);
	int st;
	waitpid(d.pid, &st, 0);
	d.pid = -1;
}

// `memfedctl pool check` must be clean; returns its count of pending records.
uint64_t check_pool(const Env &env, const std::string &when)
{
	Cmd c = run(quote(env.memfedctl) + " -j pool check " + quote(env.pool()));
	if (c.exit_code != 0)
		die("pool check " + when + " exited " + std::to_string(c.exit_code) + ": " + c.out);
	json j = json::parse(c.out);
	if (!j.at("clean").get<bool>())
		die("pool check " + when + " is not clean: " + c.out);
	return j.at("log_records").get<uint64_t>();
}

std::unique_ptr<SyncClient> connect(const Daemon &d)
{
	static std::shared_ptr<trust::TlsContext> tls;
	if (!tls) {
		auto daemon_key = trust::load_node_key(d.key_file);
		if (!daemon_key)
			die("the daemon's key: " + daemon_key.status().to_string());
		auto peers = std::make_shared<trust::TrustedPeers>(
		        std::vector<trust::TrustedPeer>{{daemon_key->pub, "module", d.endpoint}});
		auto ctx = trust::TlsContext::create(client_key(), peers);
		if (!ctx)
			die("TLS: " + ctx.status().to_string());
		tls = *ctx;
	}
	auto c = SyncClient::connect(d.endpoint, ModuleId{0x020000000099}, 5000, tls);
	if (!c)
		die("connect to " + d.endpoint + ": " + c.status().to_string());
	Status st = (*c)->hello();
	if (!st)
		die("hello: " + st.to_string());
	return std::move(*c);
}

// --- the model of what the pool must hold -------------------------------------

struct Model {
	// acked[p]: last version the daemon acknowledged; issued[p]: last version
	// sent (== acked[p] unless a write was in flight at the kill).
	std::vector<uint64_t> acked = std::vector<uint64_t>(kRegionPages, 0);
	std::vector<uint64_t> issued = std::vector<uint64_t>(kRegionPages, 0);
};

struct StormResult {
	uint64_t writes_acked = 0;
	std::string error;        // the failed write's status
	bool before_kill = false; // it failed while the daemon was alive
};

// Set just before the daemon is killed: write errors after it are expected.
std::atomic<bool> g_killing{false};

// One writer: random runs of pages in [first, end) until a write fails.
// `versioned`: WRITE_VERSIONED, one version per write, greater than every
// version of the writer's pages so far (each must be applied whole).
void writer(SyncClient *c, uint32_t region_id, uint64_t fa, uint32_t first, uint32_t end,
            bool versioned, uint64_t seed, Model *m, std::atomic<uint64_t> *acks, StormResult *res)
{
	std::mt19937_64 rng(seed);
	std::vector<uint8_t> buf(kMaxPagesPerWrite * kPage);
	uint64_t wv = *std::max_element(m->issued.begin() + first, m->issued.begin() + end);
	for (;;) {
		uint32_t start = first + static_cast<uint32_t>(rng() % (end - first));
		uint32_t count = std::min<uint32_t>(1 + rng() % kMaxPagesPerWrite, end - start);
		wv++;
		for (uint32_t i = 0; i < count; i++) {
			uint32_t p = start + i;
			m->issued[p] = versioned ? wv : m->issued[p] + 1;
			make_page(p, m->issued[p], buf.data() + i * kPage);
		}
		Status st;
		if (versioned) {
			uint32_t applied = 0;
			st = c->write_pages_versioned(region_id, fa + uint64_t{start} * kPage,
			                              count, buf.data(), wv, false, &applied);
			if (st && applied != count)
				die("a WRITE_VERSIONED of " + std::to_string(count) +
				    " pages at a new version " + std::to_string(wv) + " applied " +
				    std::to_string(applied));
		} else {
			st = c->write_pages(region_id, fa + uint64_t{start} * kPage, count,
			                    buf.data());
		}
		if (!st) {
			res->error = st.to_string();
			res->before_kill = !g_killing.load();
			return;
		}
		for (uint32_t i = 0; i < count; i++)
			m->acked[start + i] = m->issued[start + i];
		res->writes_acked++;
		acks->fetch_add(1);
	}
}

struct Verify {
	uint64_t in_flight_landed = 0; // pages holding a write that was never acked
	uint64_t replays = 0;          // redo-log records the daemon replayed at open
};

// Reads every page through the restarted daemon and checks it against the model.
Verify verify(const Daemon &d, uint32_t region_id, uint64_t fa, Model *m)
{
	Verify v;
	std::unique_ptr<SyncClient> c = connect(d);
	auto stat = c->stat();
	if (!stat)
		die("stat: " + stat.status().to_string());
	v.replays = stat->log_replays;
	std::vector<uint8_t> buf(64 * kPage);
	uint64_t stored[64];
	for (uint32_t p0 = 0; p0 < kRegionPages; p0 += 64) {
		Status st = c->read_pages_versioned(region_id, fa + uint64_t{p0} * kPage, 64,
		                                    buf.data(), stored);
		if (!st)
			die("read pages at " + std::to_string(p0) + ": " + st.to_string());
		for (uint32_t i = 0; i < 64; i++) {
			uint32_t p = p0 + i;
			uint64_t got = page_version(p, buf.data() + i * kPage);
			// The versioned writer's half: the stored page version is the
			// content's; the other half was never written versioned.
			uint64_t want = p >= kVersionedFirst ? got : 0;
			if (stored[i] != want)
				die("page " + std::to_string(p) + " holds content version " +
				    std::to_string(got) + " but its stored page version is " +
				    std::to_string(stored[i]) + " (expected " +
				    std::to_string(want) + ")");
			if (got != m->acked[p] && got != m->issued[p])
				die("page " + std::to_string(p) + " holds version " +
				    std::to_string(got) + "; acknowledged " +
				    std::to_string(m->acked[p]) + ", in flight " +
				    std::to_string(m->issued[p]));
			if (got != m->acked[p])
				v.in_flight_landed++;
			m->acked[p] = m->issued[p] = got;
		}
	}
	return v;
}

// --- clones -----------------------------------------------------------------

// A clone the test made, and the version of every page when it was made.
struct Snapshot {
	std::string name;
	std::vector<uint64_t> versions;
};

std::string ctl(const Env &env)
{
	return quote(env.memfedctl) + " --socket " + quote(env.sock());
}

// Lets this test's node read (or write) region `name` of the daemon's node.
void grant(const Env &env, const std::string &name, const char *rights)
{
	Cmd c = run(ctl(env) + " region grant " + quote(name) + " " +
	            trust::encode_key(client_key().pub) + ":0 " + rights);
	if (c.exit_code != 0)
		die("region grant " + name + ": " + c.out);
}

// Makes `name` a clone of `base` (both whole regions) that this test's node
// may read; dies on failure.
void clone_region(const Env &env, const std::string &base, const std::string &name)
{
	Cmd c = run(ctl(env) + " region clone " + quote(base) + " " + quote(name));
	if (c.exit_code != 0)
		die("region clone " + base + " " + name + " exited " +
		    std::to_string(c.exit_code) + ": " + c.out);
	grant(env, name, "read");
}

// Checks every page of clone `s` against the versions it was made with;
// false if the clone is gone (its delete ran before the kill).
bool verify_clone(const Daemon &d, const Snapshot &s)
{
	std::unique_ptr<SyncClient> c = connect(d);
	auto r = c->region_lookup(s.name);
	if (!r && r.status().code() == Code::kNotFound)
		return false;
	if (!r)
		die("lookup of clone " + s.name + ": " + r.status().to_string());
	std::vector<uint8_t> buf(64 * kPage);
	for (uint32_t p0 = 0; p0 < kRegionPages; p0 += 64) {
		Status st = c->read_pages(r->id, r->fa_offset + uint64_t{p0} * kPage, 64, buf.data());
		if (!st)
			die("read clone " + s.name + " at page " + std::to_string(p0) + ": " +
			    st.to_string());
		for (uint32_t i = 0; i < 64; i++) {
			uint64_t got = page_version(p0 + i, buf.data() + i * kPage);
			if (got != s.versions[p0 + i])
				die("clone " + s.name + " page " + std::to_string(p0 + i) +
				    " holds version " + std::to_string(got) +
				    "; the region held version " + std::to_string(s.versions[p0 + i]) +
				    " when the clone was made");
		}
	}
	return true;
}

} // namespace

int main(int argc, char **argv)
{
	Env env;
	int rounds = 24;
	uint64_t seed = std::random_device{}();
	for (int i = 1; i + 1 < argc; i += 2) {
		std::string a = argv[i], v = argv[i + 1];
		if (a == "--memfedd")
			env.memfedd = v;
		else if (a == "--memfedctl")
			env.memfedctl = v;
		else if (a == "--rounds")
			rounds = std::stoi(v);
		else if (a == "--seed")
			seed = std::stoull(v);
		else
			die("unknown flag " + a +
			    " (usage: crash_test --memfedd PATH --memfedctl PATH [--rounds N] "
			    "[--seed S])");
	}
	if (env.memfedd.empty() || env.memfedctl.empty())
		die("usage: crash_test --memfedd PATH --memfedctl PATH [--rounds N] [--seed S]");
	char tmpl[] = "/tmp/memfed-crash.XXXXXX";
	env.dir = mkdtemp(tmpl);
	std::printf("crash_test: seed %llu, %d rounds, dir %s\n",
	            static_cast<unsigned long long>(seed), rounds, env.dir.c_str());
	std::mt19937_64 rng(seed);

	Daemon d = start_daemon(env);
	uint32_t region_id;
	uint64_t fa;
	{
		// Made through the control socket (so its clones can be), and
		// granted to this test's node for the storm.
		Cmd made = run(ctl(env) + " region create " + kRegion + " " +
		               std::to_string(kRegionPages * kPage));
		if (made.exit_code != 0)
			die("region create: " + made.out);
		grant(env, kRegion, "write");
		std::unique_ptr<SyncClient> c = connect(d);
		auto r = c->region_lookup(kRegion);
		if (!r)
			die("region lookup: " + r.status().to_string());
		region_id = r->id;
		fa = r->fa_offset;
	}

	Model model;
	uint64_t total_acked = 0, total_landed = 0, total_replays = 0, total_pending = 0;
	uint64_t clones_checked = 0;
	std::vector<Snapshot> snaps; // live clones the test checks after each kill
	for (int round = 1; round <= rounds; round++) {
		std::atomic<uint64_t> acks{0};
		std::vector<StormResult> res(kWriters);
		std::vector<std::unique_ptr<SyncClient>> clients;
		std::vector<std::thread> threads;
		g_killing = false;
		// No write is in flight: the model's versions are the region's.
		// The last round's mid and sub clones go, and snapshots beyond two
		// (so the pool never fills), then this round's three are made.
		auto is_snap = [](const Snapshot &x) { return x.name.rfind("snap.", 0) == 0; };
		for (auto it = snaps.begin(); it != snaps.end();)
			if (!is_snap(*it) || std::count_if(snaps.begin(), snaps.end(), is_snap) > 2) {
				Cmd c = run(ctl(env) + " region rm " + quote(it->name));
				if (c.exit_code != 0)
					die("region rm " + it->name + ": " + c.out);
				it = snaps.erase(it);
			} else {
				++it;
			}
		std::string r = std::to_string(round);
		clone_region(env, kRegion, "snap." + r);
		clone_region(env, kRegion, "mid." + r);
		clone_region(env, "mid." + r, "sub." + r);
		for (const char *n : {"snap.", "mid.", "sub."})
			snaps.push_back({n + r, model.acked});
		// Deleted during the storm (the kill may come first): mid.R, which
		// copies into sub.R, and the oldest snapshot beyond two.
		std::vector<std::string> doomed = {"mid." + r};
		if (std::count_if(snaps.begin(), snaps.end(), is_snap) > 2)
			doomed.push_back(snaps.front().name);
		for (uint32_t w = 0; w < kWriters; w++)
			clients.push_back(connect(d));
		for (uint32_t w = 0; w < kWriters; w++) {
			uint32_t first = w * kRegionPages / kWriters,
			         end = (w + 1) * kRegionPages / kWriters;
			threads.emplace_back(writer, clients[w].get(), region_id, fa, first, end,
			                     first >= kVersionedFirst, rng(), &model, &acks,
			                     &res[w]);
		}
		// Let the storm get going, then kill at a random instant.
		for (int i = 0; acks.load() < 4; i++) {
			if (i > 1000)
				die("round " + std::to_string(round) +
				    ": the storm made no progress");
			std::this_thread::sleep_for(std::chrono::milliseconds(10));
		}
		std::thread deleter([&env, doomed] {
			for (const std::string &n : doomed)
				(void)run(ctl(env) + " region rm " + quote(n));
		});
		std::this_thread::sleep_for(std::chrono::microseconds(rng() % 150000));
		g_killing = true;
		stop_daemon(d, SIGKILL);
		for (auto &t : threads)
			t.join();
		deleter.join();
		uint64_t acked = 0;
		for (const StormResult &r : res) {
			if (r.before_kill)
				die("round " + std::to_string(round) +
				    ": a write failed before the kill: " + r.error);
			acked += r.writes_acked;
		}
		total_acked += acked;

		uint64_t pending = check_pool(env, "after kill " + std::to_string(round));
		total_pending += pending;
		d = start_daemon(env);
		Verify v = verify(d, region_id, fa, &model);
		total_landed += v.in_flight_landed;
		total_replays += v.replays;
		size_t live_clones = 0;
		for (auto it = snaps.begin(); it != snaps.end();) {
			if (verify_clone(d, *it)) {
				live_clones++;
				++it;
			} else if (std::find(doomed.begin(), doomed.end(), it->name) != doomed.end()) {
				it = snaps.erase(it); // its delete ran
			} else {
				die("clone " + it->name + " is gone, and nothing deleted it");
			}
		}
		clones_checked += live_clones;
		std::printf("ok %d - killed after %llu acked writes; check clean (%llu log records "
		            "pending); "
		            "restart replayed %llu, %llu unacked pages landed, every page whole; "
		            "%zu clones hold the region as it was when each was made\n",
		            round, static_cast<unsigned long long>(acked),
		            static_cast<unsigned long long>(pending),
		            static_cast<unsigned long long>(v.replays),
		            static_cast<unsigned long long>(v.in_flight_landed), live_clones);
		std::fflush(stdout);
	}
	// Recovery must actually have run: a kill mid-storm always leaves records.
	if (total_replays == 0)
		die("no restart replayed any redo-log record");
	if (clones_checked == 0)
		die("no clone was checked after a kill");

	stop_daemon(d, SIGTERM);
	check_pool(env, "after the final clean stop");
	std::filesystem::remove_all(env.dir);
	std::printf("crash_test: %d kills, %llu writes acknowledged, %llu redo records found by "
	            "check and %llu "
	            "replayed, %llu in-flight pages landed; all pages whole and every acknowledged "
	            "write durable\n",
	            rounds, static_cast<unsigned long long>(total_acked),
	            static_cast<unsigned long long>(total_pending),
	            static_cast<unsigned long long>(total_replays),
	            static_cast<unsigned long long>(total_landed));
	return 0;
}
