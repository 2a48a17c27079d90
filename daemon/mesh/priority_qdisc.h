// PriorityQdisc: strict priority by DSCP on a mesh interface, so that on
// every hop a demand fault goes out before bulk work queued ahead of it
// (issue 11, item 5; the marks are set per connection, dscp.h).
//
// The host kernel has no prio, ets or fq qdisc and no classifier but u32
// (../shared/notes/mesh.md), so strict priority is built from htb, over
// rtnetlink (libnl-route-3; the same calls as `tc`):
//
//   root 6d66: htb, default class 6d66:40
//     6d66:1  rate R ceil R                      (R: Options::rate_bps)
//       6d66:10  prio 0  EF  (46)   faults
//       6d66:20  prio 1  CS2 (16)   control
//       6d66:40  prio 1  unmarked   babel, hop probes, everything else
//       6d66:30  prio 2  CS1 (8)    bulk: write-back, prefetch
//   u32 filters: IPv6 traffic-class byte (and IPv4 TOS), top six bits.
//
// Each leaf is assured a sliver of R (R/1000) and may borrow up to R; htb
// lends what is spare to the lowest prio value first, so while faults wait
// they take the link and bulk gets only its sliver. R should be the link's
// real rate (or a little under): a queue builds only where the rate is
// exceeded, and priority acts only on a queue this qdisc holds. The
// default, 10 gbit/s, suits a veth or a fast LAN.
//
// The interface sends one TCP segment per packet while the qdisc is on
// (IFLA_GSO_MAX_SEGS 1; the old limit is restored on exit): htb takes a
// GSO packet as a whole, and 64 KiB of bulk taken at once would hold a
// shaped link (17 ms at 30 Mbit/s) with every fault behind it. Connections
// made before install() keep their larger packets.
//
// install() refuses an interface whose root qdisc someone else put there
// (a handle other than ours or the kernel's default): it names it and the
// way out. A root qdisc with our handle is a leftover of a memfedd that
// did not exit cleanly, and is replaced. The destructor removes the qdisc
// (its classes and filters go with it).
//
// Thread-safety: none needed; created and destroyed by MeshNode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "daemon/common/status.h"

namespace memfed::mesh
{

class PriorityQdisc
{
public:
	static constexpr uint32_t kMajor = 0x6d66; // "mf"
	static constexpr uint64_t kDefaultRateBps = 10'000'000'000;

	struct Options {
		uint64_t rate_bps = kDefaultRateBps; // bits per second
	};
	static Result<std::unique_ptr<PriorityQdisc>> install(const std::string &iface,
	                                                      const Options &o);
	~PriorityQdisc();
	PriorityQdisc(const PriorityQdisc &) = delete;
	PriorityQdisc &operator=(const PriorityQdisc &) = delete;

	const std::string &interface() const { return iface_; }

private:
	PriorityQdisc(std::string iface, int ifindex) : iface_(std::move(iface)), ifindex_(ifindex)
	{
	}
	std::string iface_;
	int ifindex_;
	uint32_t gso_max_segs_ = 0; // to restore; 0: not changed
};

} // namespace memfed::mesh
