// DSCP marks for memfed's traffic classes: each connection's packets carry
// the code point of the class it serves, so a queueing discipline on every
// hop of the mesh (an htb with u32 filters on the IPv6 traffic-class byte;
// ../shared/notes/mesh.md) can put demand faults ahead of bulk work.
//
//   fault   EF   (46)  demand faults: latency first
//   control CS2  (16)  region management, stats, hello (OAM)
//   bulk    CS1  (8)   prefetch, write-back, replication (lower effort)
//
// The connecting side marks its socket as soon as it is connected (SyncClient,
// TcpChannel through it); the module marks its side of the connection with
// the class the peer's HELLO header names (TcpServer), so replies carry it
// too. A HELLO's `tclass` is thus the class of the connection it opens.
// A pager's channel to a module is a ClassChannel (class_channel.h): one
// connection for faults (EF), one for bulk work (CS1); the control path
// (SyncClient) has its own (CS2).
#pragma once

#include <cstdint>

#include "daemon/common/status.h"
#include "daemon/wire/protocol.h"

namespace memfed
{

constexpr uint8_t dscp_of(wire::TrafficClass tc)
{
	switch (tc) {
	case wire::TrafficClass::kFault:
		return 46;
	case wire::TrafficClass::kControl:
		return 16;
	case wire::TrafficClass::kBulk:
		return 8;
	}
	return 0;
}

// Marks `fd`'s outgoing packets with `tc`'s DSCP (IPV6_TCLASS on an IPv6
// socket, IP_TOS on IPv4; both on an IPv6 socket, for v4-mapped peers).
// Errors name the class and the errno; callers log and go on unmarked.
Status mark_socket(int fd, wire::TrafficClass tc);

} // namespace memfed
