// StreamDetector: finds sequential and strided fault streams in one mapping
// and plans the prefetch that serves them.
//
// Every demand fault of the mapping is shown to the detector. Three faults
// a constant stride apart (1 = sequential, up to kMaxStride pages), going up
// or down, make a stream; from then on each fault of the stream asks for
// the pages up to `window` strides ahead that were not requested yet.
// Descending streams are as common as ascending ones: GNU sort keeps its
// line table at the top of its buffer, growing down, and its merge passes
// walk it from high addresses to low; the kernel's swap readahead serves
// both directions too. A descending stream is kept in mirrored page
// numbers (kMirror - page), so one set of rules serves both. For sequential
// streams one page in the middle of each new window is a tripwire: the pager
// keeps its data instead of installing it, so the program faults there
// halfway through the window — cheaply, the data is local — and that fault
// requests the next window while the second half is being consumed. Without
// it the program would stall on a full fetch round trip at the end of every
// window. Prefetch hits are the prefetched pages a stream has moved past.
//
// A sequential stream's window starts at `window` and doubles with every
// request it makes, up to `max_window` (the caller bounds it by the budget
// and the bulk buffers): a stream that goes on keeps several bulk reads in
// flight, so the module sends the next run while the pager installs this
// one, as CRIU's page server pushes 2 MiB chunks behind the faults; a short
// run of sequential faults still fetches only a window ahead.
//
// Thread-safety: owned by the mapping's pager thread.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

namespace memfed::pager
{

constexpr uint32_t kNoPage = UINT32_MAX;

// The pages first, first +- stride, ... (count of them), in the order the
// stream will reach them: upward, or downward when `down`.
struct PrefetchPlan {
	uint32_t first = 0;          // first page to fetch: the one nearest the stream
	uint32_t count = 0;          // pages to fetch
	uint32_t stride = 1;         // 1: a run of consecutive pages; else every stride-th page
	bool down = false;           // a descending stream: first is the highest page
	uint32_t tripwire = kNoPage; // page whose data is held back, or kNoPage
	int stream = -1;             // which stream slot (owns the tripwire buffer)

	// The k-th page of the plan, in the stream's order (k < count).
	uint32_t page(uint32_t k) const { return down ? first - k * stride : first + k * stride; }
};

// A run of pages to fetch: `count` pages from `first`, `stride` apart.
struct FetchRun {
	uint32_t first = 0;
	uint32_t count = 0;
};

// Why plan_fetch_runs stopped before the end of the plan.
enum class FetchStop { kNone, kRuns, kBudget };

// Cuts `plan` into fetch runs over a mapping's pages (`remote(i)`: page i
// is on the module and not being fetched), in the stream's order, so that
// what a limit leaves out is the far end. Pages that are not remote are
// skipped; a sequential plan (stride 1) gives runs of consecutive remote
// pages of at most `max_run` pages (each run ascending, whatever the
// plan's direction), a strided plan one page per run. At most `allowed`
// pages in all and `max_runs` runs (the buffers free). Writes the runs to
// out[0..n) and returns n; *stop says why it stopped early, and then *next
// is the first page of the plan, in the stream's order, not covered (the
// stream asks for the rest later). Pure: inputs in, decision out.
template <typename Remote>
size_t plan_fetch_runs(const PrefetchPlan &plan, Remote remote, uint64_t allowed, uint32_t max_run,
                       size_t max_runs, FetchRun *out, uint32_t *next, FetchStop *stop)
{
	if (plan.stride != 1)
		max_run = 1;
	size_t n = 0;
	uint32_t k = 0; // position in the plan
	*stop = FetchStop::kNone;
	while (k < plan.count) {
		const uint32_t i = plan.page(k);
		if (!remote(i)) {
			k++;
			continue;
		}
		if (n == max_runs || allowed == 0) {
			*stop = allowed == 0 ? FetchStop::kBudget : FetchStop::kRuns;
			break;
		}
		uint32_t c = 0;
		while (k < plan.count && c < max_run && c < allowed && remote(plan.page(k))) {
			c++;
			k++;
		}
		allowed -= c;
		// c > 1 only for a sequential plan: a descending run ends at i.
		out[n++] = FetchRun{plan.down ? i - (c - 1) : i, c};
	}
	*next = k < plan.count ? plan.page(k) : kNoPage;
	return n;
}

class StreamDetector
{
public:
	static constexpr int kStreams = 4;
	static constexpr uint32_t kMaxStride = 16;

	// A demand fault (or tripwire fault) at page `idx` of a mapping of
	// `npages`. Returns true with `plan` filled when pages should be
	// prefetched; adds newly passed prefetched pages to *hits. If a stream
	// slot is recycled while it still had a tripwire page, *released gets
	// that page (the caller drops its held data); else kNoPage. A
	// sequential stream's window grows from `window` to `max_window`
	// (taken as `window` when smaller).
	bool on_fault(uint32_t idx, uint32_t npages, uint32_t window, uint32_t max_window,
	              PrefetchPlan *plan, uint64_t *hits, uint32_t *released);
	// The tripwire page of `stream`, or kNoPage.
	uint32_t tripwire(int stream) const { return streams_[stream].trip; }
	// Forgets the tripwire of `stream` (its page was installed or dropped).
	void clear_tripwire(int stream) { streams_[stream].trip = kNoPage; }
	// The pager requested pages of `stream` only up to `next`, in the
	// stream's order (it ran out of buffers or budget); later faults ask
	// for the rest.
	void requested_until(int stream, uint32_t next);
	// Whether `idx` lies ahead of an established stream, in what was
	// prefetched for it and not consumed yet (eviction spares those).
	bool ahead_of_stream(uint32_t idx) const;
	// The stream whose tripwire is `idx`, or -1.
	int stream_of_tripwire(uint32_t idx) const;

private:
	// A descending stream's positions are kMirror - page: they grow as it
	// goes, and never meet kNoPage.
	static constexpr uint32_t kMirror = kNoPage - 1;

	// last, next and hit_mark are positions: pages, or mirrored pages when
	// `down`. A stream with one fault (stride 0) is not mirrored yet.
	struct Stream {
		uint32_t last = kNoPage; // last fault
		uint32_t stride = 0;     // 0: not known yet
		uint32_t conf = 0;       // faults that matched the stride
		uint32_t next = 0;       // first position not requested yet
		uint32_t hit_mark = 0;   // first prefetched position not counted as a hit
		uint32_t trip = kNoPage; // a page, never mirrored
		uint32_t win = 0;  // a sequential stream's window now; 0: not grown yet
		uint64_t used = 0; // for recycling the least recently used slot
		bool down = false;

		uint32_t pos(uint32_t page) const { return down ? kMirror - page : page; }
		// A position back to its page (the mirror is its own inverse).
		uint32_t page(uint32_t pos) const { return down ? kMirror - pos : pos; }
	};
	// Matches fault `idx` against stream `s`, learning its stride and
	// direction from its second fault; true if the fault is the stream's.
	static bool matches(Stream &s, uint32_t idx);
	std::array<Stream, kStreams> streams_{};
	uint64_t clock_ = 0;
};

} // namespace memfed::pager
