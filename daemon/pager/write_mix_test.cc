// WriteMix (write_mix.h): read faults install write-protected until half of
// a window's protected installs are written, then writable with one in
// kSample still protected, and protected again when writes thin out.
#include "daemon/pager/write_mix.h"

#include <catch2/catch.hpp>

using memfed::pager::WriteMix;

namespace
{

// Installs `faults` read faults (one page each), writing the first
// `write_share` of every ten protected ones; returns how many were protected.
uint32_t run(WriteMix &mix, uint32_t faults, uint32_t write_share)
{
	uint32_t protected_n = 0;
	for (uint32_t i = 0; i < faults; i++) {
		if (!mix.install_protected())
			continue;
		mix.on_protected_install(1);
		if (protected_n++ % 10 < write_share)
			mix.on_write_fault();
	}
	return protected_n;
}

} // namespace

TEST_CASE("a mapping whose read pages are mostly written installs them writable",
          "[pager][write_mix]")
{
	WriteMix mix;
	CHECK_FALSE(mix.writable());
	// Three in ten written: stays protected, every fault protected.
	CHECK(run(mix, 4 * WriteMix::kWindow, 3) == 4 * WriteMix::kWindow);
	CHECK_FALSE(mix.writable());
	// Seven in ten: writable after the window that shows it.
	CHECK(run(mix, WriteMix::kWindow, 7) == WriteMix::kWindow);
	CHECK(mix.writable());
	// Writable: one fault in kSample still goes protected, to keep measuring.
	uint32_t n = 80 * WriteMix::kSample;
	uint32_t sampled = run(mix, n, 7);
	CHECK(sampled == n / WriteMix::kSample);
	CHECK(mix.writable());
}

TEST_CASE("a mapping goes back to protected installs when its writes thin out",
          "[pager][write_mix]")
{
	WriteMix mix;
	run(mix, WriteMix::kWindow, 10);
	REQUIRE(mix.writable());
	// Now one in ten: the sampled installs fill a window and show it.
	run(mix, WriteMix::kWindow * WriteMix::kSample, 1);
	CHECK_FALSE(mix.writable());
	CHECK(run(mix, 100, 1) == 100);
	// Exactly half written counts as mostly written.
	WriteMix half;
	run(half, WriteMix::kWindow, 5);
	CHECK(half.writable());
}
