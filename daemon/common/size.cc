#include "daemon/common/size.h"

#include <cstdio>

namespace memfed {

std::optional<uint64_t> parse_size(std::string_view t)
{
	size_t i = 0;
	uint64_t v = 0;
	while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
		uint64_t d = uint64_t(t[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return std::nullopt;
		v = v * 10 + d;
		i++;
	}
	if (i == 0)
		return std::nullopt;
	std::string_view suffix = t.substr(i);
	int shift = 0;
	if (!suffix.empty()) {
		switch (suffix[0]) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		case 't': case 'T': shift = 40; break;
		case 'b': case 'B': break;
		default: return std::nullopt;
		}
		std::string_view rest = suffix.substr(shift ? 1 : 0);
		if (!(rest.empty() || rest == "B" || rest == "iB" || (rest == "b" && shift == 0)))
			return std::nullopt;
		if (shift == 0 && suffix != "B" && suffix != "b")
			return std::nullopt;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return std::nullopt;
	return v << shift;
}

std::string format_size(uint64_t bytes)
{
	static const char units[] = {'T', 'G', 'M', 'K'};
	for (int i = 0; i < 4; i++) {
		int shift = 40 - 10 * i;
		uint64_t unit = uint64_t{1} << shift;
		if (bytes >= unit && bytes % unit == 0)
			return std::to_string(bytes >> shift) + units[i];
	}
	return std::to_string(bytes);
}

std::string human_size(uint64_t bytes)
{
	static const char units[] = {'K', 'M', 'G', 'T'};
	if (bytes < 1024)
		return std::to_string(bytes);
	double v = double(bytes);
	int u = -1;
	while (v >= 1024 && u < 3) {
		v /= 1024;
		u++;
	}
	char buf[32];
	if (v == double(uint64_t(v)))
		std::snprintf(buf, sizeof(buf), "%llu%c", (unsigned long long)v, units[u]);
	else
		std::snprintf(buf, sizeof(buf), "%.1f%c", v, units[u]);
	return buf;
}

} // namespace memfed
