// Plain structs for the tables memfed.ko holds, as user space sees them.
//
// They mirror the attribute trees of kmod/uapi/memfed_netlink.h one to one:
// a ModuleEntry is one MEMFED_A_MODULE nest, and so on. Layout also does the
// extended-virtual-address arithmetic (EVA = index << va_bits | offset).
// Values only; no thread-safety concerns.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <string>

#include "daemon/common/ids.h"

namespace memfed::kmod
{

// Extended address layout of the node (MEMFED_CMD_GET_LAYOUT).
struct Layout {
	uint32_t va_bits = 0;   // user-space virtual address bits (47, 56)
	uint32_t ext_bits = 0;  // 64 - va_bits
	uint32_t index_max = 0; // largest window index
	uint32_t modules_max = 0;
	uint32_t routes_max = 0;
	uint32_t windows_max = 0;

	// Extension index of an EVA (0: an ordinary local pointer).
	uint64_t index_of(uint64_t eva) const { return va_bits >= 64 ? 0 : eva >> va_bits; }
	// Offset of an EVA inside its window.
	uint64_t offset_of(uint64_t eva) const
	{
		return va_bits >= 64 ? eva : eva & ((uint64_t{1} << va_bits) - 1);
	}
	// First EVA of window `index`.
	uint64_t eva_of(uint32_t index) const
	{
		return va_bits >= 64 ? 0 : uint64_t{index} << va_bits;
	}
};

enum class ModuleState : uint32_t { kUnknown = 0, kUp = 1, kDegraded = 2, kDown = 3 };
// "unknown", "up", "degraded", "down" (the names sysfs shows).
const char *module_state_name(ModuleState s);
std::optional<ModuleState> parse_module_state(const std::string &name);

// MEMFED_MODULE_F_* bits.
constexpr uint32_t kModuleLocal = 1u << 0;
constexpr uint32_t kModuleRelay = 1u << 1;
constexpr uint32_t kModuleRdma = 1u << 2;

struct ModuleEntry {
	ModuleId id;
	ModuleState state = ModuleState::kUnknown;
	uint64_t capacity = 0; // pool bytes, 0 if unknown
	std::string endpoint;  // how to reach it, the daemon's text; < 128 bytes
	uint32_t flags = 0;    // kModule* bits
	std::string reason;    // why it is down or degraded; < 128 bytes (version 2)
};

// Traffic class of a route; same values as wire::TrafficClass.
// "fault", "control", "bulk".
const char *traffic_class_name(uint32_t tclass);

struct RouteEntry {
	ModuleId dest;
	uint32_t tclass = 0; // part of the key with dest
	ModuleId next_hop;
	uint32_t metric = 0;
	uint32_t hops = 1;
	uint64_t age_ms = 0; // read back only: time since the last set
	in6_addr via{};      // next hop's address, all zeroes if not known (version 2)
	std::string dev;     // interface to the next hop, < 16 bytes (version 2)
};

struct WindowEntry {
	uint32_t index = 0;  // extension index, 1..Layout::index_max
	FederatedAddress fa; // start of the range
	uint64_t length = 0; // bytes, multiple of 4096
	uint32_t pid = 0;    // 0: not mapped
	uint64_t addr = 0;   // local address in pid when mapped
	uint64_t eva = 0;    // read back only: index << va_bits

	bool mapped() const { return pid != 0; }
};

// One change announced by the kmod.
struct Event {
	enum class Kind {
		kModuleSet,
		kModuleDel,
		kRouteSet,
		kRouteDel,
		kWindowSet,
		kWindowDel,
		kOverrun, // the socket overflowed: events were lost, dump again
	};
	Kind kind = Kind::kOverrun;
	ModuleEntry module; // for kModule*
	RouteEntry route;   // for kRoute*
	WindowEntry window; // for kWindow*
};

// "module-set", "module-del", ..., "overrun".
const char *event_kind_name(Event::Kind k);

} // namespace memfed::kmod
