// Test helper: a fresh directory under /tmp, removed with its contents at the
// end of the test, and raw byte access to pool files for corruption tests.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace memfed::store
{

class TestPoolDir
{
public:
	// `base`: where to make it. A test that makes thousands of regions
	// (a durable msync each: milliseconds on a disk) uses kInMemory, and
	// /tmp if that is missing.
	static constexpr const char *kInMemory = "/dev/shm";
	explicit TestPoolDir(const std::string &base = "/tmp")
	{
		std::string tmpl = base + "/memfed-store-test-XXXXXX";
		char *d = mkdtemp(tmpl.data());
		if (d == nullptr) {
			tmpl = "/tmp/memfed-store-test-XXXXXX";
			d = mkdtemp(tmpl.data());
		}
		dir_ = d != nullptr ? d : "";
	}
	~TestPoolDir() { std::filesystem::remove_all(dir_); }
	std::string path(const std::string &name) const { return dir_ + "/" + name; }

private:
	std::string dir_;
};

// XORs byte `offset` of the file at `path` with 0xff.
inline void flip_byte(const std::string &path, uint64_t offset)
{
	int fd = open(path.c_str(), O_RDWR);
	uint8_t b = 0;
	if (pread(fd, &b, 1, static_cast<off_t>(offset)) == 1) {
		b ^= 0xff;
		(void)!pwrite(fd, &b, 1, static_cast<off_t>(offset));
	}
	close(fd);
}

} // namespace memfed::store
