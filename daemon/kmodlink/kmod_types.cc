#include "daemon/kmodlink/kmod_types.h"

namespace memfed::kmod
{

const char *module_state_name(ModuleState s)
{
	switch (s) {
	case ModuleState::kUnknown:
		return "unknown";
	case ModuleState::kUp:
		return "up";
	case ModuleState::kDegraded:
		return "degraded";
	case ModuleState::kDown:
		return "down";
	}
	return "invalid";
}

std::optional<ModuleState> parse_module_state(const std::string &name)
{
	for (uint32_t v = 0; v <= 3; v++) {
		auto s = static_cast<ModuleState>(v);
		if (name == module_state_name(s))
			return s;
	}
	return std::nullopt;
}

const char *traffic_class_name(uint32_t tclass)
{
	switch (tclass) {
	case 0:
		return "fault";
	case 1:
		return "control";
	case 2:
		return "bulk";
	}
	return "invalid";
}

const char *event_kind_name(Event::Kind k)
{
	switch (k) {
	case Event::Kind::kModuleSet:
		return "module-set";
	case Event::Kind::kModuleDel:
		return "module-del";
	case Event::Kind::kRouteSet:
		return "route-set";
	case Event::Kind::kRouteDel:
		return "route-del";
	case Event::Kind::kWindowSet:
		return "window-set";
	case Event::Kind::kWindowDel:
		return "window-del";
	case Event::Kind::kOverrun:
		return "overrun";
	}
	return "invalid";
}

} // namespace memfed::kmod
