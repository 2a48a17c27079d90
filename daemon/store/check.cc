#include "daemon/store/check.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "daemon/common/crc32c.h"
#include "daemon/store/layout.h"
#include "daemon/store/pool_file.h"
#include "daemon/store/redo_log.h"
#include "daemon/store/region_table.h"

namespace memfed::store
{

namespace
{

std::string hex(uint64_t v)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
	return buf;
}

} // namespace

Result<CheckReport> check_pool(const std::string &path)
{
	auto fr = PoolFile::open(path, false, false);
	if (!fr)
		return fr.status();
	PoolFile &f = **fr;
	MF_RETURN_IF_ERROR(f.lock());
	CheckReport rep;
	auto done = [&rep]() -> Result<CheckReport> {
		rep.clean = rep.problems.empty();
		return rep;
	};

	auto sz = f.size();
	if (!sz)
		return sz.status();
	PoolHeader h;
	if (*sz < sizeof(h)) {
		rep.problems.push_back("pool is " + std::to_string(*sz) +
		                       " bytes, too short for a header");
		return done();
	}
	MF_RETURN_IF_ERROR(f.read_at(&h, sizeof(h), 0));
	Status hs = validate_header(h, path);
	if (!hs.is_ok()) {
		rep.problems.push_back(hs.message());
		return done();
	}
	if (*sz != h.pool_bytes) {
		rep.problems.push_back("pool is " + std::to_string(*sz) +
		                       " bytes but its header says " +
		                       std::to_string(h.pool_bytes));
		return done();
	}
	MF_RETURN_IF_ERROR(f.map(false));
	const uint8_t *base = f.base();
	Geometry geo = geometry_of(h);

	// Region table: entry checks, then duplicates and overlaps among the rest.
	std::vector<RegionSlot> slots = RegionTable::read_all(base, geo, &rep.problems);
	std::set<std::string> names;
	// Live (mark 1) and deleting (mark 2) extents: start page -> (pages, mark).
	// An interval map, not a byte per page: a thin pool has 2^30 data pages.
	std::map<uint64_t, std::pair<uint64_t, uint8_t>> extents;
	auto owner = [&](uint64_t i) -> uint8_t {
		auto it = extents.upper_bound(i);
		if (it == extents.begin())
			return 0;
		--it;
		return i < it->first + it->second.first ? it->second.second : 0;
	};
	for (const RegionSlot &s : slots) {
		if (s.state == kRegionFree)
			continue;
		if (s.state == kRegionLive) {
			rep.regions_checked++;
			if (!names.insert(s.info.name).second)
				rep.problems.push_back("region name '" + s.info.name +
				                       "' appears twice (slot " +
				                       std::to_string(s.slot) + ")");
		}
		uint64_t first = geo.page_index(s.info.fa_offset),
		         pages = s.info.size_bytes / kPageSize;
		bool overlap = false;
		auto next = extents.lower_bound(first);
		if (next != extents.end() && next->first < first + pages)
			overlap = true;
		if (next != extents.begin() &&
		    std::prev(next)->first + std::prev(next)->second.first > first)
			overlap = true;
		if (overlap)
			rep.problems.push_back("region '" + s.info.name + "' (slot " +
			                       std::to_string(s.slot) +
			                       ") overlaps another region");
		uint8_t mark = s.state == kRegionLive ? 1 : 2;
		if (!overlap)
			extents[first] = {pages, mark};
	}

	// Clones (layout 6): each reads through to a live region, inside it.
	std::map<uint32_t, const RegionSlot *> by_id;
	for (const RegionSlot &s : slots)
		if (s.state == kRegionLive)
			by_id[s.info.id] = &s;
	for (const RegionSlot &s : slots) {
		if (s.state != kRegionLive || !s.info.is_clone)
			continue;
		auto b = by_id.find(s.info.base_id);
		if (b == by_id.end())
			rep.problems.push_back("region '" + s.info.name +
			                       "' is a clone of region id " +
			                       std::to_string(s.info.base_id) +
			                       ", which is not live (the next open detaches it)");
		else if (s.info.base_page > kCloneMaxBasePage ||
		         s.info.base_page * kPageSize + s.info.size_bytes > b->second->info.size_bytes)
			rep.problems.push_back("region '" + s.info.name +
			                       "' is a clone of a range past the end of region '" +
			                       b->second->info.name + "'");
	}

	// Redo log: valid records are replayed at the next open; torn ones are
	// the expected trace of a crash mid-write and are ignored.
	RedoLog::ScanResult scan = RedoLog::scan(base, geo);
	rep.log_records = scan.valid.size();
	std::map<uint64_t, uint64_t> pending; // page index -> newest logged seq
	for (const RedoLog::Record &r : scan.valid) {
		if (r.fa_offset < geo.data_offset || r.fa_offset >= geo.data_end() ||
		    (r.fa_offset - geo.data_offset) % kPageSize != 0) {
			rep.problems.push_back("redo-log record seq " + std::to_string(r.seq) +
			                       " (slot " + std::to_string(r.slot) + ") targets " +
			                       hex(r.fa_offset) + ", outside the data area");
			continue;
		}
		uint64_t idx = geo.page_index(r.fa_offset);
		pending[idx] = std::max(pending[idx], r.seq);
	}

	// Pages: a written page matches its crc (unless a newer logged record will
	// rewrite it) and lies in a region; an unwritten page is all zeros (unless
	// a logged record will write it).
	const uint32_t zero_crc = zero_page_crc();
	const PageMeta *meta = reinterpret_cast<const PageMeta *>(base + geo.meta_offset);
	// Layout 3: each page's writer version; a page outside every region has
	// none (delete zeroes it with the meta).
	const uint64_t *wversions =
	        geo.has_versions() ? reinterpret_cast<const uint64_t *>(base + geo.version_offset)
	                           : nullptr;
	// Only pages whose meta, version entry or content is not a hole in the
	// file: a hole reads as zeros, which is what a page never written is.
	std::vector<std::pair<uint64_t, uint64_t>> runs;
	auto add_runs = [&](uint64_t area, uint64_t bytes_per_page) -> Status {
		auto ranges = f.data_ranges(area, geo.data_pages * bytes_per_page);
		if (!ranges)
			return ranges.status();
		for (auto [off, len] : *ranges)
			runs.emplace_back(
			        (off - area) / bytes_per_page,
			        std::min(geo.data_pages,
			                 (off + len - area + bytes_per_page - 1) / bytes_per_page));
		return Status::ok();
	};
	MF_RETURN_IF_ERROR(add_runs(geo.meta_offset, sizeof(PageMeta)));
	if (geo.has_versions())
		MF_RETURN_IF_ERROR(add_runs(geo.version_offset, sizeof(uint64_t)));
	const size_t meta_runs = runs.size();
	MF_RETURN_IF_ERROR(add_runs(geo.data_offset, kPageSize));
	// The pages whose content is not a hole, in order (data_ranges gives
	// them so). A page never written is read only if it is among them:
	// reading a hole of a tmpfs pool through the mapping would allocate it,
	// and a hole is zeros anyway.
	const std::vector<std::pair<uint64_t, uint64_t>> data_runs(runs.begin() + long(meta_runs),
	                                                           runs.end());
	size_t data_run = 0;
	auto has_data = [&](uint64_t i) {
		while (data_run < data_runs.size() && data_runs[data_run].second <= i)
			data_run++;
		return data_run < data_runs.size() && data_runs[data_run].first <= i;
	};
	std::sort(runs.begin(), runs.end());
	uint64_t live_written = 0;
	uint64_t next_page = 0; // pages below it were checked
	for (auto [b, e] : runs)
		for (uint64_t i = std::max(b, next_page); i < e; i++, next_page = i) {
			rep.pages_checked++;
			const uint8_t *page = base + geo.page_fa(i);
			PageMeta m = meta[i];
			auto bad = [&](const std::string &why) {
				rep.bad_pages++;
				if (rep.bad_pages <= 100)
					rep.problems.push_back("page " + hex(geo.page_fa(i)) +
					                       ": " + why);
			};
			if (wversions != nullptr && wversions[i] != 0 && owner(i) == 0) {
				bad("has page version " + std::to_string(wversions[i]) +
				    " but is in no region");
				continue;
			}
			auto p = pending.find(i);
			if (m.version == 0) {
				// A crash while the first write of the page was
				// applied (its record durable, the page copied home
				// in whole or in part, the meta not yet stored, or
				// only its crc) leaves bytes under version 0. The
				// next open replays the record over it, as it does
				// any record for a page of a live region whose
				// version is older (0 is older than every seq), so
				// the bytes are never read. A clone takes many
				// first writes at once (copies of its base's pages).
				if (p != pending.end() && owner(i) == 1)
					continue;
				if (m.crc != 0 || (has_data(i) && !page_is_zero(page)))
					bad("never written but not zero");
				continue;
			}
			rep.pages_written++;
			if (owner(i) == 1)
				live_written++;
			if (owner(i) == 0) {
				bad("written (version " + std::to_string(m.version) +
				    ") but in no region");
				continue;
			}
			if (p != pending.end() && p->second >= m.version)
				continue; // the next open replays it
			uint32_t crc = crc32c(page, kPageSize);
			if (crc != m.crc && !(crc == zero_crc && owner(i) == 2))
				bad("checksum mismatch (version " + std::to_string(m.version) +
				    ")");
		}
	// A thin pool (layout.h) holds at most capacity_pages written pages.
	if (live_written > geo.capacity_pages)
		rep.problems.push_back("regions hold " + std::to_string(live_written) +
		                       " written pages, more than the pool's capacity of " +
		                       std::to_string(geo.capacity_pages) + " pages");
	if (rep.bad_pages > 100)
		rep.problems.push_back(std::to_string(rep.bad_pages - 100) +
		                       " more bad pages not listed");
	return done();
}

} // namespace memfed::store
