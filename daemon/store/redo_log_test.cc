#include "daemon/store/redo_log.h"

#include <catch2/catch.hpp>

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

struct Fixture {
	TestPoolDir dir;
	std::string path = dir.path("pool");
	store::Geometry geo = store::compute_geometry(kPoolSize);
	std::unique_ptr<ModuleStore> s;
	RegionInfo r;

	Fixture()
	{
		REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
		reopen();
		r = *s->create_region("log", 8 * kPageSize, 0, 0600);
	}
	void reopen()
	{
		s.reset();
		auto o = ModuleStore::open(path, kPoolSize);
		INFO(o.status().to_string());
		REQUIRE(o.is_ok());
		s = std::move(*o);
	}
	void write(uint32_t page, uint32_t count, uint8_t fill)
	{
		std::vector<uint8_t> buf(count * kPageSize, fill);
		REQUIRE(s->write_pages(r.id, r.fa_offset + page * kPageSize, count, buf.data())
		                .is_ok());
	}
	// A write that "crashes" after its records are durable.
	void crash_write(uint32_t page, uint32_t count, uint8_t fill)
	{
		std::vector<uint8_t> buf(count * kPageSize, fill);
		s->set_crash_after_log_for_test(true);
		REQUIRE(s->write_pages(r.id, r.fa_offset + page * kPageSize, count, buf.data())
		                .code() == Code::kInternal);
		s.reset();
	}
	uint8_t page_fill(uint32_t page)
	{
		std::vector<uint8_t> buf(kPageSize);
		REQUIRE(s->read_pages(r.id, r.fa_offset + page * kPageSize, 1, buf.data()).is_ok());
		for (uint8_t b : buf)
			REQUIRE(b == buf[0]);
		return buf[0];
	}
	store::RedoLog::ScanResult scan()
	{
		auto f = store::PoolFile::open(path, false, false);
		REQUIRE(f.is_ok());
		REQUIRE((*f)->map(false).is_ok());
		return store::RedoLog::scan((*f)->base(), geo);
	}
};

} // namespace

TEST_CASE("a logged but unapplied write is replayed at open", "[store][redo]")
{
	Fixture f;
	f.write(0, 3, 0x11);
	f.reopen(); // open clears the log: only the crashed write's records remain
	f.crash_write(1, 2, 0x22);
	REQUIRE(f.scan().valid.size() == 2);
	auto rep = ModuleStore::check(f.path);
	REQUIRE(rep.is_ok());
	REQUIRE(rep->log_records == 2);
	REQUIRE(rep->clean); // pending records are not damage
	f.reopen();
	REQUIRE(f.s->info().log_replays == 2);
	REQUIRE(f.page_fill(0) == 0x11);
	REQUIRE(f.page_fill(1) == 0x22);
	REQUIRE(f.page_fill(2) == 0x22);
	REQUIRE(f.scan().valid.empty()); // cleared after replay
	// Later writes keep going with higher sequence numbers and win.
	f.write(1, 1, 0x33);
	f.reopen();
	REQUIRE(f.page_fill(1) == 0x33);
	f.s.reset();
	REQUIRE(ModuleStore::check(f.path)->clean);
}

TEST_CASE("a torn record is ignored and its page keeps its old content", "[store][redo]")
{
	Fixture f;
	f.write(0, 2, 0x11);
	f.reopen();
	f.crash_write(0, 2, 0x22);
	auto sc = f.scan();
	REQUIRE(sc.valid.size() == 2);
	// Tear the record of page 1: its payload no longer matches its crc.
	const auto &rec =
	        sc.valid[1].fa_offset == f.r.fa_offset + kPageSize ? sc.valid[1] : sc.valid[0];
	store::flip_byte(f.path, f.geo.log_data_offset + rec.slot * kPageSize + 100);
	REQUIRE(f.scan().torn == 1);
	f.reopen();
	REQUIRE(f.s->info().log_replays == 1);
	REQUIRE(f.page_fill(0) == 0x22);
	REQUIRE(f.page_fill(1) == 0x11);

	// A torn descriptor (bad descriptor crc) is ignored too.
	f.crash_write(2, 1, 0x44);
	sc = f.scan();
	REQUIRE(sc.valid.size() == 1);
	store::flip_byte(f.path, f.geo.log_desc_offset +
	                                 sc.valid[0].slot * sizeof(store::LogDescriptor) + 16);
	f.reopen();
	REQUIRE(f.page_fill(2) == 0);
	f.s.reset();
	REQUIRE(ModuleStore::check(f.path)->clean);
}

TEST_CASE("an old record never undoes a newer write whose record was torn", "[store][redo]")
{
	Fixture f;
	f.write(0, 1, 0x11);       // seq n, applied, still in the log
	f.crash_write(0, 1, 0x22); // seq n+1, logged only
	auto sc = f.scan();
	REQUIRE(sc.valid.size() == 2);
	f.reopen(); // replays n (no-op: version n) and n+1
	REQUIRE(f.page_fill(0) == 0x22);

	// Now: newer write applied, its record torn by a later overwrite of the
	// slot, while an older record for the page is still valid.
	f.write(0, 1, 0x33); // seq m, slot 0
	f.write(0, 1, 0x44); // seq m+1, slot 1, applied
	sc = f.scan();
	REQUIRE(sc.valid.size() == 2);
	f.s.reset();
	store::flip_byte(f.path, f.geo.log_data_offset + sc.valid[1].slot * kPageSize);
	f.reopen();
	REQUIRE(f.page_fill(0) == 0x44);
}

TEST_CASE("records of a deleted region are never replayed into its successor", "[store][redo]")
{
	Fixture f;
	f.write(0, 8, 0x55);
	REQUIRE(f.scan().valid.empty() == false);
	REQUIRE(f.s->delete_region("log").is_ok());
	auto b = f.s->create_region("next", 8 * kPageSize, 0, 0600);
	REQUIRE(b.is_ok());
	REQUIRE(b->fa_offset == f.r.fa_offset);
	f.r = *b;
	f.reopen();
	REQUIRE(f.s->info().log_replays == 0);
	for (uint32_t p = 0; p < 8; p++)
		REQUIRE(f.page_fill(p) == 0);
}

TEST_CASE("writes larger than the log ring are split and stay durable", "[store][redo]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, 8 << 20, {}}).is_ok());
	uint32_t pages = store::kLogSlots + 10;
	std::vector<uint8_t> buf(pages * kPageSize);
	for (size_t i = 0; i < buf.size(); i++)
		buf[i] = static_cast<uint8_t>(i / kPageSize);
	RegionInfo r;
	{
		auto s = std::move(*ModuleStore::open(path, 0));
		r = *s->create_region("big", pages * kPageSize, 0, 0600);
		REQUIRE(s->write_pages(r.id, r.fa_offset, pages, buf.data()).is_ok());
		REQUIRE(s->write_pages(r.id, r.fa_offset, pages, buf.data()).is_ok()); // ring wraps
	}
	auto s = std::move(*ModuleStore::open(path, 0));
	std::vector<uint8_t> back(buf.size());
	REQUIRE(s->read_pages(r.id, r.fa_offset, pages, back.data()).is_ok());
	REQUIRE(back == buf);
}

TEST_CASE("replay after the ring wrapped keeps every page's newest content", "[store][redo]")
{
	Fixture f;
	// 270 single-page writes over 8 pages: the ring wraps and each page has
	// several records of different ages in the log.
	std::vector<uint8_t> last(8, 0);
	for (uint32_t i = 0; i < 270; i++) {
		uint32_t page = (i * 5) % 8;
		uint8_t fill = static_cast<uint8_t>(1 + i % 250);
		f.write(page, 1, fill);
		last[page] = fill;
	}
	f.crash_write(3, 1, 0xfe);
	last[3] = 0xfe;
	f.reopen();
	REQUIRE(f.s->info().log_replays > 0);
	for (uint32_t p = 0; p < 8; p++)
		REQUIRE(f.page_fill(p) == last[p]);
	f.s.reset();
	REQUIRE(ModuleStore::check(f.path)->clean);
}

TEST_CASE("a logged versioned write is replayed with its versions", "[store][redo][versioned]")
{
	Fixture f;
	uint32_t applied = 0;
	std::vector<uint8_t> buf(3 * kPageSize, 0x21);
	REQUIRE(f.s->write_pages_versioned(f.r.id, f.r.fa_offset, 3, buf.data(), 5,
	                                   VersionedMode::kNewer, &applied)
	                .is_ok());
	f.reopen();
	// The crashed write: version 6 over pages 1..3 (page 3 was never written).
	std::fill(buf.begin(), buf.end(), 0x62);
	f.s->set_crash_after_log_for_test(true);
	REQUIRE(f.s->write_pages_versioned(f.r.id, f.r.fa_offset + kPageSize, 3, buf.data(), 6,
	                                   VersionedMode::kNewer, &applied)
	                .code() == Code::kInternal);
	f.s.reset();
	auto scan = f.scan();
	REQUIRE(scan.valid.size() == 3);
	REQUIRE(scan.valid[0].wversion == 6);
	REQUIRE(ModuleStore::check(f.path)->clean);
	f.reopen();
	REQUIRE(f.s->info().log_replays == 3);
	uint64_t v[4];
	REQUIRE(f.s->read_versions(f.r.id, f.r.fa_offset, 4, v).is_ok());
	REQUIRE(v[0] == 5);
	REQUIRE(v[1] == 6);
	REQUIRE(v[2] == 6);
	REQUIRE(v[3] == 6);
	REQUIRE(f.page_fill(0) == 0x21);
	REQUIRE(f.page_fill(3) == 0x62);
	// An unversioned record replays without touching the versions.
	f.crash_write(1, 1, 0x73);
	f.reopen();
	REQUIRE(f.page_fill(1) == 0x73);
	REQUIRE(f.s->read_versions(f.r.id, f.r.fa_offset + kPageSize, 1, v).is_ok());
	REQUIRE(v[0] == 6);
	// The replayed version still guards the page: an older version loses.
	REQUIRE(f.s->write_pages_versioned(f.r.id, f.r.fa_offset + kPageSize, 1, buf.data(), 4,
	                                   VersionedMode::kNewer, &applied)
	                .is_ok());
	REQUIRE(applied == 0);
	f.s.reset();
	REQUIRE(ModuleStore::check(f.path)->clean);
}
