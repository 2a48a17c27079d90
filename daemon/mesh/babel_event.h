// BabelEvent: one line of babeld's local interface, parsed and validated.
//
// babeld (RFC 8966's reference implementation) answers on its local socket
// (`-G PATH`) with a header ("BABEL 1.0", "version ...", "host ...",
// "my-id ...", "ok") and then, after "dump" or "monitor", one line per
// object and change:
//
//   add route 5629a3c7e2b0 prefix fd6d:6564::ff:fe00:1/128 from ::/0
//       installed yes id 02:00:00:ff:fe:00:00:01 metric 192 refmetric 96
//       via fe80::a4b3:1ff:fe22:3344 if v12
//   change neighbour 5629a3c7f010 address fe80::... if v12 reach ffff
//       ureach 0000 rxcost 96 txcost 96 rtt 0.120 rttcost 0 cost 96
//   flush interface v12
//
// (each on one line). The words after the object's ID are key/value pairs;
// keys this parser does not know are skipped, so a newer babeld that adds a
// field still parses. Everything memfed uses is checked: prefixes and
// addresses must parse, metrics are 0..65535 (65535 is babel's infinity),
// interface names fit IFNAMSIZ. A line that fails is an error naming the
// line; the caller logs it and ignores the line, nothing of it is applied.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/common/status.h"

namespace memfed::mesh
{

constexpr uint32_t kBabelInfinity = 0xffff;
// The longest line accepted from babeld; its own lines are under 512 bytes.
constexpr size_t kMaxBabelLine = 1024;

struct BabelEvent {
	enum class Action { kAdd, kChange, kFlush };
	enum class Object {
		kRoute,
		kNeighbour,
		kInterface,
		kXroute,
		kOther, // a header or reply line ("ok", "version 1.12.1"): skipped
	};
	Action action = Action::kAdd;
	Object object = Object::kOther;
	std::string id; // babeld's own handle for the object ("5629a3c7e2b0"); interface name

	// route: destination (and its length), router id, metrics, next hop, interface.
	in6_addr prefix{};
	uint8_t prefix_len = 0;
	bool installed = false;
	std::string router_id;
	uint32_t metric = kBabelInfinity;
	uint32_t refmetric = kBabelInfinity;
	in6_addr via{};
	std::string ifname;

	// neighbour: address, interface (ifname), link cost; interface: up.
	in6_addr address{};
	uint32_t cost = kBabelInfinity;
	bool up = false;
};

// Parses one line (without its '\n').
Result<BabelEvent> parse_babel_line(std::string_view line);

} // namespace memfed::mesh
