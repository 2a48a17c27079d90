// Encoding and decoding of memfed.ko's netlink attribute trees.
//
// Internal to memfed_kmodlink: turns the plain structs of kmod_types.h into
// the nests that kmod/uapi/memfed_netlink.h documents, and parses replies and
// events back, checking that every attribute the kmod always sends is there
// and has the right length. Stateless; safe from any thread.
#pragma once

#include <linux/netlink.h>
#include <netlink/msg.h>

#include "daemon/common/status.h"
#include "daemon/kmodlink/kmod_types.h"

namespace memfed::kmod::codec
{

// The newest family version this codec speaks (MEMFED_GENL_VERSION).
constexpr int kCodecVersion = 2;

// Append one nest to msg. The *_key forms carry only the key attributes.
// `version` is the kmod family's: attributes newer than it are left out
// (memfed_netlink.h, "Versions"). Return false when msg is full.
bool put_module(nl_msg *msg, const ModuleEntry &m, int version = kCodecVersion);
bool put_module_key(nl_msg *msg, ModuleId id);
bool put_route(nl_msg *msg, const RouteEntry &r, int version = kCodecVersion);
bool put_route_key(nl_msg *msg, ModuleId dest, uint32_t tclass);
bool put_window(nl_msg *msg, const WindowEntry &w);
bool put_window_key(nl_msg *msg, uint32_t index);

// Parse one generic-netlink message from the kmod (reply or event).
Result<Layout> parse_layout(nlmsghdr *hdr);
Result<ModuleEntry> parse_module(nlmsghdr *hdr);
Result<RouteEntry> parse_route(nlmsghdr *hdr);
Result<WindowEntry> parse_window(nlmsghdr *hdr);
// An event: the command names the kind, the nest the entry.
Result<Event> parse_event(nlmsghdr *hdr);

} // namespace memfed::kmod::codec
