#include "daemon/pager/prefetch.h"

#include <algorithm>

namespace memfed::pager
{

namespace
{
// pos + n, at most kNoPage: a descending stream near page 0 is near the top
// of the positions, and its next position must not wrap round to 0.
uint32_t sum(uint32_t pos, uint64_t n)
{
	return uint32_t(std::min<uint64_t>(pos + n, kNoPage));
}
} // namespace

bool StreamDetector::ahead_of_stream(uint32_t idx) const
{
	for (const Stream &s : streams_)
		if (s.conf >= 2 && s.last != kNoPage && s.pos(idx) > s.last && s.pos(idx) < s.next)
			return true;
	return false;
}

int StreamDetector::stream_of_tripwire(uint32_t idx) const
{
	for (int i = 0; i < kStreams; i++)
		if (streams_[i].trip == idx)
			return i;
	return -1;
}

void StreamDetector::requested_until(int stream, uint32_t next)
{
	Stream &s = streams_[stream];
	if (next == kNoPage)
		return;
	if (s.pos(next) < s.next)
		s.next = std::max(s.pos(next), sum(s.last, s.stride));
	if (s.trip != kNoPage && s.pos(s.trip) >= s.next)
		s.trip = kNoPage;
}

bool StreamDetector::matches(Stream &s, uint32_t idx)
{
	if (s.last == kNoPage)
		return false;
	if (s.stride == 0) {
		// The second fault: it sets the stride, and a fault below the
		// first one turns the stream round.
		if (idx > s.last && idx - s.last <= kMaxStride) {
			s.stride = idx - s.last;
		} else if (idx < s.last && s.last - idx <= kMaxStride) {
			s.stride = s.last - idx;
			s.down = true;
			s.last = s.pos(s.last);
			s.next = s.hit_mark = s.last + 1;
		} else {
			return false;
		}
		s.conf = 1;
		return true;
	}
	const uint32_t x = s.pos(idx);
	if (x <= s.last)
		return false;
	const uint32_t d = x - s.last;
	if (s.conf >= 2)
		// An established stream: the fault is anywhere in what was
		// requested for it, or just past it.
		return d % s.stride == 0 && x <= s.next;
	if (d != s.stride)
		return false;
	s.conf++;
	return true;
}

bool StreamDetector::on_fault(uint32_t idx, uint32_t npages, uint32_t window, uint32_t max_window,
                              PrefetchPlan *plan, uint64_t *hits, uint32_t *released)
{
	*released = kNoPage;
	clock_++;
	// Established streams first: a fault in what was requested for one
	// must not start another stream beside it.
	int match = -1;
	for (int pass = 0; pass < 2 && match < 0; pass++)
		for (int i = 0; i < kStreams && match < 0; i++)
			if ((streams_[i].conf >= 2) == (pass == 0) && matches(streams_[i], idx))
				match = i;
	if (match < 0) {
		// A new candidate stream replaces the least recently used one.
		int victim = 0;
		for (int i = 1; i < kStreams; i++)
			if (streams_[i].used < streams_[victim].used)
				victim = i;
		*released = streams_[victim].trip;
		streams_[victim] = Stream{idx, 0, 0, idx + 1, idx + 1, kNoPage, 0, clock_};
		return false;
	}
	Stream &s = streams_[match];
	s.used = clock_;
	// From here on, in positions: the mapping ends at `limit`, past the
	// last page going up, past page 0 going down.
	const uint32_t x = s.pos(idx);
	const uint64_t limit = s.down ? uint64_t{kMirror} + 1 : npages;
	if (s.conf >= 2 && x > s.hit_mark) {
		*hits += (x - s.hit_mark) / s.stride;
		s.hit_mark = x;
	}
	s.last = x;
	s.next = std::max(s.next, sum(x, s.stride));
	if (s.conf < 2 || window == 0)
		return false;

	// Ask for everything up to `window` strides ahead not requested yet,
	// but not in dribbles: wait until a quarter of the window is free.
	if (s.stride == 1)
		window = std::max(window, s.win);
	uint64_t end = uint64_t{x} + uint64_t{s.stride} * (s.stride == 1 ? window : window / 4 + 1);
	end = std::min<uint64_t>(end, limit);
	if (s.next >= end)
		return false;
	uint32_t count = static_cast<uint32_t>((end - s.next + s.stride - 1) / s.stride);
	uint32_t min_batch = s.stride == 1 ? std::max(1u, window / 4) : 1;
	if (count < min_batch && end < limit)
		return false;
	plan->first = s.page(s.next);
	plan->count = count;
	plan->stride = s.stride;
	plan->down = s.down;
	plan->stream = match;
	plan->tripwire = kNoPage;
	if (s.stride == 1 && count >= 8 && s.trip == kNoPage) {
		plan->tripwire = s.page(s.next + count / 2);
		s.trip = plan->tripwire;
	}
	s.next = sum(s.next, uint64_t{count} * s.stride);
	if (s.stride == 1)
		s.win = uint32_t(
		        std::min<uint64_t>(std::max(window, max_window), uint64_t{window} * 2));
	return true;
}

} // namespace memfed::pager
