#include "daemon/store/check.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <cstring>
#include <vector>

#include "daemon/store/pool.h"
#include "daemon/store/test_pool_dir.h"

using namespace memfed;
using store::kPageSize;
using store::TestPoolDir;

namespace
{

constexpr uint64_t kPoolSize = 4 << 20;

// What the file at `path` holds: its length and the bytes of every part that
// is not a hole (a thin pool's file is 4 TiB long and mostly holes).
std::vector<char> file_bytes(const std::string &path)
{
	auto f = std::move(*store::PoolFile::open(path, false, false));
	uint64_t len = *f->size();
	std::vector<char> bytes(reinterpret_cast<const char *>(&len),
	                        reinterpret_cast<const char *>(&len) + sizeof(len));
	auto ranges = f->data_ranges(0, len);
	REQUIRE(ranges.is_ok());
	for (auto [off, n] : *ranges) {
		size_t at = bytes.size();
		bytes.resize(at + 2 * sizeof(uint64_t) + n);
		memcpy(&bytes[at], &off, sizeof(off));
		memcpy(&bytes[at + sizeof(off)], &n, sizeof(n));
		REQUIRE(f->read_at(&bytes[at + 2 * sizeof(uint64_t)], n, off).is_ok());
	}
	return bytes;
}

bool any_problem_contains(const CheckReport &rep, const std::string &part)
{
	for (const std::string &p : rep.problems)
		if (p.find(part) != std::string::npos)
			return true;
	return false;
}

struct Pool {
	TestPoolDir dir;
	std::string path = dir.path("pool");
	store::Geometry geo = store::compute_thin_geometry(kPoolSize, 0, false);
	RegionInfo a, b;

	Pool()
	{
		REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
		auto s = std::move(*ModuleStore::open(path, 0));
		a = *s->create_region("a", 4 * kPageSize, 0, 0600);
		b = *s->create_region("b", 4 * kPageSize, 0, 0600);
		std::vector<uint8_t> buf(3 * kPageSize, 0x5a);
		REQUIRE(s->write_pages(a.id, a.fa_offset, 3, buf.data()).is_ok());
		REQUIRE(s->write_pages(b.id, b.fa_offset + kPageSize, 1, buf.data()).is_ok());
		s.reset();
		// Reopening clears the redo log, whose records would otherwise
		// repair a corrupted home page at the next open.
		REQUIRE(ModuleStore::open(path, 0).is_ok());
	}
};

} // namespace

TEST_CASE("check of a healthy pool is clean and counts what it saw", "[store][check]")
{
	Pool p;
	auto rep = ModuleStore::check(p.path);
	REQUIRE(rep.is_ok());
	INFO((rep->problems.empty() ? "" : rep->problems[0]));
	REQUIRE(rep->clean);
	REQUIRE(rep->regions_checked == 2);
	// Only what is not a hole: the pages whose metas share a file page
	// with the written ones, not the 4 TiB address space.
	REQUIRE(rep->pages_checked >= 8);
	REQUIRE(rep->pages_checked <= 4096);
	REQUIRE(rep->pages_written == 4);
	REQUIRE(rep->bad_pages == 0);
}

TEST_CASE("check finds a corrupted page and does not modify the pool", "[store][check]")
{
	Pool p;
	store::flip_byte(p.path, p.a.fa_offset + kPageSize + 17);
	std::vector<char> before = file_bytes(p.path);
	auto rep = ModuleStore::check(p.path);
	REQUIRE(rep.is_ok());
	REQUIRE_FALSE(rep->clean);
	REQUIRE(rep->bad_pages == 1);
	char fa[32];
	snprintf(fa, sizeof(fa), "0x%llx",
	         static_cast<unsigned long long>(p.a.fa_offset + kPageSize));
	REQUIRE(any_problem_contains(*rep, fa));
	REQUIRE(file_bytes(p.path) == before);

	// The daemon refuses to serve the damaged page, and serves the others.
	auto s = std::move(*ModuleStore::open(p.path, 0));
	std::vector<uint8_t> buf(kPageSize);
	REQUIRE(s->read_pages(p.a.id, p.a.fa_offset + kPageSize, 1, buf.data()).code() ==
	        Code::kCorrupt);
	REQUIRE(s->read_pages(p.a.id, p.a.fa_offset, 1, buf.data()).is_ok());
}

TEST_CASE("check finds garbage in never-written and free pages", "[store][check]")
{
	Pool p;
	store::flip_byte(p.path, p.b.fa_offset + 5);    // in b, unwritten
	store::flip_byte(p.path, p.geo.data_end() - 3); // free space
	auto rep = ModuleStore::check(p.path);
	REQUIRE(rep.is_ok());
	REQUIRE(rep->bad_pages == 2);
	REQUIRE(any_problem_contains(*rep, "never written but not zero"));
}

TEST_CASE("check reads no hole of a pool in memory", "[store][check][thin]")
{
	// On tmpfs a read of a hole through the mapping allocates the page: a
	// check that read every never-written page near a written one would
	// grow the pool's memory by up to 255 pages per page written.
	TestPoolDir dir(TestPoolDir::kInMemory);
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	constexpr uint64_t kWritten = 32, kApart = 256;
	{
		auto s = std::move(*ModuleStore::open(path, 0));
		auto r = s->create_region("sparse", kWritten * kApart * kPageSize, 0, 0600);
		REQUIRE(r.is_ok());
		std::vector<uint8_t> page(kPageSize, 0x6b);
		for (uint64_t i = 0; i < kWritten; i++)
			REQUIRE(s->write_pages(r->id, r->fa_offset + i * kApart * kPageSize, 1,
			                       page.data())
			                .is_ok());
	}
	auto allocated = [&] {
		struct stat st;
		REQUIRE(stat(path.c_str(), &st) == 0);
		return uint64_t(st.st_blocks) * 512;
	};
	const uint64_t before = allocated();
	auto rep = ModuleStore::check(path);
	REQUIRE(rep.is_ok());
	INFO((rep->problems.empty() ? "" : rep->problems[0]));
	REQUIRE(rep->clean);
	REQUIRE(rep->pages_written == kWritten);
	REQUIRE(rep->pages_checked >= kWritten * kApart / 2); // the metas' neighbours too
	CHECK(allocated() - before < kWritten * kPageSize);
}

TEST_CASE("check finds a corrupted region table entry; open refuses it", "[store][check]")
{
	Pool p;
	// Entry of slot 1 (region b): flip a byte of its name.
	store::flip_byte(p.path, p.geo.table_offset + sizeof(store::RegionEntry) +
	                                 offsetof(store::RegionEntry, name));
	auto rep = ModuleStore::check(p.path);
	REQUIRE(rep.is_ok());
	REQUIRE_FALSE(rep->clean);
	REQUIRE(any_problem_contains(*rep, "region table slot 1 fails its checksum"));
	auto o = ModuleStore::open(p.path, 0);
	REQUIRE(o.status().code() == Code::kCorrupt);
	REQUIRE(o.status().message().find("slot 1") != std::string::npos);
}

TEST_CASE("check finds overlapping regions", "[store][check]")
{
	Pool p;
	// Point b at a's extent and fix up b's crc, as a buggy writer would.
	auto f = std::move(*store::PoolFile::open(p.path, true, false));
	REQUIRE(f->map(true).is_ok());
	auto *e = reinterpret_cast<store::RegionEntry *>(f->base() + p.geo.table_offset) + 1;
	e->fa_offset = p.a.fa_offset + kPageSize;
	e->crc = store::entry_crc(*e);
	f.reset();
	auto rep = ModuleStore::check(p.path);
	REQUIRE(rep.is_ok());
	REQUIRE(any_problem_contains(*rep, "overlaps"));
	REQUIRE(ModuleStore::open(p.path, 0).status().code() == Code::kCorrupt);
}

TEST_CASE("check reads a table sized to the pool, past slot 1024", "[store][check]")
{
	TestPoolDir dir(TestPoolDir::kInMemory);
	std::string path = dir.path("pool");
	const uint64_t size = 64 << 20; // 2048 slots
	REQUIRE(ModuleStore::format(PoolOptions{path, size, {}}).is_ok());
	store::Geometry geo = store::compute_geometry(size);
	REQUIRE(geo.table_slots == 2048);
	{
		auto s = std::move(*ModuleStore::open(path, 0));
		for (int i = 0; i < 1100; i++) {
			std::string name = std::to_string(i); // region i lands in slot i
			REQUIRE(s->create_region(name, kPageSize, 0, 0600).is_ok());
		}
	}
	auto rep = ModuleStore::check(path);
	REQUIRE(rep->clean);
	REQUIRE(rep->regions_checked == 1100);
	// Slot 1099 lies beyond a version-1 table: damage there is found too.
	store::flip_byte(path, geo.table_offset + 1099 * sizeof(store::RegionEntry) +
	                               offsetof(store::RegionEntry, name));
	rep = ModuleStore::check(path);
	REQUIRE_FALSE(rep->clean);
	REQUIRE(any_problem_contains(*rep, "region table slot 1099 fails its checksum"));
}

TEST_CASE("check finds a page version on a page in no region", "[store][check][versioned]")
{
	Pool p;
	REQUIRE(p.geo.has_versions());
	REQUIRE(ModuleStore::check(p.path)->clean);
	// The last data page lies in no region.
	uint64_t last = p.geo.data_pages - 1;
	store::flip_byte(p.path, p.geo.version_fa(last));
	auto rep = ModuleStore::check(p.path);
	REQUIRE(rep.is_ok());
	REQUIRE_FALSE(rep->clean);
	REQUIRE(rep->bad_pages == 1);
	REQUIRE(any_problem_contains(*rep, "has page version 255 but is in no region"));
}

TEST_CASE("check accepts a first write cut short while applied; open replays it",
          "[store][check][redo]")
{
	// A crash after a write's records are durable, while the apply copies
	// the page home: a page never written before holds some of its new
	// bytes (or all of them, and its crc) with its meta's version still 0.
	Pool p;
	std::vector<uint8_t> buf(kPageSize, 0x77);
	{
		auto s = std::move(*ModuleStore::open(p.path, 0));
		s->set_crash_after_log_for_test(true);
		REQUIRE(s->write_pages(p.b.id, p.b.fa_offset, 1, buf.data()).code() ==
		        Code::kInternal);
	}
	bool whole = false;
	SECTION("half the page copied") {}
	SECTION("the page copied and its crc stored, not its version")
	{
		whole = true;
	}
	{
		auto f = std::move(*store::PoolFile::open(p.path, true, false));
		REQUIRE(f->map(true).is_ok());
		store::RedoLog::ScanResult scan = store::RedoLog::scan(f->base(), p.geo);
		REQUIRE(scan.valid.size() == 1);
		REQUIRE(scan.valid[0].fa_offset == p.b.fa_offset);
		memcpy(f->base() + p.b.fa_offset,
		       store::RedoLog::payload(f->base(), p.geo, scan.valid[0].slot),
		       whole ? kPageSize : kPageSize / 2);
		auto *m = reinterpret_cast<store::PageMeta *>(
		        f->base() + p.geo.meta_fa(p.geo.page_index(p.b.fa_offset)));
		REQUIRE(m->version == 0);
		if (whole)
			m->crc = scan.valid[0].page_crc;
	}
	auto rep = ModuleStore::check(p.path);
	REQUIRE(rep.is_ok());
	INFO((rep->problems.empty() ? "" : rep->problems[0]));
	REQUIRE(rep->clean);
	REQUIRE(rep->log_records == 1);

	// The next open replays the record over the page.
	{
		auto s = std::move(*ModuleStore::open(p.path, 0));
		REQUIRE(s->info().log_replays == 1);
		std::vector<uint8_t> got(kPageSize);
		REQUIRE(s->read_pages(p.b.id, p.b.fa_offset, 1, got.data()).is_ok());
		REQUIRE(got == buf);
	}
	rep = ModuleStore::check(p.path);
	REQUIRE(rep->clean);
	REQUIRE(rep->log_records == 0);
}

TEST_CASE("check flags a never-written page whose record targets another page",
          "[store][check][redo]")
{
	// Only a record for the page itself excuses bytes under version 0.
	Pool p;
	std::vector<uint8_t> buf(kPageSize, 0x77);
	{
		auto s = std::move(*ModuleStore::open(p.path, 0));
		s->set_crash_after_log_for_test(true);
		REQUIRE(s->write_pages(p.b.id, p.b.fa_offset, 1, buf.data()).code() ==
		        Code::kInternal);
	}
	store::flip_byte(p.path, p.b.fa_offset + 2 * kPageSize + 9);
	auto rep = ModuleStore::check(p.path);
	REQUIRE(rep.is_ok());
	REQUIRE(rep->bad_pages == 1);
	REQUIRE(any_problem_contains(*rep, "never written but not zero"));
}
