// Module addresses: a module ID is an IPv6 address in the mesh.
//
// Every module has exactly one address in the mesh's ULA /64: the prefix's
// upper 64 bits, then the module ID's EUI-48 turned into a modified EUI-64
// interface identifier the way RFC 4291 (appendix A) turns a MAC address into
// one: ff:fe inserted between the third and fourth octets, and the
// universal/local bit (0x02 of the first octet) inverted. So module
// 02:00:00:00:00:01 in fd6d:6564::/64 is fd6d:6564::ff:fe00:1, and the
// address names the module and nothing else: relays route on it alone.
//
// The mapping is reversible for addresses in the prefix that carry the ff:fe
// marker; anything else in the prefix (a pager-only node's own address,
// node_address(), say) is not a module.
#pragma once

#include <netinet/in.h>

#include <optional>
#include <string>
#include <string_view>

#include "daemon/common/ids.h"
#include "daemon/common/status.h"

namespace memfed::mesh
{

// An IPv6 /64 prefix: only the upper 64 bits matter.
struct MeshPrefix {
	in6_addr net{}; // lower 64 bits zero

	// "fd6d:6564::/64" (the length must be 64; the host bits must be zero).
	static Result<MeshPrefix> parse(std::string_view text);
	std::string to_string() const; // "fd6d:6564::/64"
	bool contains(const in6_addr &a) const;

	friend bool operator==(const MeshPrefix &a, const MeshPrefix &b);
};

// The default mesh prefix, a ULA: fd6d:6564::/64 ("md" "ed").
MeshPrefix default_mesh_prefix();

// The module's address in `prefix`.
in6_addr module_address(const MeshPrefix &prefix, ModuleId id);
// The module whose address `a` is, if `a` is one in `prefix`.
std::optional<ModuleId> module_of_address(const MeshPrefix &prefix, const in6_addr &a);
// A node without a module (a pager-only node, a relay) still needs a
// routable address of its own to originate connections from. It is made from
// the node's ID like a module address, with fe:fd in place of ff:fe, so it is
// never mistaken for a module's.
in6_addr node_address(const MeshPrefix &prefix, ModuleId node);

// "[addr]:port", the endpoint form of a mesh address.
std::string mesh_endpoint(const in6_addr &a, std::string_view port);
// Text forms of IPv6 addresses (inet_ntop / inet_pton).
std::string format_ipv6(const in6_addr &a);
std::optional<in6_addr> parse_ipv6(std::string_view text);

} // namespace memfed::mesh
