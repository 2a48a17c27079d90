// WriteMix: whether a private mapping's read faults install their pages
// write-protected, as a pure policy (counts in, decision out; no I/O, no
// clock). Owned by a Mapping and used by its pager thread only.
//
// A page installed write-protected stays clean until its first write, which
// costs a write-protect fault: a trip through the pager and a
// UFFDIO_WRITEPROTECT with its TLB flush. That pays off when most read pages
// are never written (the eviction drops them without a write-back). When
// most are written soon after (a sort, a hash table being filled), the fault
// is pure cost: the page is installed writable and counted dirty instead,
// and written back at eviction whether or not it was written.
//
// The mix is measured over windows of kWindow write-protected installs: the
// share of them that took a write-protect fault. At half or more the mapping
// installs writable, but still one read fault in kSample write-protected, so
// the next windows keep measuring and it switches back when the program's
// writes thin out.
#pragma once

#include <cstdint>

namespace memfed::pager
{

class WriteMix
{
public:
	static constexpr uint32_t kWindow = 512;
	static constexpr uint32_t kSample = 8;

	// Whether the read fault being installed now goes write-protected.
	bool install_protected()
	{
		if (!writable_)
			return true;
		return ++unsampled_ % kSample == 0;
	}
	// `pages` were installed write-protected.
	void on_protected_install(uint32_t pages)
	{
		installs_ += pages;
		if (installs_ < kWindow)
			return;
		writable_ = uint64_t{writes_} * 2 >= installs_;
		installs_ = writes_ = 0;
	}
	// A write-protect fault on a resident page (its first write).
	void on_write_fault() { writes_++; }
	bool writable() const { return writable_; }

private:
	uint32_t installs_ = 0, writes_ = 0; // this window
	uint32_t unsampled_ = 0;
	bool writable_ = false;
};

} // namespace memfed::pager
