// The node's own place in the mesh: its addresses and IPv6 forwarding.
//
// Each of the node's mesh addresses (its module's address, or the node's own
// address when it has no module) is a /128 on the loopback interface, added
// over rtnetlink (libnl-route-3) and removed again on exit; babeld announces
// exactly those. Every mesh node forwards IPv6 (relays, pager-only nodes and
// modules alike), so forwarding is switched on for the node's network
// namespace.
#pragma once

#include <netinet/in.h>

#include <string>
#include <vector>

#include "daemon/common/status.h"

namespace memfed::mesh
{

// kNotFound naming the interface and the fix when one is missing.
Status check_interfaces(const std::vector<std::string> &interfaces);
Status enable_ipv6_forwarding();
// Lets babeld speak on a mesh interface as soon as it comes up: no duplicate
// address detection on it (accept_dad 0), so the link-local address a link
// gets again when it comes up is usable at once rather than after the 1-2 s
// of DAD, during which babeld's hellos fail ("send: Cannot assign requested
// address") and a car that reached a new lamp post stays unrouted. Optimistic
// DAD (RFC 4429) was tried and did not help: babeld still waited out DAD.
// A link-local address is the interface's MAC in EUI-64 form, unique as the
// MAC is; the mesh's own addresses (module IDs) have their duplicates refused
// at HELLO.
Status link_local_at_once(const std::vector<std::string> &interfaces);

// Adds `addrs` as /128s on lo (an address already there is fine) and removes
// them when destroyed.
class NodeAddresses
{
public:
	NodeAddresses() = default;
	~NodeAddresses();
	NodeAddresses(const NodeAddresses &) = delete;
	NodeAddresses &operator=(const NodeAddresses &) = delete;

	Status add(const std::vector<in6_addr> &addrs);

private:
	std::vector<in6_addr> added_;
};

} // namespace memfed::mesh
