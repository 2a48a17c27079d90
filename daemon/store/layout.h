// On-media layout of a memfed module pool: the structs that live in the pool
// file or DAX device, and the geometry that places them.
//
// A pool is a sequence of 4 KiB pages, all offsets are bytes from the start of
// the pool, and every area starts on a page boundary:
//
//   page 0         PoolHeader (checksummed, written once by format)
//   table area     table_slots RegionEntry records (128 bytes each)
//   access area    (layout 4) per table slot two AccessRecord copies (256
//                  bytes each): who owns the region in the slot and whom
//                  its owner granted access (region_access.h)
//   log desc area  kLogSlots LogDescriptor records (64 bytes each)
//   log data area  kLogSlots pages, the payload of each log record
//   meta area      one PageMeta (16 bytes) per data page
//   version area   (layout 3) one uint64_t per data page: the writer's page
//                  version of replicated regions (0 = never written by a
//                  versioned write)
//   data area      data_pages pages; regions are contiguous extents of it
//
// The region table is sized from the pool at format time and never changes
// size afterwards (so no crash can leave it half grown, and the redo-log rules
// of redo_log.h need nothing new): default_table_slots() gives one slot per
// kPoolBytesPerSlot of pool, a power of two between kMinTableSlots and
// kMaxTableSlots, recorded in the header's table_slots. A region id packs the
// slot into its low log2(table_slots) bits (region_table.h).
//
// Layout versions: 1 had a fixed 1024-slot table; version 2 records the
// table's size. A version-1 pool is exactly a version-2 pool whose table has
// 1024 slots, so it opens as it is, keeps its 1024-region limit (the "table
// full" error names the fix: copy the regions out and reformat), and is never
// rewritten to version 2 (an older memfedd can still open it).
// Version 3 adds the version area between the meta and data areas (its offset
// follows from the header's meta_offset and data_pages); a region entry's
// replica fields and a log record's wversion exist in every version (they
// were reserved zeros before). Version 1 and 2 pools open as they are, have no
// version area, and so cannot hold replicated regions (create refuses them,
// naming the fix: a pool formatted by this version).
// Version 4 adds the access area right after the table (so the log areas and
// everything after them move by its size): each region records the node key
// that owns it and its grants. Version 1 to 3 pools open as they are; they
// cannot record an owner node, so every region in them belongs to the node
// that runs the module, and grants and creates from other nodes are refused
// there, naming the fix (a pool formatted by this version).
//
// Version 5 makes regions thin: the data area (the pool's address space) is
// larger than its capacity, the pages the pool can actually hold. A region
// takes address space at create and capacity only for the pages written to it
// (a page with PageMeta.version != 0); a write that would take a page beyond
// capacity is refused (kNoSpace), a create never is for that reason. The
// header grows to 128 bytes: capacity_pages follows the crc, and from layout
// 5 on the crc covers all 128 bytes (older headers: the first 112, and the
// bytes after them read as zeros). `pool format --size S` asks for capacity:
// capacity_pages is the data area a layout-4 pool of S bytes would have, and
// the data area is the larger of that and kThinDataPages (4 TiB). A file pool
// stays sparse: pages, metas and version entries never written are holes
// (delete and truncate punch them again), so the file costs what is written,
// and code that walks the metas skips the holes (PoolFile::data_ranges). The
// file is about 4 TiB long, within every Linux filesystem's file-size limit
// (ext4: 16 TiB), and must support holes (tmpfs, ext4, xfs, btrfs). A DAX
// device cannot be sparse: it is formatted thick (data area = capacity), as
// every pool of layout 1 to 4 opens. Used space is not stored: open derives
// it from the metas, so no counter can disagree with the pages after a crash.
//
// Version 6 adds the clone area right after the access area (so the log
// areas and everything after them move by its size): one 8-byte base word
// per table slot. A region whose base word is set is a copy-on-write clone of
// part of another region of the pool, its base: a page the clone never wrote
// (PageMeta.version 0) reads as the base's page (the base word, below), and a
// write, truncate or delete of the base first copies the pages its clones
// still share into them. The word changes only by single aligned 8-byte
// stores (a create writes it while the slot is free; a clone whose base goes
// away is detached by a store of 0), so it can never tear. Version 1 to 5
// pools open as they are and refuse clones, naming the fix.
//
// A region's pages never move: the federated address (FA) offset of a page is
// its byte offset in the pool, so an RDMA transport can read the pool directly.
// All integers are little-endian (the only byte order memfed runs on).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "daemon/common/status.h"

namespace memfed::store
{

constexpr uint64_t kPageSize = 4096;
constexpr char kPoolMagic[8] = {'M', 'F', 'P', 'O', 'O', 'L', '0', '1'};
constexpr uint32_t kLayoutVersion = 6;
constexpr uint32_t kLayoutVersionClones = 6;     // clone area
constexpr uint32_t kLayoutVersionThin = 5;       // capacity in the header
constexpr uint32_t kLayoutVersionAccess = 4;     // access area, data area = capacity
constexpr uint32_t kLayoutVersionVersions = 3;   // version area, no access area
constexpr uint32_t kLayoutVersionTableSize = 2;  // sized table, no version area
constexpr uint32_t kLayoutVersionFixedTable = 1; // table of kMinTableSlots
constexpr uint32_t kMinTableSlots = 1024;
constexpr uint32_t kMaxTableSlots = 1u << 20;
constexpr uint64_t kPoolBytesPerSlot = 32 * 1024; // 0.4% of the pool for the table
constexpr uint32_t kLogSlots = 256;
constexpr size_t kMaxRegionName = 63;
// Layout 5: the data area of a thin pool (its address space), unless its
// capacity is larger.
constexpr uint64_t kThinDataPages = (uint64_t{4} << 40) / kPageSize;
// The header bytes layouts 1 to 4 wrote and checksummed.
constexpr size_t kPoolHeaderBytesV4 = 112;

// Page 0. Immutable after format; `crc` is crc32c of the struct with crc = 0
// (layouts 1 to 4: of its first kPoolHeaderBytesV4 bytes).
struct PoolHeader {
	char magic[8];
	uint32_t layout_version;
	uint32_t page_size;
	uint64_t module_id;  // low 48 bits
	uint64_t pool_bytes; // size of the file or device the pool was formatted on
	uint64_t ctime_ns;   // CLOCK_REALTIME at format
	uint64_t table_offset;
	uint32_t table_slots;
	uint32_t table_entry_size;
	uint64_t log_desc_offset;
	uint64_t log_data_offset;
	uint32_t log_slots;
	uint32_t log_desc_size;
	uint64_t meta_offset;
	uint64_t data_offset;
	uint64_t data_pages;
	uint32_t reserved;
	uint32_t crc;
	// Layout 5: the data pages the pool can hold (<= data_pages); zeros
	// before, where capacity is data_pages.
	uint64_t capacity_pages;
	uint64_t reserved2;
};
static_assert(offsetof(PoolHeader, capacity_pages) == kPoolHeaderBytesV4);
static_assert(sizeof(PoolHeader) == 128);

// Region table slot states (low byte of RegionEntry::state_word).
enum RegionState : uint8_t {
	kRegionFree = 0,
	kRegionLive = 1,
	kRegionDeleting = 2, // delete in progress; finished by the next open
};

// One slot of the region table. `state_word` is changed only by single aligned
// 8-byte stores, so it can never tear: low 8 bits RegionState, bits 8..31 the
// slot's generation (incremented by each create). The body (everything after
// state_word) is written while the slot is free and is covered by `crc`
// (crc32c of the body with crc = 0 and length_word = 0), which detects media
// corruption. `length_word` is the region's length as a file (the bytes a
// read sees before end of file): 0 while never set, which reads as the whole
// region, else kLengthSet | length. Like state_word it changes only by single
// aligned 8-byte stores, so it is left out of the crc.
struct RegionEntry {
	uint64_t state_word;
	uint64_t fa_offset; // pool byte offset of the region's first page
	uint64_t pages;
	uint64_t ctime_ns;
	uint32_t owner_uid;
	uint32_t mode;
	char name[64]; // NUL-terminated, at most kMaxRegionName bytes
	uint64_t length_word;
	// Replicated regions: the group the region's K copies share (chosen by
	// the federation) and K; both 0 for an ordinary region. Zeros in pools
	// written before replication existed, so every layout version reads them.
	uint64_t replica_group;
	uint8_t replicas;
	uint8_t reserved[3];
	uint32_t crc;
};
static_assert(sizeof(RegionEntry) == 128);
static_assert(offsetof(RegionEntry, replica_group) == 112);
static_assert(offsetof(RegionEntry, length_word) % 8 == 0);
constexpr uint64_t kLengthSet = uint64_t{1} << 63;

// A redo-log record's descriptor; its payload page is the log data slot with
// the same index. Valid when magic matches, desc_crc (crc32c of the struct with
// desc_crc = 0) matches, and the payload's crc32c equals page_crc.
constexpr uint64_t kLogMagic = 0x31474f4c4446454dULL; // "MEFDLOG1"
struct LogDescriptor {
	uint64_t magic;
	uint64_t seq;       // global write sequence, strictly increasing
	uint64_t fa_offset; // home page of the payload
	uint32_t page_crc;
	uint32_t reserved0;
	// The writer's page version of a versioned write (stored in the version
	// area when the record is applied, so page and version are atomic across
	// a crash); 0 for an unversioned write and in records of older pools
	// (whose 32 reserved bytes from page_crc on are zeros).
	uint64_t wversion;
	uint8_t reserved[20];
	uint32_t desc_crc;
};
static_assert(offsetof(LogDescriptor, wversion) == 32);
static_assert(sizeof(LogDescriptor) == 64);

// Layout 4, per region table slot, two of these (copy 0 and copy 1): the
// region's owner node and its grants. The valid copy (crc matches, seq != 0,
// generation == the slot's) with the higher seq is current. An update writes
// the other copy with seq + 1 and persists it, so a crash leaves the old
// copy or the new one, never a torn mix. A create writes copy 0 (seq 1) and
// zeroes copy 1 before the slot turns live. `crc` is crc32c of the record
// with crc = 0. An all-zero owner_key means the node that runs the module.
constexpr uint32_t kMaxGrants = 5;
struct AccessGrantEntry {
	uint8_t key[32]; // the grantee node's Ed25519 public key
	uint32_t uid;    // the grantee's uid on that node (kAnyUid: every user)
	uint8_t rights;  // kRightRead | kRightWrite (region_access.h)
	uint8_t reserved[3];
};
static_assert(sizeof(AccessGrantEntry) == 40);
struct AccessRecord {
	uint64_t seq;
	uint32_t generation; // the table slot's generation this record belongs to
	uint8_t grant_count; // <= kMaxGrants
	uint8_t reserved0[3];
	uint8_t owner_key[32];
	AccessGrantEntry grants[kMaxGrants];
	uint32_t reserved1;
	uint32_t crc;
};
static_assert(sizeof(AccessRecord) == 256);

// Per data page: crc32c of the page content and the seq of the log record that
// last wrote it. version 0 = never written (the page is all zeros, crc 0).
// Written crc first, then version (each an aligned store), after the page: a
// crash while a page's first write is applied leaves some or all of its new
// bytes (and perhaps its crc) under version 0, with the write's redo-log
// record durable, and the next open replays that record over the page.
struct PageMeta {
	uint64_t version;
	uint32_t crc;
	uint32_t reserved;
};
static_assert(sizeof(PageMeta) == 16);

// Layout 6, per table slot: the region's base word. 0: not a clone. Else
// kCloneBaseSet | base_page << 32 | base_id: the clone's page i is the base
// region's page base_page + i (base_page < 2^31) until the clone writes it.
constexpr uint64_t kCloneBaseSet = uint64_t{1} << 63;
constexpr uint64_t kCloneMaxBasePage = (uint64_t{1} << 31) - 1;
inline uint64_t clone_base_word(uint32_t base_id, uint64_t base_page)
{
	return kCloneBaseSet | base_page << 32 | base_id;
}

// Where every area lies for a pool of `pool_bytes`.
struct Geometry {
	uint64_t pool_bytes = 0;
	uint32_t table_slots = kMinTableSlots; // a power of two
	uint64_t table_offset = 0;
	uint64_t access_offset = 0; // 0: no access area (layout 1 to 3)
	uint64_t clone_offset = 0;  // 0: no clone area (layout 1 to 5)
	uint64_t log_desc_offset = 0;
	uint64_t log_data_offset = 0;
	uint64_t meta_offset = 0;
	uint64_t version_offset = 0; // 0: no version area (layout 1 and 2)
	uint64_t data_offset = 0;
	uint64_t data_pages = 0;
	uint64_t capacity_pages = 0; // pages the pool can hold: data_pages unless thin

	bool thin() const { return capacity_pages < data_pages; }
	bool has_versions() const { return version_offset != 0; }
	bool has_access() const { return access_offset != 0; }
	bool has_clones() const { return clone_offset != 0; }
	// The base word of `slot`. REQUIRES: has_clones().
	uint64_t clone_fa(uint32_t slot) const { return clone_offset + uint64_t{slot} * 8; }
	// Copy `copy` (0 or 1) of `slot`'s access record. REQUIRES: has_access().
	uint64_t access_fa(uint32_t slot, int copy) const
	{
		return access_offset + (uint64_t{slot} * 2 + uint64_t(copy)) * sizeof(AccessRecord);
	}

	uint64_t data_end() const { return data_offset + data_pages * kPageSize; }
	// Index of the data page at pool byte offset `fa` (REQUIRES: inside data area).
	uint64_t page_index(uint64_t fa) const { return (fa - data_offset) / kPageSize; }
	uint64_t page_fa(uint64_t index) const { return data_offset + index * kPageSize; }
	uint64_t meta_fa(uint64_t index) const { return meta_offset + index * sizeof(PageMeta); }
	// REQUIRES: has_versions().
	uint64_t version_fa(uint64_t index) const
	{
		return version_offset + index * sizeof(uint64_t);
	}
};

// Region table slots format gives a pool of `pool_bytes`: one per
// kPoolBytesPerSlot, rounded down to a power of two, within
// [kMinTableSlots, kMaxTableSlots].
uint32_t default_table_slots(uint64_t pool_bytes);
// Largest geometry of layout `layout_version` that fits in pool_bytes with a
// table of `table_slots` (default: default_table_slots(pool_bytes)); data_pages
// is 0 if nothing fits. Versions from 3 on have a version area, from 4 on an
// access area.
Geometry compute_geometry(uint64_t pool_bytes, uint32_t table_slots = 0,
                          uint32_t layout_version = kLayoutVersion);
// Layout 5: the geometry format gives a pool of capacity `size_bytes` (the
// data area a layout-4 pool of that size would have), thin (data area the
// larger of that and kThinDataPages) or thick (data area = capacity, for a
// device). pool_bytes is the file it needs. data_pages is 0 if nothing fits.
Geometry compute_thin_geometry(uint64_t size_bytes, uint32_t table_slots, bool thick);
// Geometry recorded in a header (REQUIRES: header passed validate_header).
Geometry geometry_of(const PoolHeader &h);
// Smallest pool that holds one data page (with a kMinTableSlots table).
uint64_t min_pool_bytes();

uint32_t header_crc(const PoolHeader &h);
// kCorrupt (naming `path` and the fix) unless `h` has our magic, a layout
// version we read (1 to 5), a matching crc, a table size we accept and the
// geometry compute_geometry gives for it.
Status validate_header(const PoolHeader &h, const std::string &path);
uint32_t entry_crc(const RegionEntry &e);
uint32_t descriptor_crc(const LogDescriptor &d);
// crc32c of an all-zero page.
uint32_t zero_page_crc();
bool page_is_zero(const uint8_t *page);

} // namespace memfed::store
