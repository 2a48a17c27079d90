#include "daemon/pager/prefetch.h"

#include <algorithm>

namespace memfed::pager
{

bool StreamDetector::ahead_of_stream(uint32_t idx) const
{
	for (const Stream &s : streams_)
		if (s.conf >= 2 && s.last != kNoPage && idx > s.last && idx < s.next)
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
	if (next < s.next)
		s.next = std::max(next, s.last + s.stride);
	if (s.trip != kNoPage && s.trip >= s.next)
		s.trip = kNoPage;
}

bool StreamDetector::on_fault(uint32_t idx, uint32_t npages, uint32_t window, uint32_t max_window,
                              PrefetchPlan *plan, uint64_t *hits, uint32_t *released)
{
	*released = kNoPage;
	clock_++;
	int match = -1;
	for (int i = 0; i < kStreams && match < 0; i++) {
		Stream &s = streams_[i];
		if (s.last == kNoPage || idx <= s.last)
			continue;
		uint32_t d = idx - s.last;
		if (s.conf >= 2) {
			// An established stream: the fault is anywhere in what was
			// requested for it, or just past it.
			if (d % s.stride == 0 && idx <= s.next)
				match = i;
		} else if (s.stride == 0) {
			if (d <= kMaxStride) {
				s.stride = d;
				s.conf = 1;
				match = i;
			}
		} else if (d == s.stride) {
			s.conf++;
			match = i;
		}
	}
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
	if (s.conf >= 2 && idx > s.hit_mark) {
		*hits += (idx - s.hit_mark) / s.stride;
		s.hit_mark = idx;
	}
	s.last = idx;
	s.next = std::max(s.next, idx + s.stride);
	if (s.conf < 2 || window == 0)
		return false;

	// Ask for everything up to `window` strides ahead not requested yet,
	// but not in dribbles: wait until a quarter of the window is free.
	if (s.stride == 1)
		window = std::max(window, s.win);
	uint64_t end =
	        uint64_t{idx} + uint64_t{s.stride} * (s.stride == 1 ? window : window / 4 + 1);
	end = std::min<uint64_t>(end, npages);
	if (s.next >= end)
		return false;
	uint32_t count = static_cast<uint32_t>((end - s.next + s.stride - 1) / s.stride);
	uint32_t min_batch = s.stride == 1 ? std::max(1u, window / 4) : 1;
	if (count < min_batch && end < npages)
		return false;
	plan->first = s.next;
	plan->count = count;
	plan->stride = s.stride;
	plan->stream = match;
	plan->tripwire = kNoPage;
	if (s.stride == 1 && count >= 8 && s.trip == kNoPage) {
		plan->tripwire = s.next + count / 2;
		s.trip = plan->tripwire;
	}
	s.next = plan->first + count * s.stride;
	if (s.stride == 1)
		s.win = uint32_t(
		        std::min<uint64_t>(std::max(window, max_window), uint64_t{window} * 2));
	return true;
}

} // namespace memfed::pager
