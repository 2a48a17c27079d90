#include "daemon/mesh/module_address.h"

#include <arpa/inet.h>

#include <cstring>

namespace memfed::mesh
{

Result<MeshPrefix> MeshPrefix::parse(std::string_view text)
{
	auto slash = text.find('/');
	if (slash == std::string_view::npos || text.substr(slash + 1) != "64")
		return Status(Code::kInvalidArgument,
		              "mesh prefix '" + std::string(text) +
		                      "' must be an IPv6 /64, e.g. fd6d:6564::/64");
	auto addr = parse_ipv6(text.substr(0, slash));
	if (!addr)
		return Status(Code::kInvalidArgument,
		              "mesh prefix '" + std::string(text) + "' is not an IPv6 address/64");
	for (int i = 8; i < 16; i++) {
		if (addr->s6_addr[i] != 0)
			return Status(Code::kInvalidArgument,
			              "mesh prefix '" + std::string(text) +
			                      "' has host bits set; write it as the /64 network");
	}
	MeshPrefix p;
	p.net = *addr;
	return p;
}

std::string MeshPrefix::to_string() const
{
	return format_ipv6(net) + "/64";
}

bool MeshPrefix::contains(const in6_addr &a) const
{
	return std::memcmp(a.s6_addr, net.s6_addr, 8) == 0;
}

bool operator==(const MeshPrefix &a, const MeshPrefix &b)
{
	return std::memcmp(a.net.s6_addr, b.net.s6_addr, 16) == 0;
}

MeshPrefix default_mesh_prefix()
{
	return *MeshPrefix::parse("fd6d:6564::/64");
}

namespace
{

in6_addr interface_id(const MeshPrefix &prefix, ModuleId id, uint8_t mark0, uint8_t mark1)
{
	in6_addr a = prefix.net;
	uint8_t mac[6];
	for (int i = 0; i < 6; i++)
		mac[i] = uint8_t(id.value >> (40 - 8 * i));
	a.s6_addr[8] = mac[0] ^ 0x02; // the universal/local bit, inverted
	a.s6_addr[9] = mac[1];
	a.s6_addr[10] = mac[2];
	a.s6_addr[11] = mark0;
	a.s6_addr[12] = mark1;
	a.s6_addr[13] = mac[3];
	a.s6_addr[14] = mac[4];
	a.s6_addr[15] = mac[5];
	return a;
}

} // namespace

in6_addr module_address(const MeshPrefix &prefix, ModuleId id)
{
	return interface_id(prefix, id, 0xff, 0xfe);
}

in6_addr node_address(const MeshPrefix &prefix, ModuleId node)
{
	return interface_id(prefix, node, 0xfe, 0xfd);
}

std::optional<ModuleId> module_of_address(const MeshPrefix &prefix, const in6_addr &a)
{
	if (!prefix.contains(a) || a.s6_addr[11] != 0xff || a.s6_addr[12] != 0xfe)
		return std::nullopt;
	uint64_t v = uint64_t(a.s6_addr[8] ^ 0x02) << 40 | uint64_t(a.s6_addr[9]) << 32 |
	             uint64_t(a.s6_addr[10]) << 24 | uint64_t(a.s6_addr[13]) << 16 |
	             uint64_t(a.s6_addr[14]) << 8 | uint64_t(a.s6_addr[15]);
	ModuleId id{v};
	if (!id.valid())
		return std::nullopt;
	return id;
}

std::string mesh_endpoint(const in6_addr &a, std::string_view port)
{
	std::string ep;
	ep.reserve(INET6_ADDRSTRLEN + 8);
	ep.push_back('[');
	ep.append(format_ipv6(a));
	ep.append("]:");
	ep.append(port);
	return ep;
}

std::string format_ipv6(const in6_addr &a)
{
	char buf[INET6_ADDRSTRLEN];
	if (!inet_ntop(AF_INET6, &a, buf, sizeof(buf)))
		return "?";
	return buf;
}

std::optional<in6_addr> parse_ipv6(std::string_view text)
{
	char buf[INET6_ADDRSTRLEN];
	if (text.empty() || text.size() >= sizeof(buf))
		return std::nullopt;
	std::memcpy(buf, text.data(), text.size());
	buf[text.size()] = '\0';
	in6_addr a;
	if (inet_pton(AF_INET6, buf, &a) != 1)
		return std::nullopt;
	return a;
}

} // namespace memfed::mesh
