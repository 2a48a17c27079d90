// ModuleStore: a memory module's persistent pool of named regions.
//
// The pool is a file (sparse, of the configured size) or a DAX device, mapped
// with libpmem2 (layout in layout.h). Regions are contiguous extents of the
// data area, addressed by federated-address offset == pool byte offset, and
// their pages are written through a redo log (redo_log.h): a write is durable
// when write_pages returns and each page is atomic across crashes. Only one
// process can own a pool (flock).
//
// Freed space always reads as zeros, so a region never shows its next owner
// what an earlier one wrote. The zeroing happens on free, durably, before the
// extent returns to the allocator: a delete marks the slot "deleting", zeroes
// the extent (a punched hole in a pool file, memset + persist on a DAX
// device) and its page metadata, then frees the slot; a crash in between is
// finished at the next open. A truncate zeroes every written page past the
// new end the same way. Zeroing on free rather than on allocate keeps create
// cheap, returns a file pool's space to the filesystem at once, and leaves no
// window in which freed data waits on the media for its next owner.
//
// Replicated regions (layout 3 pools): a region's copies on K modules are
// kept by one writer that gives each write-back a 64-bit page version. A
// versioned write applies a page only if its version is newer than the one
// stored in the page's version-area entry (or, to repair a damaged copy, at
// least as new); the compare and the apply are one step (writes are
// serialised), and page and version reach the media through the same redo-log
// record, so they are atomic across a crash. Unversioned writes leave the
// version area alone; delete and truncate zero it with the pages.
//
// Thin pools (layout 5, layout.h): a region takes address space at create
// and capacity for each page when it is first written. The store counts the
// pages written (PageMeta.version != 0) per region, per owner and in all
// (its SpaceLedger and the admission, pool_space.h and pool_space.cc): open
// derives the counts from the metas, skipping their holes; a write that first
// takes a page adds to them, a delete or truncate that zeroes pages takes them
// off. A write batch whose new pages would take the pool past its capacity
// fails with kNoSpace (the pages already written stay writable), and so does
// one that a write admission (set_write_admit: the owner quotas) refuses.
// Creates are limited only by address space and the table. A page never
// written reads as zeros without the media being touched, and a write of
// zeros to it takes nothing (zero_write_noop): a program's fresh heap reads
// such pages, and its freed ones write them back.
//
// Copy-on-write clones (layout 6 pools, pool_clones.cc): clone_region makes a
// region whose pages read as a part of another region of the pool, its base,
// until the clone writes them, so a clone of any size costs a table entry.
// Before a write, truncate or delete changes a page of a base, the store
// copies that page into every clone that still reads through to it, in
// earlier redo-log rounds than the change itself, so after a crash a clone
// holds its page or still shares an unchanged one. A clone may be the base of
// further clones (a chain, up to kMaxCloneDepth). A clone that is truncated,
// or whose base is deleted, first takes a copy of every page it shares and is
// detached. Clones are served over TCP only: an RDMA reader would read the
// clone's own extent, so the service hands out no RDMA keys for them.
//
// Region sizes are rounded up to whole 4 KiB pages; size 0 is an error.
// Region ids are stable across restarts and never reused for another region.
//
// Thread-safety: all methods may be called concurrently. read_pages and
// write_pages run in parallel with each other (a read never sees a half-written
// page: per-page striped locks); region create/delete exclude them briefly.
// Writes are serialised among themselves (one redo-log ring).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/common/status.h"
#include "daemon/store/check.h"
#include "daemon/store/extent_allocator.h"
#include "daemon/store/layout.h"
#include "daemon/store/pool_file.h"
#include "daemon/store/pool_space.h"
#include "daemon/store/redo_log.h"
#include "daemon/store/region_table.h"

namespace memfed
{

struct PoolOptions {
	std::string path;
	uint64_t size_bytes = 0; // ignored for a DAX device (its size is used)
	ModuleId module_id{};    // 0 = random locally administered
	// Region table slots, a power of two in [kMinTableSlots, kMaxTableSlots]
	// (layout.h); 0 = sized from the pool (default_table_slots).
	uint32_t table_slots = 0;
};

// A replicated region's copy: the group its K copies share, and K. Both 0 for
// an ordinary region.
struct ReplicaSpec {
	uint64_t group = 0;
	uint8_t replicas = 0;
};

// How a versioned write compares its version with the stored one.
enum class VersionedMode {
	kNewer,  // apply a page iff version > stored (replication, catch-up)
	kRepair, // apply iff version >= stored (rewrite a damaged copy of the same version)
};

struct PoolInfo {
	std::string path;
	ModuleId module;
	uint32_t layout_version = 0;
	uint64_t pool_bytes = 0;
	uint64_t capacity_bytes = 0; // pages the pool can hold (thin: less than its data area)
	uint64_t used_bytes = 0;     // pages written
	uint64_t address_bytes = 0;  // data area: the address space regions are made in
	uint64_t reserved_bytes = 0; // address space regions hold (their sizes)
	// Space left: capacity - used on a thin pool, address space free on a
	// thick one (where a create takes the region's size).
	uint64_t free_bytes = 0;
	// Address space free for new regions, and its largest extent.
	uint64_t address_free_bytes = 0, largest_free_bytes = 0;
	bool thin = false; // capacity_bytes < address_bytes
	uint32_t regions = 0;
	uint32_t table_slots = 0; // most regions the pool can hold (layout.h)
	uint64_t pages_read = 0, pages_written = 0, log_replays = 0;
	uint64_t log_persists = 0; // redo-log persists (one per group of writes)
	bool is_pmem = false;
	uint64_t data_offset = 0;
	uint64_t ctime_ns = 0;
};

class ModuleStore
{
public:
	// Creates (or overwrites) a pool at opts.path: the file is created if
	// needed. kBusy if a daemon holds it; kInvalidArgument for a size below
	// the minimum (named in the message).
	static Status format(const PoolOptions &opts);
	// Opens and recovers an existing pool (replays the redo log, finishes
	// interrupted deletes). expected_size 0 accepts any size.
	static Result<std::unique_ptr<ModuleStore>> open(const std::string &path,
	                                                 uint64_t expected_size);
	// Daemon start: format if the file is absent, then open. kInvalidArgument
	// if opts.module_id is set and differs from the pool's.
	static Result<std::unique_ptr<ModuleStore>> open_or_create(const PoolOptions &opts);
	// fsck; see check.h. Never modifies the pool.
	static Result<CheckReport> check(const std::string &path);
	// Header and table summary of a pool without taking its lock (may run
	// while a daemon owns the pool; counters are 0).
	static Result<PoolInfo> inspect(const std::string &path);

	~ModuleStore();
	ModuleStore(const ModuleStore &) = delete;
	ModuleStore &operator=(const ModuleStore &) = delete;

	// Decides whether `owner_uid`, holding `usage`, may create a region of
	// `size_bytes` more (rounded up to whole pages): OK, or the refusal that
	// create_region returns. It runs under the table lock, so creates that
	// race each other are admitted one at a time against usage that counts
	// every earlier one (the quota of memfedd's control socket).
	using AdmitFn = std::function<Status(const OwnerUsage &usage, uint64_t size_bytes)>;
	// `admit` (optional) is asked before any space is taken, with what
	// owner_uid holds; `admit_node` (optional) with what owner_key's node
	// holds, once the space is found (a pool without room answers kNoSpace
	// whatever the node holds). `replica` is stored in the region's entry; replica.replicas
	// > 1 needs a pool with a version area (layout 3), else kInvalidArgument
	// naming the pool, its layout version and the fix. `owner_key` is the
	// node that owns the region (zeros: the node that runs the module); a
	// nonzero one needs a pool with an access area (layout 4), else
	// kInvalidArgument naming the pool, its layout and the fix.
	Result<RegionInfo> create_region(const std::string &name, uint64_t size_bytes,
	                                 uint32_t owner_uid, uint32_t mode,
	                                 const AdmitFn &admit = nullptr, ReplicaSpec replica = {},
	                                 const NodeKeyBytes &owner_key = {},
	                                 const AdmitFn &admit_node = nullptr);
	// Asked before a write takes pages never written before (on a thin
	// pool only): region `r`, whose owner holds `uid_usage` and whose owner
	// node holds `node_usage` (as usage_of / usage_of_node), would take
	// `more_bytes` more. OK, or the refusal the write returns. It runs with
	// the store's write lock held, so it must not call into this store.
	using WriteAdmitFn =
	        std::function<Status(const RegionInfo &r, const OwnerUsage &uid_usage,
	                             const OwnerUsage &node_usage, uint64_t more_bytes)>;
	void set_write_admit(WriteAdmitFn fn);
	// Whether regions take capacity only for pages written (layout 5 on a file).
	bool thin() const { return geo_.thin(); }
	// What `owner_uid` holds in the pool (regions live or being deleted):
	// their sizes, or on a thin pool the bytes written to them.
	OwnerUsage usage_of(uint32_t owner_uid) const;
	// Every owner that holds a region, by uid.
	std::map<uint32_t, OwnerUsage> usage_by_owner() const;
	// The same by owner node key (zeros: the module's own node).
	OwnerUsage usage_of_node(const NodeKeyBytes &key) const;
	std::map<NodeKeyBytes, OwnerUsage> usage_by_node() const;

	// Whether the pool records owner nodes and grants (layout 4).
	bool has_access_area() const { return geo_.has_access(); }
	// A live region's owner and grants (an older layout: owner zeros, no
	// grants). kNotFound as lookup_region / region_by_id.
	Result<RegionAccess> region_access(const std::string &name) const;
	Result<RegionAccess> region_access(uint32_t id) const;
	// Sets (rights != 0) or revokes (rights 0) region `name`'s grant for
	// (g.key, g.uid), durably (apply_grant's errors); returns the new
	// access. kInvalidArgument on a pool without an access area, naming it,
	// its layout and the fix.
	Result<RegionAccess> set_grant(const std::string &name, const AccessGrant &g);
	// Makes region `name` of `size_bytes` (whole pages) a copy-on-write
	// clone of region `base`'s bytes [base_offset, base_offset + size_bytes)
	// (see the top of this file); owner, mode and admission as
	// create_region. kInvalidArgument on a pool without a clone area
	// (naming its layout and the fix), for a replicated base, a range
	// outside the base or not page-aligned, or a chain deeper than
	// kMaxCloneDepth; kNotFound for an unknown base.
	static constexpr int kMaxCloneDepth = 16;
	Result<RegionInfo> clone_region(const std::string &name, const std::string &base,
	                                uint64_t base_offset, uint64_t size_bytes,
	                                uint32_t owner_uid, uint32_t mode,
	                                const AdmitFn &admit = nullptr,
	                                const NodeKeyBytes &owner_key = {},
	                                const AdmitFn &admit_node = nullptr);
	// Whether the pool can hold clones (layout 6).
	bool has_clone_area() const { return geo_.has_clones(); }
	Status delete_region(const std::string &name);
	// Sets region `name`'s length as a file (<= its size, else kOutOfRange).
	// Without `grow_only` it is a truncate: every byte past the new end is
	// zeroed, durably, whatever length was recorded before (pages may have
	// been written past it), so a file grown again reads zeros there. With
	// `grow_only`, a length at or below the current one changes nothing
	// (appenders racing each other). Returns the region.
	Result<RegionInfo> set_length(const std::string &name, uint64_t length, bool grow_only);
	Result<RegionInfo> lookup_region(const std::string &name) const;
	Result<RegionInfo> region_by_id(uint32_t id) const;
	// Regions in name order: those whose name sorts after `after` (empty:
	// from the first), at most `limit` (0: all) — a page of a long list.
	std::vector<RegionInfo> list_regions(const std::string &after = "", size_t limit = 0) const;

	// fa_offset must be page-aligned and [fa_offset, +count pages) inside
	// region `region_id`; else kOutOfRange naming region and bounds. kNotFound
	// for an unknown id. read_pages returns kCorrupt if a page fails its crc.
	Status read_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count, void *dst);
	Status write_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count, const void *src);
	// Like read_pages, but the pages' crcs are not checked here: *payload_crc
	// is set to the crc32c of the `count` pages as they were written, combined
	// from the crcs stored with them (crc32c_combine). A reader that checks
	// its copy against it detects a page corrupted on the media or on the way,
	// and the copy is the module's only pass over the bytes.
	Status read_pages_with_crc(uint32_t region_id, uint64_t fa_offset, uint32_t count,
	                           void *dst, uint32_t *payload_crc);

	// Versioned write (see the top of this file): each page of `src` is
	// applied iff `version` is newer than the page's stored version (kNewer)
	// or at least as new (kRepair); the others are skipped, which is not an
	// error. *applied = the pages applied. Durable on return and atomic per
	// page like write_pages. kInvalidArgument for version 0, or on a pool
	// without a version area (naming the pool, its layout and the fix).
	Status write_pages_versioned(uint32_t region_id, uint64_t fa_offset, uint32_t count,
	                             const void *src, uint64_t version, VersionedMode mode,
	                             uint32_t *applied);
	// The stored versions of `count` pages (0: never written by a versioned
	// write); any count the range allows. Same errors as read_pages, and
	// kInvalidArgument on a pool without a version area.
	Status read_versions(uint32_t region_id, uint64_t fa_offset, uint32_t count,
	                     uint64_t *versions);
	// read_pages_with_crc plus each page's version, read under the page's lock
	// with its bytes (no write lands between the two). *payload_crc covers
	// what the wire sends: crc32c of versions[0..count) followed by the pages
	// as written (their stored crcs combined).
	Status read_pages_versioned(uint32_t region_id, uint64_t fa_offset, uint32_t count,
	                            void *dst, uint64_t *versions, uint32_t *payload_crc);

	// One write of a group commit.
	struct WriteOp {
		uint32_t region_id = 0;
		uint64_t fa_offset = 0;
		uint32_t count = 0;
		const void *src = nullptr; // count * 4 KiB
		Status status;             // set by write_pages_batch
		// Nonzero: a versioned write (write_pages_versioned) in `mode`;
		// `applied` is set to the pages it applied.
		uint64_t version = 0;
		VersionedMode mode = VersionedMode::kNewer;
		uint32_t applied = 0;
		// Applies pages of zeros also where the page reads as zeros now
		// (zero_write_noop): a clone's copy of a base page about to
		// change must hold the zeros itself.
		bool store_zeros = false;
	};
	// Group commit: the writes of `ops`, applied in order, with one redo-log
	// persist per kLogSlots pages of the whole batch instead of at least one
	// per write. Each op's status is what write_pages would have returned for
	// it; every op whose status is OK is durable on return, and each page is
	// atomic across crashes, exactly as with write_pages. A versioned op
	// compares against the versions left by the ops before it.
	void write_pages_batch(std::span<WriteOp> ops);

	PoolInfo info() const;
	ModuleId module_id() const { return module_; }
	// For an RDMA transport: the mapping and its size.
	uint8_t *base() const { return file_->base(); }
	size_t mapped_bytes() const { return file_->mapped_bytes(); }
	// For an RDMA transport (daemon/rdma/rdma_server.h): `fn` runs with a
	// region's id whenever what was handed out for reading it must stop
	// working, whoever asked for the change (a peer over the wire, this
	// node's control socket, replication): a delete, before the region's
	// pages are freed; a truncate, after the pages past the new end were
	// zeroed; a grant change that took a right away. It runs on the thread
	// that made the change with the table lock held, so it must not call
	// into this store. Empty: nothing runs.
	using AccessLostFn = std::function<void(uint32_t region_id)>;
	void set_on_access_lost(AccessLostFn fn);

	// Test only: when set, write_pages stops after the redo-log records are
	// durable and returns kInternal without touching the home pages, which is
	// the state a crash at that instant leaves behind.
	void set_crash_after_log_for_test(bool on) { crash_after_log_for_test_ = on; }

private:
	explicit ModuleStore(std::unique_ptr<store::PoolFile> file) : file_(std::move(file)) {}
	Status recover();
	Status replay_log(const std::vector<store::RegionSlot> &live);
	Status check_range(uint32_t region_id, uint64_t fa_offset, uint32_t count) const;
	Status copy_pages(uint32_t region_id, uint64_t fa_offset, uint32_t count, void *dst,
	                  uint64_t *versions, uint32_t *payload_crc);
	// Copies pool page `idx`, whose meta is `m`, to `dst`. A page never
	// written (version 0) is zeros on the media, so `dst` is cleared
	// without reading it: a read of a hole of a file pool through its
	// mapping would allocate the page (tmpfs), and a thin region's unwritten
	// pages are most of what a program's fresh heap reads.
	// REQUIRES: the page's stripe held.
	void copy_page(uint64_t idx, const store::PageMeta *m, uint8_t *dst) const;
	// create_region and clone_region: `clone` (may be null) holds the base
	// link to record; `what` (create_what(name)) starts its errors.
	// REQUIRES: table_mu_ held exclusively.
	Result<RegionInfo> create_locked(const std::string &name, uint64_t size_bytes,
	                                 uint32_t owner_uid, uint32_t mode, const AdmitFn &admit,
	                                 ReplicaSpec replica, const NodeKeyBytes &owner_key,
	                                 const AdmitFn &admit_node, const RegionInfo *clone,
	                                 const std::string &what);
	// "cannot create region 'NAME' on module ID".
	std::string create_what(const std::string &name) const;
	// write_pages_batch once the ops are checked. REQUIRES: table_mu_ held
	// (shared or exclusive) and write_mu_ held.
	void write_batch_locked(std::span<WriteOp> ops);
	// Clones (pool_clones.cc). The pool page that page `page` of region `r`
	// reads as: its own, or for a clone page never written, its base's
	// (recursively). REQUIRES: table_mu_ held, and write_mu_ or the stripes
	// of every page of the chain (so no meta changes meanwhile).
	uint64_t resolve(const RegionInfo *r, uint64_t page) const;
	// Whether an unversioned write of `src` to page `page` of `r` changes
	// nothing: `src` is zeros, and so is what the page reads as now (it was
	// never written, nor was the page it reads through to). Such a page is
	// not applied: on a thin pool it would take capacity, and on a file
	// pool memory, to hold zeros, which is what a program's freed heap
	// pages write back. REQUIRES: as resolve.
	bool zero_write_noop(const RegionInfo &r, uint64_t page, const uint8_t *src) const;
	// read_pages / copy_pages of a clone: page by page, each under the
	// stripes of its whole chain. REQUIRES: table_mu_ held.
	Status read_clone_pages(const RegionInfo &r, uint64_t fa_offset, uint32_t count,
	                        uint8_t *dst, uint64_t *versions, uint32_t *payload_crc,
	                        bool check_crc);
	// Copies pages [first, first + count) of `r` (page numbers within r)
	// into every clone of r that still reads through to them, durably.
	// REQUIRES: table_mu_ held, write_mu_ held.
	Status preserve_for_clones(const RegionInfo &r, uint64_t first, uint64_t count);
	// Copies every page clone `c` shares into it and detaches it from its
	// base. REQUIRES: table_mu_ held exclusively, write_mu_ held.
	Status materialize(const RegionInfo &c);
	// Detaches (materialize) every clone of `r` and unlinks `r` from its own
	// base: what a delete of `r` needs first. REQUIRES: as materialize.
	Status release_clone_links(const RegionInfo &r);
	// Writes into pool page pages[i] of region `region_id` the pool page
	// at srcs[i], through the log, as runs of consecutive pages; the first
	// failure is returned. The source pages are read where they are mapped
	// (pool_clones.cc says why they stand still). REQUIRES: as
	// write_batch_locked, and no page of `pages` among the sources.
	Status write_copies(uint32_t region_id, const std::vector<uint64_t> &pages,
	                    const std::vector<const uint8_t *> &srcs);
	// Persists every page (and its meta) applied since the last checkpoint.
	// REQUIRES: write_mu_ held, or no concurrent writer (open, destructor).
	void checkpoint();
	Status clear_pages_from(const RegionInfo &r, uint64_t first);
	Status zero_pages(uint64_t first, uint64_t count);
	// Zeroes (durably) the metas and version entries of `count` pages.
	void clear_page_meta(uint64_t first, uint64_t count);
	// The index runs [begin, end) within [first, first+count) whose metas
	// are not holes in the pool file: every written page lies in one.
	Result<std::vector<std::pair<uint64_t, uint64_t>>> meta_runs(uint64_t first,
	                                                             uint64_t count) const;
	// Space accounting (pool_space.cc). Pages written (version != 0) of
	// [first, first+count).
	Result<uint64_t> count_written(uint64_t first, uint64_t count) const;
	// usage_of / usage_of_node. REQUIRES: table_mu_ held.
	OwnerUsage usage_of_locked(uint32_t owner_uid) const;
	OwnerUsage usage_of_node_locked(const NodeKeyBytes &key) const;
	// Fails the ops that would take the pool past its capacity or that
	// write_admit_ refuses. REQUIRES: table_mu_ shared and write_mu_ held.
	void admit_new_pages(std::span<WriteOp> ops);
	// r with used_bytes filled in.
	RegionInfo with_used(RegionInfo r) const;
	// What the table says `usage` holds, with bytes written on a thin pool.
	OwnerUsage charged(OwnerUsage usage, uint64_t used_pages) const;
	// kInvalidArgument naming the pool and the fix unless it has a version area.
	Status require_versions(const std::string &what) const;
	// The same for the access area (layout 4).
	Status require_access(const std::string &what) const;
	store::PageMeta *meta(uint64_t page_index) const
	{
		return reinterpret_cast<store::PageMeta *>(file_->base() +
		                                           geo_.meta_fa(page_index));
	}
	// The page's version-area entry. REQUIRES: geo_.has_versions().
	uint64_t *wversion(uint64_t page_index) const
	{
		return reinterpret_cast<uint64_t *>(file_->base() + geo_.version_fa(page_index));
	}
	std::shared_mutex &stripe(uint64_t page_index) const
	{
		return stripes_[page_index % stripes_.size()];
	}

	std::unique_ptr<store::PoolFile> file_;
	store::Geometry geo_;
	uint32_t layout_version_ = 0;
	ModuleId module_;
	uint64_t ctime_ns_ = 0;
	std::unique_ptr<store::RegionTable> table_;
	std::unique_ptr<store::ExtentAllocator> alloc_;
	std::unique_ptr<store::RedoLog> log_;

	// Exclusive for region create/delete; shared for reads and writes.
	mutable std::shared_mutex table_mu_;
	// Serialises writes (the redo-log ring, next_seq_, unpersisted_).
	std::mutex write_mu_;
	// A page's content and meta change only under its stripe, exclusively.
	mutable std::array<std::shared_mutex, 64> stripes_;
	uint64_t next_seq_ = 1;
	std::vector<uint64_t> unpersisted_; // data page indices applied since the last checkpoint
	bool crash_after_log_for_test_ = false;
	AccessLostFn on_access_lost_; // guarded by table_mu_ (set exclusively)
	// Clone ids by base region id: changed with table_mu_ held exclusively.
	std::unordered_map<uint32_t, std::vector<uint32_t>> clones_;

	// Pages written, per region id, per owner uid and node, in all; changed
	// only with write_mu_ held (writes, delete, truncate) or at open.
	store::SpaceLedger space_;
	WriteAdmitFn write_admit_; // guarded by table_mu_ (set exclusively)

	std::atomic<uint64_t> pages_read_{0};
	std::atomic<uint64_t> pages_written_{0};
	uint64_t log_replays_ = 0;
};

} // namespace memfed
