#include "daemon/common/proc_stat.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace memfed
{

std::vector<std::string> proc_stat_fields(const std::string &path)
{
	std::vector<std::string> out;
	FILE *f = std::fopen(path.c_str(), "re");
	if (f == nullptr)
		return out;
	// A stat line is a few hundred bytes; a name is at most 64.
	char buf[1024];
	size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
	std::fclose(f);
	buf[n] = 0;
	const char *p = std::strrchr(buf, ')');
	if (p == nullptr)
		return out;
	for (p++; *p != 0 && *p != '\n';) {
		while (*p == ' ')
			p++;
		const char *e = p;
		while (*e != 0 && *e != ' ' && *e != '\n')
			e++;
		if (e > p)
			out.emplace_back(p, size_t(e - p));
		p = e;
	}
	return out;
}

unsigned long long proc_stat_number(const std::vector<std::string> &fields, int field)
{
	size_t i = size_t(field - 3);
	if (field < 3 || i >= fields.size())
		return 0;
	return std::strtoull(fields[i].c_str(), nullptr, 10);
}

} // namespace memfed
