#include "daemon/common/ids.h"

#include <cinttypes>
#include <cstdio>
#include <sys/random.h>

namespace memfed {

std::string ModuleId::to_string() const
{
	char buf[18];
	std::snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x",
		      unsigned(value >> 40) & 0xff, unsigned(value >> 32) & 0xff,
		      unsigned(value >> 24) & 0xff, unsigned(value >> 16) & 0xff,
		      unsigned(value >> 8) & 0xff, unsigned(value) & 0xff);
	return buf;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

std::optional<ModuleId> ModuleId::parse(std::string_view text)
{
	// Exactly six two-digit hex octets separated by ':'.
	if (text.size() != 17)
		return std::nullopt;
	uint64_t v = 0;
	for (size_t i = 0; i < 17; i += 3) {
		int hi = hex_digit(text[i]), lo = hex_digit(text[i + 1]);
		if (hi < 0 || lo < 0)
			return std::nullopt;
		if (i + 2 < 17 && text[i + 2] != ':')
			return std::nullopt;
		v = (v << 8) | uint64_t(hi << 4 | lo);
	}
	ModuleId id{v};
	if (!id.valid())
		return std::nullopt;
	return id;
}

ModuleId ModuleId::random()
{
	uint64_t v = 0;
	while (true) {
		if (getrandom(&v, sizeof(v), 0) != sizeof(v))
			continue;
		v &= kModuleIdMask;
		// First octet: locally administered (0x02), unicast (~0x01).
		v = (v & ~(uint64_t{0x03} << 40)) | (uint64_t{0x02} << 40);
		if (ModuleId{v}.valid())
			return ModuleId{v};
	}
}

std::string FederatedAddress::to_string() const
{
	char buf[32];
	std::snprintf(buf, sizeof(buf), "/0x%" PRIx64, offset);
	return module.to_string() + buf;
}

std::optional<FederatedAddress> FederatedAddress::parse(std::string_view text)
{
	auto slash = text.find('/');
	if (slash == std::string_view::npos)
		return std::nullopt;
	auto id = ModuleId::parse(text.substr(0, slash));
	auto off = text.substr(slash + 1);
	if (!id || off.size() < 3 || off.size() > 18 || off[0] != '0' ||
	    (off[1] != 'x' && off[1] != 'X'))
		return std::nullopt;
	uint64_t v = 0;
	for (char c : off.substr(2)) {
		int d = hex_digit(c);
		if (d < 0)
			return std::nullopt;
		v = (v << 4) | uint64_t(d);
	}
	return FederatedAddress{*id, v};
}

} // namespace memfed
