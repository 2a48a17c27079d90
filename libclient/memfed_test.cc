// Tests of the C and C++ APIs against a real memfedd started in a scratch
// directory (the daemon binary comes from the build, MEMFEDD_BIN): every
// failure class the daemon can produce is asserted as its exact negative
// errno value, with memfed_strerror() giving the daemon's message.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "memfed.h"
#include "memfed.hpp"

namespace
{

// One memfedd in its own temp dir, killed at the end of the test.
class Daemon
{
public:
	// `config`: the JSON of a config file to start it with (empty: none).
	explicit Daemon(const std::string &config = "")
	{
		char tmpl[] = "/tmp/memfed-libclient.XXXXXX";
		dir_ = mkdtemp(tmpl);
		sock_ = dir_ + "/sock";
		std::string config_path = dir_ + "/memfedd.json";
		if (!config.empty()) {
			FILE *f = fopen(config_path.c_str(), "w");
			REQUIRE(f);
			fputs(config.c_str(), f);
			fclose(f);
		}
		pid_ = fork();
		if (pid_ == 0) {
			std::string log = dir_ + "/memfedd.log";
			freopen(log.c_str(), "w", stderr);
			// Without a config, the null in its place ends the argument list.
			const char *with_config = config.empty() ? nullptr : "--config";
			execl(MEMFEDD_BIN, MEMFEDD_BIN, "--state-dir", dir_.c_str(), "--socket",
			      sock_.c_str(), "--kmod", "off", "--pool-size", "256M", "--listen",
			      "127.0.0.1:0", with_config, config_path.c_str(), (char *)nullptr);
			_exit(127);
		}
		for (int i = 0; i < 400; i++) {
			memfed_conn *m = nullptr;
			if (memfed_connect(sock_.c_str(), &m) == 0) {
				memfed_close(m);
				return;
			}
			usleep(25000);
		}
		FAIL("memfedd did not come up; see " << dir_ << "/memfedd.log");
	}
	~Daemon()
	{
		stop();
		std::string cmd = "rm -rf " + dir_;
		(void)!system(cmd.c_str());
	}
	// Kills memfedd now (connections to it break).
	void stop()
	{
		if (pid_ > 0) {
			kill(pid_, SIGKILL);
			waitpid(pid_, nullptr, 0);
		}
		pid_ = -1;
	}
	const std::string &sock() const { return sock_; }
	const std::string &dir() const { return dir_; }
	// The pool file memfedd keeps in its state directory.
	std::string pool() const { return dir_ + "/pool.mfp"; }

private:
	std::string dir_, sock_;
	pid_t pid_ = -1;
};

// A stand-in for memfedd that answers every request with the same packet:
// the only way to get replies a correct daemon never sends (protocol
// violations) or sends only when its disk fails (io) or on a bug (internal).
class FakeDaemon
{
public:
	explicit FakeDaemon(std::string reply) : reply_(std::move(reply))
	{
		char tmpl[] = "/tmp/memfed-fake.XXXXXX";
		dir_ = mkdtemp(tmpl);
		sock_ = dir_ + "/sock";
		listen_fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		sockaddr_un sa{};
		sa.sun_family = AF_UNIX;
		std::strcpy(sa.sun_path, sock_.c_str());
		REQUIRE(bind(listen_fd_, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) == 0);
		REQUIRE(listen(listen_fd_, 1) == 0);
		thread_ = std::thread([this] { serve(); });
	}
	// REQUIRES: a client connected (and has closed its connection).
	~FakeDaemon()
	{
		thread_.join();
		close(listen_fd_);
		unlink(sock_.c_str());
		rmdir(dir_.c_str());
	}
	const std::string &sock() const { return sock_; }

private:
	void serve()
	{
		int fd = accept(listen_fd_, nullptr, nullptr);
		if (fd < 0)
			return;
		std::vector<char> buf(256 * 1024);
		while (recv(fd, buf.data(), buf.size(), 0) > 0)
			(void)!send(fd, reply_.data(), reply_.size(), MSG_NOSIGNAL);
		close(fd);
	}
	std::string reply_, dir_, sock_;
	int listen_fd_ = -1;
	std::thread thread_;
};

std::string sys_text(int errnum)
{
	return std::error_code(errnum, std::generic_category()).message();
}

bool contains(const char *haystack, const std::string &needle)
{
	return std::string(haystack).find(needle) != std::string::npos;
}

} // namespace

TEST_CASE("the library's version is the header's, and its major is the soname")
{
	std::string want = std::to_string(MEMFED_VERSION_MAJOR) + "." +
	                   std::to_string(MEMFED_VERSION_MINOR) + ".";
	CHECK(std::string(memfed_version()).rfind(want, 0) == 0);
	CHECK(std::string(memfed_version()) == MEMFED_LIB_VERSION);
	std::string soname = MEMFED_LIB_SONAME;
	CHECK(soname == "libmemfed.so." + std::to_string(MEMFED_VERSION_MAJOR));
}

TEST_CASE("connecting where no daemon listens fails -ECONNREFUSED naming the socket")
{
	memfed_conn *m = nullptr;
	int rc = memfed_connect("/nonexistent/memfed.sock", &m);
	CHECK(rc == -ECONNREFUSED);
	CHECK(m == nullptr);
	CHECK(contains(memfed_strerror(rc), "memfedd is not running at /nonexistent/memfed.sock"));

	auto c = memfed::api::Connection::connect("/nonexistent/memfed.sock");
	REQUIRE_FALSE(c.ok());
	CHECK(c.error().errnum() == ECONNREFUSED);
	CHECK(c.error().code() == std::errc::connection_refused);
	CHECK(c.error().message().find("/nonexistent/memfed.sock") != std::string::npos);
	CHECK(c.error().to_string() == c.error().message() + " (" + sys_text(ECONNREFUSED) + ")");
}

TEST_CASE("bad arguments are refused -EINVAL before reaching the daemon")
{
	CHECK(memfed_connect(nullptr, nullptr) == -EINVAL);
	CHECK(memfed_region_create(nullptr, "x", 4096, 0, nullptr) == -EINVAL);
	CHECK(contains(memfed_strerror(-EINVAL), "memfed_region_create"));
	memfed_close(nullptr);
	memfed_region_close(nullptr);
}

TEST_CASE("memfed_strerror gives the thread's last message for its value, else strerror")
{
	// A failure records its message...
	memfed_conn *m = nullptr;
	REQUIRE(memfed_connect("/nonexistent/a.sock", &m) == -ECONNREFUSED);
	CHECK(contains(memfed_strerror(-ECONNREFUSED), "/nonexistent/a.sock"));
	// ...which other values do not get: they read as strerror.
	CHECK(std::string(memfed_strerror(-ENOENT)) == sys_text(ENOENT));
	CHECK(std::string(memfed_strerror(-EIO)) == sys_text(EIO));
	// Asking never changes the record.
	CHECK(contains(memfed_strerror(-ECONNREFUSED), "/nonexistent/a.sock"));
	// The next failure replaces it.
	REQUIRE(memfed_region_create(nullptr, "x", 4096, 0, nullptr) == -EINVAL);
	CHECK(std::string(memfed_strerror(-ECONNREFUSED)) == sys_text(ECONNREFUSED));
	CHECK(contains(memfed_strerror(-EINVAL), "memfed_region_create"));
	// Calls that succeed leave it.
	CHECK(memfed_version() != nullptr);
	CHECK(contains(memfed_strerror(-EINVAL), "memfed_region_create"));
	// It is per thread: another thread has none of it.
	std::string other;
	std::thread([&other] { other = memfed_strerror(-EINVAL); }).join();
	CHECK(other == sys_text(EINVAL));
	// A value that is no negative errno still gets text.
	CHECK(std::string(memfed_strerror(0)) == sys_text(0));
	CHECK(std::string(memfed_strerror(INT_MIN)) == sys_text(INT_MAX));
}

TEST_CASE("every failure class the daemon reports is its errno, with the daemon's message")
{
	Daemon d;
	memfed_conn *m = nullptr;
	REQUIRE(memfed_connect(d.sock().c_str(), &m) == 0);

	SECTION("-EINVAL: a name the daemon refuses")
	{
		int rc = memfed_region_create(m, "no/slash", 4096, 0, nullptr);
		CHECK(rc == -EINVAL);
		CHECK(contains(memfed_strerror(rc), "no/slash"));
		CHECK(memfed_region_create(m, "zero", 0, 0, nullptr) == -EINVAL);
		CHECK(contains(memfed_strerror(-EINVAL), "size must be at least one byte"));
	}
	SECTION("-ENOENT: no such region")
	{
		memfed_region *r = nullptr;
		int rc = memfed_region_open(m, "absent", &r);
		CHECK(rc == -ENOENT);
		CHECK(contains(memfed_strerror(rc), "region 'absent' not found"));
		CHECK(memfed_region_delete(m, "absent") == -ENOENT);
	}
	SECTION("-EEXIST: the name is taken")
	{
		REQUIRE(memfed_region_create(m, "taken", 4096, 0, nullptr) == 0);
		int rc = memfed_region_create(m, "taken", 4096, 0, nullptr);
		CHECK(rc == -EEXIST);
		CHECK(contains(memfed_strerror(rc), "region 'taken' already exists"));
	}
	SECTION("-ENOSPC: more than the pool's address space holds")
	{
		// The pool is thin: a region larger than its capacity is made,
		// one past its 4 TiB address space is not.
		int rc = memfed_region_create(m, "huge", uint64_t{8} << 40, 0, nullptr);
		CHECK(rc == -ENOSPC);
		CHECK(contains(memfed_strerror(rc), "huge"));
	}
	SECTION("-ERANGE: past the end of a region")
	{
		memfed_region *r = nullptr;
		REQUIRE(memfed_region_create(m, "short", 4096, 0, nullptr) == 0);
		REQUIRE(memfed_region_open(m, "short", &r) == 0);
		char buf[16] = {};
		int64_t n = memfed_region_write(r, 4090, buf, sizeof(buf));
		CHECK(n == -ERANGE);
		CHECK(contains(memfed_strerror(int(n)), "runs past the end of region 'short'"));
		void *addr = nullptr;
		CHECK(memfed_map(r, 8192, 4096, 0, &addr) == -ERANGE);
		memfed_region_close(r);
	}
	SECTION("-EBADMSG: a page on the module fails its checksum")
	{
		memfed_region_info info{};
		memfed_region *r = nullptr;
		REQUIRE(memfed_region_create(m, "rotten", 4096, 0, &info) == 0);
		REQUIRE(memfed_region_open(m, "rotten", &r) == 0);
		std::vector<char> page(4096, 'x');
		REQUIRE(memfed_region_write(r, 0, page.data(), page.size()) == 4096);
		// Damage the page where it lies in the pool file (the offset in
		// its federated address "<module>/0x<offset>").
		std::string fa = info.fa;
		uint64_t off = std::stoull(fa.substr(fa.find('/') + 1), nullptr, 16);
		int fd = open(d.pool().c_str(), O_RDWR | O_CLOEXEC);
		REQUIRE(fd >= 0);
		REQUIRE(pwrite(fd, "rot", 3, off_t(off + 100)) == 3);
		close(fd);
		int64_t n = memfed_region_read(r, 0, page.data(), page.size());
		CHECK(n == -EBADMSG);
		CHECK(contains(memfed_strerror(int(n)), "fails its checksum"));
		memfed_region_close(r);
	}
	SECTION("-ECONNREFUSED: memfedd went away")
	{
		d.stop();
		int rc = memfed_region_list(m, nullptr, nullptr);
		CHECK(rc == -ECONNREFUSED);
		CHECK(std::string(memfed_strerror(rc)) != sys_text(ECONNREFUSED));
	}
	memfed_close(m);
}

TEST_CASE("a region's mode keeps other users out: -EACCES")
{
	if (geteuid() != 0) {
		WARN("SKIPPED: only root can act as a second uid to be refused (run as root)");
		return;
	}
	Daemon d;
	memfed_conn *m = nullptr;
	REQUIRE(memfed_connect(d.sock().c_str(), &m) == 0);
	REQUIRE(memfed_region_create(m, "private", 4096, 0600, nullptr) == 0);
	REQUIRE(memfed_region_create(m, "shared", 4096, 0644, nullptr) == 0);
	memfed_close(m);
	REQUIRE(chmod(d.dir().c_str(), 0755) == 0); // let the other uid reach the socket

	// A child as uid 65534 reports what each call returned, then its message.
	int p[2];
	REQUIRE(pipe(p) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		int rc[3] = {0, 0, 0};
		memfed_conn *c = nullptr;
		memfed_region *r = nullptr;
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(2);
		if ((rc[0] = memfed_connect(d.sock().c_str(), &c)) == 0) {
			rc[1] = memfed_region_delete(c, "shared");
			rc[2] = memfed_region_open(c, "private", &r);
		}
		std::string msg = memfed_strerror(rc[2]);
		(void)!write(p[1], rc, sizeof(rc));
		(void)!write(p[1], msg.data(), msg.size());
		_exit(0);
	}
	close(p[1]);
	int rc[3] = {1, 1, 1};
	REQUIRE(read(p[0], rc, sizeof(rc)) == ssize_t(sizeof(rc)));
	char msg[512] = {};
	(void)!read(p[0], msg, sizeof(msg) - 1);
	close(p[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	REQUIRE(WIFEXITED(status));
	REQUIRE(WEXITSTATUS(status) == 0);
	CHECK(rc[0] == 0);
	CHECK(rc[1] == -EACCES); // may read, may not delete (not the owner)
	CHECK(rc[2] == -EACCES);
	CHECK(contains(msg, "uid 65534 may not read region 'private'"));
}

TEST_CASE("a region past the user's quota: -EDQUOT naming the quota")
{
	if (geteuid() != 0) {
		WARN("SKIPPED: root is exempt from quotas; only root can act as a second uid");
		return;
	}
	Daemon d(R"({"quota": {"uid_regions": 1}})");
	REQUIRE(chmod(d.dir().c_str(), 0755) == 0); // let the other uid reach the socket
	int p[2];
	REQUIRE(pipe(p) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		int rc[3] = {1, 1, 1};
		memfed_conn *c = nullptr;
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(2);
		if ((rc[0] = memfed_connect(d.sock().c_str(), &c)) == 0) {
			rc[1] = memfed_region_create(c, "first", 4096, 0600, nullptr);
			rc[2] = memfed_region_create(c, "second", 4096, 0600, nullptr);
		}
		std::string msg = memfed_strerror(rc[2]);
		(void)!write(p[1], rc, sizeof(rc));
		(void)!write(p[1], msg.data(), msg.size());
		_exit(0);
	}
	close(p[1]);
	int rc[3] = {1, 1, 1};
	REQUIRE(read(p[0], rc, sizeof(rc)) == ssize_t(sizeof(rc)));
	char msg[1024] = {};
	(void)!read(p[0], msg, sizeof(msg) - 1);
	close(p[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	REQUIRE(WIFEXITED(status));
	REQUIRE(WEXITSTATUS(status) == 0);
	CHECK(rc[0] == 0);
	CHECK(rc[1] == 0);
	CHECK(rc[2] == -EDQUOT);
	CHECK(contains(msg, "uid 65534 holds 1 region"));
	CHECK(contains(msg, "\"quota.uid_regions\""));
	// Root is exempt.
	memfed_conn *m = nullptr;
	REQUIRE(memfed_connect(d.sock().c_str(), &m) == 0);
	CHECK(memfed_region_create(m, "root1", 4096, 0600, nullptr) == 0);
	CHECK(memfed_region_create(m, "root2", 4096, 0600, nullptr) == 0);
	memfed_close(m);
}

TEST_CASE("replies a correct daemon never sends: -EPROTO, and the codes of a failing disk or a bug")
{
	struct Case {
		std::string reply;
		int want;
		const char *message; // nullptr: any
	} cases[] = {
	        {"this is not JSON", -EPROTO, nullptr},
	        {R"({"ok":false,"code":"io","error":"fake: reading the pool failed"})", -EIO,
	         "fake: reading the pool failed"},
	        {R"({"ok":false,"code":"busy","error":"fake: held elsewhere"})", -EBUSY,
	         "fake: held elsewhere"},
	        {R"({"ok":false,"code":"permission","error":"fake: not yours"})", -EACCES,
	         "fake: not yours"},
	        {R"({"ok":false,"code":"corrupt","error":"fake: bad crc"})", -EBADMSG,
	         "fake: bad crc"},
	        {R"({"ok":false,"code":"unavailable","error":"fake: module gone"})", -ECONNREFUSED,
	         "fake: module gone"},
	        {R"({"ok":false,"code":"protocol","error":"fake: bad request"})", -EPROTO,
	         "fake: bad request"},
	        {R"({"ok":false,"code":"internal","error":"fake: assertion failed"})",
	         -ENOTRECOVERABLE, "fake: assertion failed"},
	        {R"({"ok":false,"code":"from_the_future","error":"fake: new code"})",
	         -ENOTRECOVERABLE, "fake: new code"},
	        {R"({"ok":true})", -EPROTO, "region.list reply lacks"},
	};
	for (const Case &c : cases) {
		INFO("reply: " << c.reply);
		FakeDaemon fake(c.reply);
		memfed_conn *m = nullptr;
		REQUIRE(memfed_connect(fake.sock().c_str(), &m) == 0);
		int rc = memfed_region_list(m, nullptr, nullptr);
		CHECK(rc == c.want);
		if (c.message)
			CHECK(contains(memfed_strerror(rc), c.message));
		else
			CHECK(std::string(memfed_strerror(rc)) != sys_text(-c.want));
		memfed_close(m);
	}
}

TEST_CASE("regions: create, open, stat, read, write, list, delete")
{
	Daemon d;
	memfed_conn *m = nullptr;
	REQUIRE(memfed_connect(d.sock().c_str(), &m) == 0);
	memfed_region_info info{};
	REQUIRE(memfed_region_create(m, "apitest", 5000, 0640, &info) == 0);
	CHECK(std::string(info.name) == "apitest");
	CHECK(info.size == 8192); // rounded up to pages
	CHECK(info.mode == 0640);
	CHECK(info.owner_uid == geteuid());
	CHECK(std::string(info.fa).find('/') != std::string::npos);

	CHECK(memfed_region_create(m, "apitest", 4096, 0, nullptr) == -EEXIST);
	CHECK(contains(memfed_strerror(-EEXIST), "apitest"));

	memfed_region *r = nullptr;
	REQUIRE(memfed_region_open(m, "apitest", &r) == 0);
	std::vector<uint8_t> out(6000), in(6000);
	for (size_t i = 0; i < out.size(); i++)
		out[i] = uint8_t(i * 7 + 1);
	CHECK(memfed_region_write(r, 100, out.data(), out.size()) == 6000);
	CHECK(memfed_region_read(r, 100, in.data(), in.size()) == 6000);
	CHECK(in == out);
	// Reads stop at the end of the region.
	CHECK(memfed_region_read(r, 8000, in.data(), 1000) == 192);
	CHECK(memfed_region_write(r, 8000, out.data(), 1000) == -ERANGE);

	memfed_region_info st{};
	REQUIRE(memfed_region_stat(r, &st) == 0);
	CHECK(st.id == info.id);
	CHECK(st.length == st.size); // never truncated as a file: all of it
	memfed_region_close(r);

	REQUIRE(memfed_region_create(m, "apitest-b", 4096, 0, nullptr) == 0);
	std::vector<std::string> names;
	int n = memfed_region_list(
	        m,
	        [](const memfed_region_info *i, void *arg) {
		        static_cast<std::vector<std::string> *>(arg)->push_back(i->name);
		        return 0;
	        },
	        &names);
	CHECK(n == 2);
	CHECK(names == std::vector<std::string>{"apitest", "apitest-b"});

	CHECK(memfed_region_open(m, "absent", &r) == -ENOENT);
	CHECK(memfed_region_delete(m, "apitest-b") == 0);
	CHECK(memfed_region_delete(m, "apitest-b") == -ENOENT);
	memfed_close(m);
}

TEST_CASE("C++ API: Expected values and RAII handles")
{
	Daemon d;
	auto c = memfed::api::Connection::connect(d.sock());
	REQUIRE(c.ok());
	auto info = c->create_region("cxx", 4096);
	REQUIRE(info.ok());
	CHECK(info->size == 4096);
	auto dup = c->create_region("cxx", 4096);
	REQUIRE_FALSE(dup.ok());
	CHECK(dup.error().code() == std::errc::file_exists);
	CHECK(dup.error().message().find("'cxx'") != std::string::npos);
	auto r = c->open_region("cxx");
	REQUIRE(r.ok());
	const char msg[] = "hello, federation";
	REQUIRE(r->write(0, msg, sizeof(msg)).ok());
	char buf[sizeof(msg)] = {};
	auto n = r->read(0, buf, sizeof(buf));
	REQUIRE(n.ok());
	CHECK(*n == sizeof(msg));
	CHECK(std::string(buf) == msg);
	auto all = c->list_regions();
	REQUIRE(all.ok());
	CHECK(all->size() == 1);
}
