// Map protocol: how a local process hands its page faults to memfedd's pager.
//
// Shared by the pager (daemon/pager) and the client library (libclient); this
// comment is the whole contract. Both sides re-read it before relying on a
// detail; a change is made here first and stays compatible with what is
// already implemented.
//
// Transport: memfedd's control socket (daemon/control/message.h): Unix
// SOCK_SEQPACKET, one JSON object [+ '\0' + binary] per packet, fds as
// SCM_RIGHTS. Replies are {"ok":true,...} or {"ok":false,"code":..,"error":..}.
// The server knows each peer's pid/uid/gid (SO_PEERCRED).
//
// Ops served by the pager
// -----------------------
//   "pager.hello"  {}
//     -> {"uffd_features": u64   UFFD_FEATURE_* bits the client requests in
//                                UFFDIO_API (exactly these; the pager probed
//                                them on this kernel at start-up),
//         "private_register_mode": u64  UFFDIO_REGISTER_MODE_* for kind
//                                "private" (MISSING, | WP when "wp"),
//         "shared_register_mode": u64   the same for kind "shared",
//         "wp": bool             write-protect dirty tracking is in use,
//         "minor_shmem": bool    kernel has MINOR faults on shmem (informative),
//         "move": bool           the kernel offers UFFD_FEATURE_MOVE (then it
//                                is in uffd_features): the client may map a
//                                staging area (see "Staging" below),
//         "wp_async": bool       with "move": the client may add
//                                UFFD_FEATURE_WP_ASYNC to uffd_features if it
//                                maps a staging area; its first writes then
//                                raise no fault (pager.wp_async),
//         "window_uffd": bool    the pager takes a second uffd for shared
//                                windows in "attach" (fds[2]),
//         "page_size": 4096,
//         "version": 1}
//     A non-root client creates its userfaultfd with UFFD_USER_MODE_ONLY and
//     drops UFFD_FEATURE_EVENT_FORK from the set (the kernel reserves it for
//     CAP_SYS_PTRACE); see "Fork" below.
//
//   "attach"  {"features": u64 (the features UFFDIO_API enabled on this fd),
//              "budget": bytes (per-process resident limit, 0 = default),
//              "staging": {"addr": u64, "len": bytes} (optional: the process's
//                         staging area, see "Staging" below; only when
//                         hello said "move" and "features" has
//                         UFFD_FEATURE_MOVE; addr non-zero and page aligned,
//                         len a page multiple, 1..kMaxStagingBytes)}
//             "features" may have UFFD_FEATURE_WP_ASYNC only when hello said
//             "wp_async", with "staging", and without EVENT_FORK: no
//             write-protect holds such a uffd's writes, so its pages leave
//             only by moves.
//             + fds[0] = the process's userfaultfd
//             + fds[1] = optional: the client's end of an evict channel (see
//                        below); without it the pager cannot drop private
//                        pages and does not enforce budgets on them.
//             + fds[2] = optional (only with fds[1], and when hello said
//                        "window_uffd"): the process's userfaultfd for
//                        shared windows, opened like fds[0] but without
//                        UFFD_FEATURE_WP_ASYNC and UFFD_FEATURE_EVENT_FORK.
//     -> {"uffd_id": u64, "evict": bool (evict channel accepted),
//         "content_key": u64 (only for a uffd with WP_ASYNC: the key of the
//                        content hashes its evictor sends in MoveReplies)}
//     One uffd per process, or two: with fds[2] the client registers its
//     kind "shared" mappings on fds[2] and everything else (private
//     mappings, the staging area) on fds[0]; without it, all on fds[0]. The
//     split is because UFFD_FEATURE_WP_ASYNC is a property of a whole uffd
//     and a window's eviction needs a synchronous write-protect in every
//     mapper: fds[0] may have WP_ASYNC, fds[2] never does. The pager reads
//     both; a fault or event is handled by its address either way. Their
//     lifetime is the control connection: when the connection closes the
//     pager writes back every dirty page it can still read and forgets the
//     uffds (the client's registrations stay).
//
//   "map"  {"uffd_id", "region": name, "region_offset": bytes (page aligned),
//           "addr": u64 (page aligned), "length": bytes (page multiple),
//           "kind": "private"|"shared", "writable": bool,
//           "register_mode": u64 (UFFDIO_REGISTER_MODE_* the client used),
//           "budget": bytes (per-mapping resident limit, 0 = default),
//           "prefetch": bool (default true),
//           "removed": [[addr, length], ...] (optional, kind "private", at
//                      most kMaxRemovedRanges: after a daemon restart, ranges
//                      the program dropped with MADV_DONTNEED whose REMOVE
//                      event a daemon may have read before this mapping was
//                      known; their pages that are missing read as zero and
//                      the zeroes are written back)}
//     Permission: the peer's uid is the region's owner or root, or the
//     region's mode grants "other" read (4; then writable must be false) and
//     for writable mappings write (2).
//     kind "private": anonymous private memory (heap). The client mmaps
//       MAP_PRIVATE|MAP_ANONYMOUS at addr (MADV_NOHUGEPAGE advised: the pager
//       installs 4 KiB pages), registers private_register_mode on its uffd,
//       then sends "map". Pages present in the range already are the
//       process's data: the pager counts them resident and dirty. The pager resolves MISSING faults
//       with UFFDIO_COPY (| COPY_MODE_WP for reads when "wp", so the first write raises a WP fault
//       that marks the page dirty).
//     kind "shared": file-like shared mapping. The reply carries fds[0] = a
//       memfd (shmem) of the whole window [region_offset, +length) that the
//       pager owns. The client mmaps it MAP_SHARED|MAP_FIXED at addr, offset
//       0, registers shared_register_mode (MISSING, | WP when "wp") on its
//       window uffd (attach fds[2]; fds[0] if it sent none), then
//       sends "map.ready" {"mapping_id"}. The pager resolves MISSING faults
//       by writing the page into the memfd and waking the faulting threads
//       of every mapper (they retry and map the page-cache page); it finds
//       dirty pages by comparing each page's CRC with the module's copy, and
//       evicts by write-protecting the pages in every mapper (WP is used only
//       then), writing changed ones back and fallocate(PUNCH_HOLE). Windows
//       are one window when (region, region_offset, length) are equal;
//       overlapping unequal windows are not coherent with each other. Processes mapping the same
//       window of a region get the same memfd: coherent, like a file. Dirty pages live in the
//       memfd, so a killed client loses nothing it wrote.
//     -> {"mapping_id": u64} (+ fds[0] for "shared")
//     The pager issues UFFDIO_WAKE over the whole range after a map, so
//     threads left blocked by a previous daemon retry their faults.
//
//   "map.ready"  {"mapping_id"}: (shared only) the client has mmapped and
//     registered the memfd; until then the pager does not evict from it.
//     The window may hold more pages than this mapping's budget (another
//     mapper, or one that unmapped, left them in the memfd): the reply comes
//     once the pager has evicted down to the budget (writing changed pages
//     back first), or as far as eviction could get.
//
//   "unmap"  {"mapping_id"}: writes back every dirty page durably, then
//     forgets the mapping; the client unregisters the range and munmaps it
//     after the reply. A fault still waiting on the range then is not
//     served (its fetch, if any, is dropped with the mapping): the
//     unregister wakes it (UFFDIO_UNREGISTER wakes the range's waiters;
//     munmap does not), and it runs again on unregistered memory. A process's
//     private memory is gone before its connection closes when it exits, so
//     the client library sends "unmap" (or "sync") for private mappings from
//     an exit hook; shared windows are flushed from the memfd on disconnect.
//
//   "sync"  {"mapping_id", "offset": bytes into the mapping, "length"}:
//     msync semantics: replies once every page of the range that was dirty
//     before the call is durable on its module.
//
//   "pager.stats"  {"pid": optional}
//     -> {"regions": [{"region", C...}], "processes": [{"pid", "uffd_id",
//         "fork_child", C...}], "writebacks_dropped": N} where N counts the
//         dirty pages whose write-back was dropped because their region had
//         been deleted (answered not_found, or not sent: never logged),
//         since the daemon started, and the counters C are
//         "faults" (missing-page faults), "wp_faults" (first writes to clean
//         pages), "fetches" (demand fetches), "prefetched", "prefetch_hits"
//         (prefetched pages a stream moved past), "evictions", "writebacks"
//         (pages written back), "staged_hits" (faults on pages being
//         evicted by move, served from the staging area), "poisoned" (pages a fault found damaged
//         on the module, or of a region deleted while mapped, poisoned so that the program gets
//         SIGBUS there as from a memory error; a kernel without UFFD_FEATURE_POISON leaves a
//         damaged page's fault waiting and gives a deleted region's zeroes), "resident_pages",
//         "dirty_pages" (private mappings only), "fetch_us_log2": [count per bucket: bucket i holds
//         demand-fetch latencies in [2^i, 2^(i+1)) us; trailing zeroes cut],
//         "fetch_ns_sum" (the sum of those latencies, ns). A process also
//         has "state", for finding out why it waits: "budget_pages",
//         "resident_count", "can_evict", "evict" (its eviction round:
//         "active", "drop_sent", "by_move", "phase" ("drop", or the move
//         path's "moving", "writing", "emptying"), "victims", "age_ms"),
//         "pages" (its private pages by state -- "resident", "fetching",
//         "held", "evicting", "staged" (moved into the staging area, not yet
//         let go), "zero" -- and by flag: "wb_in_flight", "dirty", "parked") and
//         "thread" (its pager thread's queues: "waiting_faults",
//         "retry_faults", "orphan_faults", "copy_retries", "writes_queued",
//         "free_write_ops").
//
// Evict channel (kind "private")
// ------------------------------
// The pager is a different process and the kernel does not let it drop
// another process's anonymous pages (process_madvise rejects MADV_DONTNEED
// for other processes; UFFDIO_MOVE works only from the uffd's own process,
// is missing on 6.1 and refuses pages shared after fork: uffd_move_test.cc,
// doc/design/move-eviction.md). So the client runs one evictor thread on its
// end of a socketpair(AF_UNIX, SOCK_SEQPACKET) whose other end it passes in "attach":
//   pager -> client: DropRequest (below), one per packet
//   client: madvise(addr, length, MADV_DONTNEED) for each range, in order
//   client -> pager: DropReply {seq, error = 0 or the first -errno}
// Before a drop the pager has write-protected and written back the pages and
// parks every fault on them until the reply, so nothing a program writes is
// lost. A victim the program itself drops meanwhile reads as zero: the
// pager leaves it out of the request if it learns of that drop first, and
// otherwise writes its zeroes at the round's end, and a "sync" of its range
// waits for them. The client validates magic and count and ignores (with a log line)
// ranges outside its mappings. The thread exits when recv returns 0.
//
// Staging (kernels with UFFD_FEATURE_MOVE; doc/design/move-eviction.md)
// ---------------------------------------------------------------------
// When hello says "move" and its UFFDIO_API enabled UFFD_FEATURE_MOVE, the
// client maps one staging area per process at attach: kStagingPages pages
// mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS), MADV_NOHUGEPAGE,
// MADV_DONTFORK (a forked child maps its own), registered
// UFFDIO_REGISTER_MODE_MISSING only on the same uffd, and sends it in
// "attach". Its pages ("slots") are empty except while they hold a page the
// evictor moved there. The pager never treats the range as a mapping: a
// REMOVE event inside it (the evictor emptying slots) is only noted, and a
// fault inside it (nothing should read an empty slot) is logged and
// zero-filled.
// On the evict channel the pager may then send, instead of a DropRequest,
//   pager -> client: MoveRequest (below), one per packet
//   client: madvise(MADV_DONTNEED) of each `empty` range, in order (the
//           slots are empty afterwards), then UFFDIO_MOVE of each run
//           [src, src+len) -> [slot, slot+len), in order, no mode flags
//   client -> pager: MoveReply {seq, per run: bytes moved (= len), or the
//           -errno the MOVE stopped with (pages before the failing one may
//           have moved: the pager tells by the pagemap of the source and
//           the slots). The kernel ends a MOVE that stops part-way with
//           EAGAIN; the client then moves the rest again, so a run's error
//           is the reason it stopped (EEXIST, EBUSY, ENOENT...); EAGAIN
//           itself means an address-space event was pending (nothing of
//           the rest moved).}
// The pager uses it so (daemon/pager/move_eviction.cc): a round sends one
// MoveRequest with its victims, victim k of the round to slot k, and
// nothing to empty; it writes the dirty moved pages back from their slots
// (a fault on one meanwhile is served from its slot); once every moved
// page is durable it sends a MoveRequest with only the round's slots to
// empty, and the round ends at its reply. So between rounds every slot is
// empty, and the slots the client's table lists always hold pages the
// pager has not let go of. A uffd with UFFD_FEATURE_EVENT_FORK, and the
// round after a run that failed with EBUSY (a page shared with a forked
// child), use DropRequests; except under WP_ASYNC, whose evictor unshares
// such pages (MADV_POPULATE_WRITE) after it replies, so they move later.
// The evictor tells the two requests apart by their magic. It validates
// the whole request before doing anything: size, counts (n_empty <=
// kMaxMoveEmpty, n_runs <= kMaxMoveRuns, at least one of either, the packet
// exactly move_request_size(n_empty, n_runs) bytes), page alignment of
// every address and length (non-zero lengths, no wrap), every empty range
// and every run's [slot, slot+len) inside the staging area, and every run's
// [src, src+len) inside one private mapping. A request that fails any
// check is refused whole (nothing emptied, nothing moved), logged, and
// answered with -EINVAL for each of its runs (min(n_runs, kMaxMoveRuns)). A
// packet shorter than the MoveRequest header, or with an unknown magic,
// ends the channel as a malformed DropRequest does.
// The client keeps a staging table (slot -> source page) of the slots its
// moves filled, cleared when a slot is emptied; of a failed run it counts
// the pages moved before the error, and any slot present while its source
// is not (a MOVE has been seen to report an error for a page it moved). A
// channel the client retired (daemon restart) gets no further request
// served, as with drops. A MoveRequest is never sent to a client that sent
// no "staging". Before a fork the client syncs the sources its staging
// table holds (see "Fork").
//
// Fork
// ----
// With EVENT_FORK (root clients) the pager receives the child's uffd from the
// kernel and serves the child until it exits. The child's pages that were
// resident at fork are its own copies; its missing pages are fetched from the
// region as it is when they fault. Without EVENT_FORK the kernel unregisters
// the child's ranges: the client library must re-register them in the child
// (pthread_atfork) with a new uffd (two, with a window uffd) and
// "attach"/"map" again. The window uffd never has EVENT_FORK: a child's
// shared windows are always the child's own client's to register again (the
// pager does not carry them over to an EVENT_FORK child).
// A child does not inherit the staging area (MADV_DONTFORK) and takes the
// pages it lacks from its parent's region, so before fork, with its moves
// held, the client sends "sync" for the sources its staging table holds
// (one per run of contiguous sources in one mapping); the pager answers it
// without the evictor, which waits for the fork. If memfedd goes away
// meanwhile, the reattach moves the staged pages back to their sources,
// where the child inherits them; a sync that fails otherwise (not_found
// aside) makes the child exit rather than read older content.
//
// Daemon restart
// --------------
// The client keeps its uffds (and memfds). On connection loss it reconnects
// with backoff, re-sends "attach" with the same uffds (and a fresh evict
// channel) and "map" for every mapping (for "shared", fds[0] = the client's
// memfd, which the pager adopts instead of creating one). Between "attach"
// and the first "map" the client lets its old evictor finish the drop it is
// in (its madvise waits until the new pager reads the REMOVE event; with no
// mapping yet, the pager ignores it and the pages are missing at the map,
// so they are fetched: the old pager wrote them back before asking) and
// starts no other drop on the old channel. The program's own drops
// (MADV_DONTNEED of its heap) in flight across the restart finish the same
// way, before any "map", and the client reports them in "removed", so those
// pages read as zero and not as the module's old content; new drops wait
// until the maps are sent. So are the drops that completed before the
// restart but whose zeroes the old pager may not have written back (it
// sends them asynchronously after reading the REMOVE event): the client
// keeps each drop until a "sync" of its range succeeds, or until the pager
// asks the evictor to drop pages of it (their newer content was written
// back first), and reports the ones it still keeps. The pager treats
// present pages as resident and dirty. While no daemon serves the uffd,
// faulting threads block in the kernel; no fault is ever resolved with a zero
// page that should have held data. The non-cooperative events block too:
// munmap, mremap, MADV_DONTNEED and fork of a registered range wait until a
// pager reads them (or until every copy of the uffd is closed, which drops
// the registrations). Faults on a registered range no "map" covers are held
// until a map covers them, or zero-filled after 10 s without a new "map" or
// "attach" (memory an mremap grew).
// With a staging area the client keeps it across the restart. Once the old
// evictor is out of its request (after "attach": its madvise may wait for
// the new pager to read the REMOVE event) and before the first "map", it
// moves each page its staging table holds back to its source: the source is
// empty unless the old pager served a fault there from the staged bytes,
// in which case the source holds newer content, the MOVE fails with EEXIST
// and the slot is stale. Then it empties every slot (one MADV_DONTNEED of
// the area; the new pager knows the range from "attach" and only notes the
// REMOVE event). From the first "map" on, every slot is empty.
//
// Region deleted while mapped
// ---------------------------
// (`region rm --force` through this daemon, or a delete on the region's
// module by another node, which the pager learns from the module's
// kNotFound within about a second.) The pager drops the region's pages from
// the process (private: through the evict channel, with no write-back;
// shared: punched out of the memfd) and answers every later fault on the
// mapping with UFFDIO_POISON, so the program gets SIGBUS there. "sync" of
// such a mapping fails with not_found; "unmap" succeeds. The client does
// nothing of its own.
#pragma once

#include <cstdint>

namespace memfed::pager
{

constexpr int kMapProtocolVersion = 1;

// Op names.
constexpr const char *kOpHello = "pager.hello";
constexpr const char *kOpAttach = "attach";
constexpr const char *kOpMap = "map";
constexpr const char *kOpMapReady = "map.ready";
constexpr const char *kOpUnmap = "unmap";
constexpr const char *kOpSync = "sync";
constexpr const char *kOpStats = "pager.stats";

// Values of "kind".
constexpr const char *kKindPrivate = "private";
constexpr const char *kKindShared = "shared";

// Most "removed" ranges one "map" carries.
constexpr uint32_t kMaxRemovedRanges = 4096;

// Evict channel records (little-endian, host layout; both ends are on one
// machine).
constexpr uint32_t kDropRequestMagic = 0x3244464d; // "MFD2"
constexpr uint32_t kDropReplyMagic = 0x4144464d;   // "MFDA"
constexpr uint32_t kMaxDropRanges = 256;

struct DropRange {
	uint64_t addr;   // page aligned
	uint64_t length; // page multiple
};

struct DropRequest {
	uint32_t magic; // kDropRequestMagic
	uint32_t count; // ranges that follow, 1..kMaxDropRanges
	uint64_t seq;
	// CLOCK_MONOTONIC (one clock for both ends) when the pager sent it. A
	// program drop of one of these pages that ended before then was read
	// before the page was picked, so the written-back content is newer and
	// the client forgets that drop; one that ended later may have come
	// after the write-back, and the pager makes its zeroes durable
	// (libclient/drop_ledger.h).
	uint64_t sent_ns;
	DropRange ranges[kMaxDropRanges]; // only `count` are sent
};

struct DropReply {
	uint32_t magic; // kDropReplyMagic
	int32_t error;  // 0 or the first -errno madvise returned
	uint64_t seq;
};

// Size of a DropRequest carrying `count` ranges.
constexpr uint64_t drop_request_size(uint32_t count)
{
	return 24 + uint64_t{count} * sizeof(DropRange);
}

// Staging area and the records of eviction by UFFDIO_MOVE ("Staging").
constexpr uint32_t kStagingPages = 2 * 512;               // what libmemfed maps
constexpr uint64_t kMaxStagingBytes = uint64_t{64} << 20; // what "attach" accepts
constexpr uint32_t kMoveRequestMagic = 0x524d464d;        // "MFMR"
constexpr uint32_t kMoveReplyMagic = 0x414d464d;          // "MFMA"
constexpr uint32_t kMaxMoveEmpty = 512;
constexpr uint32_t kMaxMoveRuns = 512;

struct MoveRun {
	uint64_t src;  // page aligned, in a private mapping
	uint64_t len;  // page multiple
	uint64_t slot; // page aligned, [slot, slot+len) in the staging area
};

struct MoveRequest {
	uint32_t magic;   // kMoveRequestMagic
	uint32_t n_empty; // 0..kMaxMoveEmpty
	uint32_t n_runs;  // 0..kMaxMoveRuns; n_empty + n_runs >= 1
	uint32_t flags;   // kMoveWantHashes
	uint64_t seq;
	// CLOCK_MONOTONIC when sent (logs). Unlike a drop, a move does not
	// settle the program's drops of its pages: their write-back comes after.
	uint64_t sent_ns;
	// Packed: n_empty DropRanges (staging to empty), then n_runs MoveRuns.
	uint64_t words[2 * kMaxMoveEmpty + 3 * kMaxMoveRuns];

	DropRange empty(uint32_t i) const { return {words[2 * i], words[2 * i + 1]}; }
	MoveRun run(uint32_t i) const
	{
		const uint64_t *w = words + 2 * n_empty + 3 * i;
		return {w[0], w[1], w[2]};
	}
	// Set n_empty before the runs.
	void set_empty(uint32_t i, DropRange r)
	{
		words[2 * i] = r.addr;
		words[2 * i + 1] = r.length;
	}
	void set_run(uint32_t i, MoveRun r)
	{
		uint64_t *w = words + 2 * n_empty + 3 * i;
		w[0] = r.src;
		w[1] = r.len;
		w[2] = r.slot;
	}
};

// MoveRequest.flags: reply with the content hash of every page moved (a
// uffd under WP_ASYNC; the pager's async_dirty.cc).
constexpr uint32_t kMoveWantHashes = 1;
// MoveRequest.flags: the pager thread is pinned beside the program's
// faulting thread (colocation.cc) on CPU `flags >> kMoveCpuShift`; the
// evictor runs there while requests say so (libclient/evictor_pin.h), so
// that its changes to the program's page tables need no TLB-flush
// interrupt to the program's CPU. An evictor that does not know the bit
// ignores it.
constexpr uint32_t kMoveOnCpu = 2;
constexpr uint32_t kMoveCpuShift = 16;
constexpr uint32_t kMaxMoveHashes = kStagingPages;

struct MoveReply {
	uint32_t magic;  // kMoveReplyMagic
	uint32_t n_runs; // the request's
	uint64_t seq;
	// Per run, in order: bytes moved (the run's len) or -errno. Then, if
	// the request had kMoveWantHashes and "attach" gave a "content_key":
	// for each run moved whole, in order, the content_hash() of each of
	// its pages as it sits in its slot, with that key (at most
	// kMaxMoveHashes; a reply with fewer than the whole runs' pages has
	// them for none).
	int64_t result[kMaxMoveRuns + kMaxMoveHashes]; // only what is used is sent
	uint64_t hash(uint32_t k) const { return uint64_t(result[n_runs + k]); }
	void set_hash(uint32_t k, uint64_t h) { result[n_runs + k] = int64_t(h); }
};

// Size of a MoveRequest with `n_empty` ranges to empty and `n_runs` runs.
constexpr uint64_t move_request_size(uint32_t n_empty, uint32_t n_runs)
{
	return 32 + uint64_t{n_empty} * 16 + uint64_t{n_runs} * 24;
}
// Size of a MoveReply for `n_runs` runs and `n_hashes` page hashes.
constexpr uint64_t move_reply_size(uint32_t n_runs, uint32_t n_hashes = 0)
{
	return 16 + (uint64_t{n_runs} + n_hashes) * 8;
}
static_assert(sizeof(MoveRequest) == move_request_size(kMaxMoveEmpty, kMaxMoveRuns));
static_assert(sizeof(MoveReply) == move_reply_size(kMaxMoveRuns, kMaxMoveHashes));

} // namespace memfed::pager
