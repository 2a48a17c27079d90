#include "daemon/store/layout.h"

#include <algorithm>
#include <cstring>

#include "daemon/common/crc32c.h"

namespace memfed::store
{

namespace
{

uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

uint64_t access_area_bytes(uint32_t table_slots)
{
	return round_up(uint64_t{table_slots} * 2 * sizeof(AccessRecord), kPageSize);
}

} // namespace

uint32_t default_table_slots(uint64_t pool_bytes)
{
	uint64_t want = pool_bytes / kPoolBytesPerSlot;
	uint32_t slots = kMinTableSlots;
	while (slots < kMaxTableSlots && uint64_t{slots} * 2 <= want)
		slots *= 2;
	return slots;
}

namespace
{

uint64_t clone_area_bytes(uint32_t table_slots)
{
	return round_up(uint64_t{table_slots} * sizeof(uint64_t), kPageSize);
}

// The areas of layout `layout_version` up to the meta area, for a table of
// `table_slots`.
Geometry place_fixed_areas(uint64_t pool_bytes, uint32_t table_slots, uint32_t layout_version)
{
	Geometry g;
	g.pool_bytes = pool_bytes;
	g.table_slots = table_slots != 0 ? table_slots : default_table_slots(pool_bytes);
	g.table_offset = kPageSize;
	g.log_desc_offset =
	        g.table_offset + round_up(uint64_t{g.table_slots} * sizeof(RegionEntry), kPageSize);
	if (layout_version >= kLayoutVersionAccess) {
		g.access_offset = g.log_desc_offset;
		g.log_desc_offset = g.access_offset + access_area_bytes(g.table_slots);
	}
	if (layout_version >= kLayoutVersionClones) {
		g.clone_offset = g.log_desc_offset;
		g.log_desc_offset = g.clone_offset + clone_area_bytes(g.table_slots);
	}
	g.log_data_offset = g.log_desc_offset +
	                    round_up(uint64_t{kLogSlots} * sizeof(LogDescriptor), kPageSize);
	g.meta_offset = g.log_data_offset + uint64_t{kLogSlots} * kPageSize;
	g.data_offset = g.meta_offset;
	return g;
}

uint64_t version_entry_bytes(uint32_t layout_version)
{
	return layout_version >= kLayoutVersionVersions ? sizeof(uint64_t) : 0;
}

// Places the meta, version and data areas of `pages` data pages after g's
// fixed areas.
void place_page_areas(Geometry *g, uint64_t pages, uint32_t layout_version)
{
	const uint64_t version_bytes = version_entry_bytes(layout_version);
	g->data_pages = pages;
	g->capacity_pages = pages;
	uint64_t meta_end = g->meta_offset + round_up(pages * sizeof(PageMeta), kPageSize);
	if (version_bytes != 0)
		g->version_offset = meta_end;
	g->data_offset = meta_end + round_up(pages * version_bytes, kPageSize);
}

} // namespace

Geometry compute_geometry(uint64_t pool_bytes, uint32_t table_slots, uint32_t layout_version)
{
	Geometry g = place_fixed_areas(pool_bytes, table_slots, layout_version);
	if (pool_bytes <= g.meta_offset)
		return g;
	// Each data page costs kPageSize plus sizeof(PageMeta) of (page-rounded)
	// meta, plus 8 bytes of (page-rounded) version area from layout 3 on.
	const uint64_t version_bytes = version_entry_bytes(layout_version);
	auto overhead = [&](uint64_t pages) {
		return round_up(pages * sizeof(PageMeta), kPageSize) +
		       round_up(pages * version_bytes, kPageSize);
	};
	uint64_t avail = pool_bytes - g.meta_offset;
	uint64_t pages = avail / (kPageSize + sizeof(PageMeta) + version_bytes);
	while (pages > 0 && overhead(pages) + pages * kPageSize > avail)
		pages--;
	place_page_areas(&g, pages, layout_version);
	return g;
}

Geometry compute_thin_geometry(uint64_t size_bytes, uint32_t table_slots, bool thick)
{
	Geometry g = compute_geometry(size_bytes, table_slots, kLayoutVersion);
	if (g.data_pages == 0 || thick)
		return g;
	const uint64_t capacity = g.data_pages;
	Geometry t = place_fixed_areas(0, g.table_slots, kLayoutVersion);
	place_page_areas(&t, std::max(capacity, kThinDataPages), kLayoutVersion);
	t.capacity_pages = capacity;
	t.pool_bytes = t.data_end();
	return t;
}

Geometry geometry_of(const PoolHeader &h)
{
	Geometry g;
	g.pool_bytes = h.pool_bytes;
	g.table_slots = h.table_slots;
	g.table_offset = h.table_offset;
	if (h.layout_version >= 4)
		g.access_offset =
		        h.table_offset +
		        round_up(uint64_t{h.table_slots} * sizeof(RegionEntry), kPageSize);
	if (h.layout_version >= kLayoutVersionClones)
		g.clone_offset = g.access_offset + access_area_bytes(h.table_slots);
	g.log_desc_offset = h.log_desc_offset;
	g.log_data_offset = h.log_data_offset;
	g.meta_offset = h.meta_offset;
	if (h.layout_version >= kLayoutVersionVersions)
		g.version_offset =
		        h.meta_offset + round_up(h.data_pages * sizeof(PageMeta), kPageSize);
	g.data_offset = h.data_offset;
	g.data_pages = h.data_pages;
	g.capacity_pages = h.layout_version >= kLayoutVersionThin ? h.capacity_pages : h.data_pages;
	return g;
}

uint64_t min_pool_bytes()
{
	Geometry g = compute_geometry(0, kMinTableSlots);
	return g.meta_offset + 2 * kPageSize;
}

uint32_t header_crc(const PoolHeader &h)
{
	PoolHeader c = h;
	c.crc = 0;
	return crc32c(&c, h.layout_version >= kLayoutVersionThin ? sizeof(c) : kPoolHeaderBytesV4);
}

Status validate_header(const PoolHeader &h, const std::string &path)
{
	const std::string fix =
	        "; run `memfedctl pool check " + path +
	        "` for details, or `memfedctl pool format` to start over (destroys its data)";
	if (memcmp(h.magic, kPoolMagic, sizeof(kPoolMagic)) != 0)
		return Status(Code::kCorrupt,
		              "pool " + path + " has no memfed pool header (bad magic)" + fix);
	if (h.layout_version < kLayoutVersionFixedTable || h.layout_version > kLayoutVersion)
		return Status(Code::kCorrupt,
		              "pool " + path + " has layout version " +
		                      std::to_string(h.layout_version) +
		                      ", this memfedd reads versions " +
		                      std::to_string(kLayoutVersionFixedTable) + " to " +
		                      std::to_string(kLayoutVersion) +
		                      "; open it with the memfedd that formatted it, or run "
		                      "`memfedctl pool format` to start over (destroys its data)");
	if (h.crc != header_crc(h))
		return Status(Code::kCorrupt, "pool " + path + " header checksum mismatch" + fix);
	bool slots_ok = h.layout_version == kLayoutVersionFixedTable
	                        ? h.table_slots == kMinTableSlots
	                        : h.table_slots >= kMinTableSlots &&
	                                  h.table_slots <= kMaxTableSlots &&
	                                  (h.table_slots & (h.table_slots - 1)) == 0;
	if (!slots_ok)
		return Status(Code::kCorrupt, "pool " + path + " header has a region table of " +
		                                      std::to_string(h.table_slots) +
		                                      " slots, which layout version " +
		                                      std::to_string(h.layout_version) +
		                                      " does not allow" + fix);
	Geometry want = compute_geometry(h.pool_bytes, h.table_slots, h.layout_version);
	if (h.layout_version >= kLayoutVersionThin) {
		// Thick (a device): as layout 4, capacity = data area. Thin: the
		// data area is the larger of capacity and kThinDataPages, and the
		// pool ends with it.
		bool thick = h.capacity_pages == h.data_pages && h.data_pages == want.data_pages;
		if (!thick && h.capacity_pages != 0 && h.capacity_pages < h.data_pages &&
		    h.data_pages == std::max(h.capacity_pages, kThinDataPages)) {
			want = place_fixed_areas(0, h.table_slots, h.layout_version);
			place_page_areas(&want, h.data_pages, h.layout_version);
			if (h.pool_bytes != want.data_end())
				want.data_pages = 0; // inconsistent
		} else if (!thick) {
			want.data_pages = 0;
		}
	}
	if (h.page_size != kPageSize || h.table_entry_size != sizeof(RegionEntry) ||
	    h.log_slots != kLogSlots || h.log_desc_size != sizeof(LogDescriptor) ||
	    h.table_offset != want.table_offset || h.log_desc_offset != want.log_desc_offset ||
	    h.log_data_offset != want.log_data_offset || h.meta_offset != want.meta_offset ||
	    h.data_offset != want.data_offset || h.data_pages != want.data_pages ||
	    want.data_pages == 0)
		return Status(Code::kCorrupt,
		              "pool " + path + " header describes an inconsistent layout" + fix);
	return Status::ok();
}

uint32_t entry_crc(const RegionEntry &e)
{
	RegionEntry c = e;
	c.crc = 0;
	c.length_word = 0;
	// The state word changes without rewriting the body: leave it out.
	return crc32c(reinterpret_cast<const uint8_t *>(&c) + sizeof(c.state_word),
	              sizeof(c) - sizeof(c.state_word));
}

uint32_t descriptor_crc(const LogDescriptor &d)
{
	LogDescriptor c = d;
	c.desc_crc = 0;
	return crc32c(&c, sizeof(c));
}

uint32_t zero_page_crc()
{
	static const uint32_t crc = [] {
		static const uint8_t zeros[kPageSize] = {};
		return crc32c(zeros, sizeof(zeros));
	}();
	return crc;
}

bool page_is_zero(const uint8_t *page)
{
	static const uint8_t zeros[kPageSize] = {};
	return memcmp(page, zeros, kPageSize) == 0;
}

} // namespace memfed::store
