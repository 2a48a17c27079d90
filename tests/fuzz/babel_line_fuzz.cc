// libFuzzer target: untrusted bytes from babeld's local interface through
// the line parser and into a route table. Whatever parses must leave the
// table consistent: every module it lists has an address in the prefix that
// maps back to that module.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "daemon/mesh/babel_event.h"
#include "daemon/mesh/route_table.h"

using namespace memfed::mesh;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static RouteTable table(default_mesh_prefix());
	std::string_view text(reinterpret_cast<const char *>(data), size);
	std::vector<RouteChange> changes;
	size_t start = 0;
	while (start <= text.size()) {
		size_t nl = text.find('\n', start);
		if (nl == std::string_view::npos)
			nl = text.size();
		auto ev = parse_babel_line(text.substr(start, nl - start));
		if (ev.is_ok())
			table.apply(*ev, 0, &changes);
		start = nl + 1;
	}
	for (const auto &r : table.modules()) {
		auto id = module_of_address(table.prefix(), r.address);
		if (!id || !(*id == r.module))
			abort();
	}
	if (table.modules().size() > 4096)
		table.clear(&changes);
	return 0;
}
