// Tests of the C and C++ APIs against a real memfedd started in a scratch
// directory (the daemon binary comes from the build, MEMFEDD_BIN).
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
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
	Daemon()
	{
		char tmpl[] = "/tmp/memfed-libclient.XXXXXX";
		dir_ = mkdtemp(tmpl);
		sock_ = dir_ + "/sock";
		pid_ = fork();
		if (pid_ == 0) {
			std::string log = dir_ + "/memfedd.log";
			freopen(log.c_str(), "w", stderr);
			execl(MEMFEDD_BIN, MEMFEDD_BIN, "--state-dir", dir_.c_str(), "--socket",
			      sock_.c_str(), "--kmod", "off", "--pool-size", "256M", "--listen",
			      "127.0.0.1:0", (char *)nullptr);
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
		kill(pid_, SIGKILL);
		waitpid(pid_, nullptr, 0);
		std::string cmd = "rm -rf " + dir_;
		(void)!system(cmd.c_str());
	}
	const std::string &sock() const { return sock_; }

private:
	std::string dir_, sock_;
	pid_t pid_ = -1;
};

} // namespace

TEST_CASE("connecting where no daemon listens fails with a message naming the socket")
{
	memfed_conn *m = nullptr;
	int rc = memfed_connect("/nonexistent/memfed.sock", &m);
	CHECK(rc == -MEMFED_EUNAVAILABLE);
	CHECK(m == nullptr);
	CHECK(std::string(memfed_errmsg()).find("/nonexistent/memfed.sock") != std::string::npos);
	CHECK(std::string(memfed_code_name(rc)) == "unavailable");
	CHECK(std::string(memfed_code_name(999)) == "unknown");

	auto c = memfed::api::Connection::connect("/nonexistent/memfed.sock");
	REQUIRE_FALSE(c.ok());
	CHECK(c.error().code() == MEMFED_EUNAVAILABLE);
	CHECK(c.error().to_string().rfind("unavailable: ", 0) == 0);
}

TEST_CASE("bad arguments are refused before reaching the daemon")
{
	CHECK(memfed_connect(nullptr, nullptr) == -MEMFED_EINVAL);
	CHECK(memfed_region_create(nullptr, "x", 4096, 0, nullptr) == -MEMFED_EINVAL);
	CHECK(std::string(memfed_errmsg()).find("memfed_region_create") != std::string::npos);
	memfed_close(nullptr);
	memfed_region_close(nullptr);
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

	CHECK(memfed_region_create(m, "apitest", 4096, 0, nullptr) == -MEMFED_EEXIST);
	CHECK(std::string(memfed_errmsg()).find("apitest") != std::string::npos);

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
	CHECK(memfed_region_write(r, 8000, out.data(), 1000) == -MEMFED_ERANGE);

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

	CHECK(memfed_region_open(m, "absent", &r) == -MEMFED_ENOTFOUND);
	CHECK(memfed_region_delete(m, "apitest-b") == 0);
	CHECK(memfed_region_delete(m, "apitest-b") == -MEMFED_ENOTFOUND);
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
	CHECK(dup.error().code() == MEMFED_EEXIST);
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
