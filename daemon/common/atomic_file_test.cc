// write_file_atomic: modes, replacing and refusing to replace.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "daemon/common/atomic_file.h"

using namespace memfed;

namespace
{

std::string slurp(const std::string &path)
{
	std::ifstream f(path);
	std::stringstream ss;
	ss << f.rdbuf();
	return ss.str();
}

mode_t mode_of(const std::string &path)
{
	struct stat st;
	REQUIRE(stat(path.c_str(), &st) == 0);
	return st.st_mode & 07777;
}

} // namespace

TEST_CASE("write_file_atomic: new files get the mode asked; replacing keeps the old one")
{
	char tmpl[] = "/tmp/memfed-atomic-test.XXXXXX";
	REQUIRE(mkdtemp(tmpl) != nullptr);
	std::string dir = tmpl;
	std::string f = dir + "/f";
	mode_t old_umask = umask(077);
	REQUIRE(write_file_atomic(f, "one\n", AtomicWrite{0644, true, true}, "test file"));
	umask(old_umask);
	CHECK(slurp(f) == "one\n");
	CHECK(mode_of(f) == 0644); // not narrowed by the umask

	REQUIRE(chmod(f.c_str(), 0640) == 0);
	REQUIRE(write_file_atomic(f, "two\n", AtomicWrite{0600, true, true}, "test file"));
	CHECK(slurp(f) == "two\n");
	CHECK(mode_of(f) == 0640);
	REQUIRE(write_file_atomic(f, "three\n", AtomicWrite{0600, true, false}, "test file"));
	CHECK(mode_of(f) == 0600);

	Status st = write_file_atomic(f, "four\n", AtomicWrite{0600, false, false}, "test file");
	CHECK(st.code() == Code::kAlreadyExists);
	CHECK(st.message().find(f) != std::string::npos);
	CHECK(slurp(f) == "three\n");
	CHECK(!std::filesystem::exists(f + ".tmp"));

	st = write_file_atomic(dir + "/missing/f", "x", AtomicWrite{}, "test file");
	CHECK(st.code() != Code::kOk);
	CHECK(st.message().find(dir + "/missing/f") != std::string::npos);
	std::filesystem::remove_all(dir);
}
