// Module IDs and federated addresses.
//
// A ModuleId is a 48-bit EUI-48, written like a MAC address
// ("02:00:00:00:00:01"); generated IDs are locally administered (bit 1 of the
// first octet set, bit 0 clear). A FederatedAddress (FA) is a module ID plus a
// byte offset in that module's pool. Its one text form, used everywhere, is
// "<module id>/0x<hex offset>", e.g. "02:00:00:00:00:01/0x200000".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace memfed {

constexpr uint64_t kModuleIdMask = (uint64_t{1} << 48) - 1;

struct ModuleId {
	uint64_t value = 0; // low 48 bits; 0 means "none"

	bool valid() const { return value != 0 && (value & ~kModuleIdMask) == 0; }
	std::string to_string() const;
	static std::optional<ModuleId> parse(std::string_view text);
	// A fresh locally administered unicast ID from getrandom().
	static ModuleId random();

	friend bool operator==(ModuleId a, ModuleId b) { return a.value == b.value; }
	friend bool operator<(ModuleId a, ModuleId b) { return a.value < b.value; }
};

struct FederatedAddress {
	ModuleId module;
	uint64_t offset = 0;

	std::string to_string() const;
	static std::optional<FederatedAddress> parse(std::string_view text);
};

} // namespace memfed

template <> struct std::hash<memfed::ModuleId> {
	size_t operator()(memfed::ModuleId id) const noexcept { return std::hash<uint64_t>()(id.value); }
};
