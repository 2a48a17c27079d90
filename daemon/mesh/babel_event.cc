#include "daemon/mesh/babel_event.h"

#include <net/if.h>

#include <charconv>
#include <vector>

#include "daemon/mesh/module_address.h"

namespace memfed::mesh
{
namespace
{

std::vector<std::string_view> split_words(std::string_view line)
{
	std::vector<std::string_view> words;
	size_t i = 0;
	while (i < line.size()) {
		while (i < line.size() && line[i] == ' ')
			i++;
		size_t start = i;
		while (i < line.size() && line[i] != ' ')
			i++;
		if (i > start)
			words.push_back(line.substr(start, i - start));
	}
	return words;
}

Status bad(std::string_view line, const std::string &why)
{
	return Status(Code::kProtocol, "babeld sent a bad line (" + why + "): '" +
	                                       std::string(line.substr(0, 160)) + "'");
}

bool parse_u32(std::string_view s, uint32_t max, uint32_t *out, int base = 10)
{
	uint32_t v = 0;
	auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
	if (ec != std::errc() || p != s.data() + s.size() || v > max)
		return false;
	*out = v;
	return true;
}

// "fd6d:6564::ff:fe00:1/128" -> address and length.
bool parse_prefix(std::string_view s, in6_addr *addr, uint8_t *len)
{
	auto slash = s.find('/');
	if (slash == std::string_view::npos)
		return false;
	uint32_t l = 0;
	if (!parse_u32(s.substr(slash + 1), 128, &l))
		return false;
	auto a = parse_ipv6(s.substr(0, slash));
	if (!a)
		return false;
	*addr = *a;
	*len = uint8_t(l);
	return true;
}

bool valid_token(std::string_view s, size_t max)
{
	if (s.empty() || s.size() > max)
		return false;
	for (char c : s) {
		if (c <= ' ' || c > '~')
			return false;
	}
	return true;
}

} // namespace

Result<BabelEvent> parse_babel_line(std::string_view line)
{
	if (line.size() > kMaxBabelLine)
		return bad(line, "longer than " + std::to_string(kMaxBabelLine) + " bytes");
	for (char c : line) {
		if (c == '\0' || c == '\n')
			return bad(line, "control character");
	}
	auto w = split_words(line);
	BabelEvent ev;
	if (w.size() < 3)
		return ev; // header or reply: kOther
	if (w[0] == "add")
		ev.action = BabelEvent::Action::kAdd;
	else if (w[0] == "change")
		ev.action = BabelEvent::Action::kChange;
	else if (w[0] == "flush")
		ev.action = BabelEvent::Action::kFlush;
	else
		return ev;

	if (w[1] == "route")
		ev.object = BabelEvent::Object::kRoute;
	else if (w[1] == "neighbour")
		ev.object = BabelEvent::Object::kNeighbour;
	else if (w[1] == "interface")
		ev.object = BabelEvent::Object::kInterface;
	else if (w[1] == "xroute")
		ev.object = BabelEvent::Object::kXroute;
	else
		return ev; // an object kind this parser does not know: kOther
	if (!valid_token(w[2], 64))
		return bad(line, "object id");
	ev.id = std::string(w[2]);
	if (ev.object == BabelEvent::Object::kInterface && w[2].size() >= IFNAMSIZ)
		return bad(line, "interface name longer than " + std::to_string(IFNAMSIZ - 1));

	// A flush names only the object; its other fields may still be there.
	bool have_prefix = false, have_metric = false, have_via = false, have_if = false,
	     have_address = false;
	for (size_t i = 3; i + 1 < w.size(); i += 2) {
		std::string_view key = w[i], val = w[i + 1];
		if (key == "prefix") {
			if (!parse_prefix(val, &ev.prefix, &ev.prefix_len))
				return bad(line, "prefix");
			have_prefix = true;
		} else if (key == "installed") {
			if (val != "yes" && val != "no")
				return bad(line, "installed");
			ev.installed = val == "yes";
		} else if (key == "id") {
			if (!valid_token(val, 64))
				return bad(line, "router id");
			ev.router_id = std::string(val);
		} else if (key == "metric") {
			if (!parse_u32(val, kBabelInfinity, &ev.metric))
				return bad(line, "metric");
			have_metric = true;
		} else if (key == "refmetric") {
			if (!parse_u32(val, kBabelInfinity, &ev.refmetric))
				return bad(line, "refmetric");
		} else if (key == "via") {
			auto a = parse_ipv6(val);
			if (!a)
				return bad(line, "next hop");
			ev.via = *a;
			have_via = true;
		} else if (key == "if") {
			if (!valid_token(val, IFNAMSIZ - 1))
				return bad(line, "interface name");
			ev.ifname = std::string(val);
			have_if = true;
		} else if (key == "address") {
			auto a = parse_ipv6(val);
			if (!a)
				return bad(line, "neighbour address");
			ev.address = *a;
			have_address = true;
		} else if (key == "cost") {
			if (!parse_u32(val, kBabelInfinity, &ev.cost))
				return bad(line, "cost");
		} else if (key == "up") {
			if (val != "true" && val != "false")
				return bad(line, "up");
			ev.up = val == "true";
		}
		// Other keys (from, reach, rxcost, rtt, ipv6, ...) are not used.
	}
	if (ev.action == BabelEvent::Action::kFlush)
		return ev;
	if (ev.object == BabelEvent::Object::kRoute &&
	    !(have_prefix && have_metric && have_via && have_if))
		return bad(line, "a route needs prefix, metric, via and if");
	if (ev.object == BabelEvent::Object::kNeighbour && !(have_address && have_if))
		return bad(line, "a neighbour needs address and if");
	return ev;
}

} // namespace memfed::mesh
