/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * memfed_netlink.h: the whole kernel API of memfed.ko.
 *
 * memfed.ko is the node's shared, inspectable home of the federation state:
 * the module table (which memory modules exist and how to reach each), the
 * route table (how to forward to each module), the window table (which
 * extended virtual addresses map to which federated address ranges) and the
 * extended address layout. memfedd mirrors its tables here; a restarted
 * memfedd reads them back. The kmod is not on the data path.
 *
 * Kernel and user space include this same file.
 *
 * Addresses
 * ---------
 *
 * A module ID is a 48-bit EUI-48, carried in the low 48 bits of a u64; 0 is
 * not a valid ID. A federated address (FA) is (module ID, byte offset in that
 * module's pool). An extended virtual address (EVA) is a 64-bit pointer whose
 * bits above va_bits form the extension:
 *
 *   EVA = (extension index << va_bits) | offset inside the window
 *
 * va_bits is the number of user-space virtual address bits of the running
 * kernel and CPU, fls64(TASK_SIZE_MAX): 47 with 4-level paging on x86-64, 56
 * with 5-level paging. The extension width is 64 - va_bits. An extension index
 * of 0 is an ordinary local pointer; any other index names a window. Window
 * EVA `index << va_bits + x` is FA (module, offset + x) for x < length.
 *
 * Generic netlink family
 * ----------------------
 *
 * Family name MEMFED_GENL_NAME ("memfed"), version MEMFED_GENL_VERSION. The
 * family exists in the initial network namespace only: the tables describe
 * the node, not a namespace. Commands that change state (MEMFED_CMD_SET_* and
 * MEMFED_CMD_DEL_*) need CAP_NET_ADMIN and fail with EPERM without it; GET
 * commands and dumps need no privilege. Every request is validated strictly
 * against the attribute policy: unknown attributes, wrong lengths, values out
 * of range and read-only attributes are refused with EINVAL (ERANGE for
 * numbers out of a policy range) and an extended-ACK message naming the
 * attribute. Each GET reply and dump message carries exactly one entry.
 *
 * MEMFED_CMD_GET_LAYOUT: doit, no attributes. Replies with:
 *
 *    MEMFED_A_LAYOUT: NLA_NESTED
 *        MEMFED_LAYOUT_A_VA_BITS: NLA_U32, user-space virtual address bits
 *        MEMFED_LAYOUT_A_EXT_BITS: NLA_U32, 64 - va_bits
 *        MEMFED_LAYOUT_A_INDEX_MAX: NLA_U32, largest window index,
 *                                   min(2^ext_bits - 1, U32_MAX)
 *        MEMFED_LAYOUT_A_MODULES_MAX: NLA_U32, MEMFED_MODULES_MAX
 *        MEMFED_LAYOUT_A_ROUTES_MAX: NLA_U32, MEMFED_ROUTES_MAX
 *        MEMFED_LAYOUT_A_WINDOWS_MAX: NLA_U32, MEMFED_WINDOWS_MAX
 *
 * MEMFED_CMD_SET_MODULE: creates or replaces one module entry; attributes not
 * given take their default. ENOSPC when the table holds MEMFED_MODULES_MAX
 * entries. Needs CAP_NET_ADMIN.
 *
 *    MEMFED_A_MODULE: NLA_NESTED
 *        MEMFED_MODULE_A_ID: NLA_U64, required, module ID (48 bits, not 0)
 *        MEMFED_MODULE_A_STATE: NLA_U32, optional, enum memfed_module_state,
 *                               default MEMFED_MODULE_STATE_UNKNOWN
 *        MEMFED_MODULE_A_CAPACITY: NLA_U64, optional, pool size in bytes,
 *                                  default 0 (unknown)
 *        MEMFED_MODULE_A_ENDPOINT: NLA_NUL_STRING, optional, how to reach
 *                                  the module, e.g. "tcp:10.0.0.2:7070" (the
 *                                  daemon's text, at most
 *                                  MEMFED_ENDPOINT_MAX - 1 bytes), default ""
 *        MEMFED_MODULE_A_FLAGS: NLA_U32, optional, MEMFED_MODULE_F_* bits,
 *                               default 0
 *        MEMFED_MODULE_A_REASON: NLA_NUL_STRING, optional (version 2), why
 *                                the module is down or degraded, e.g.
 *                                "route withdrawn", at most
 *                                MEMFED_REASON_MAX - 1 bytes, default ""
 *        MEMFED_MODULE_A_PAD: padding for 64-bit attributes, ignore
 *
 * MEMFED_CMD_GET_MODULE: doit with MEMFED_A_MODULE holding
 * MEMFED_MODULE_A_ID replies with that entry (ENOENT if absent) in the
 * MEMFED_A_MODULE tree above; as a dump (NLM_F_DUMP, no attributes) sends
 * every entry in ID order.
 *
 * MEMFED_CMD_DEL_MODULE: MEMFED_A_MODULE holding MEMFED_MODULE_A_ID removes
 * that entry, ENOENT if absent. Routes and windows that name the module stay:
 * the tables are independent. Needs CAP_NET_ADMIN.
 *
 * MEMFED_CMD_SET_ROUTE: creates or replaces the route to one destination in
 * one traffic class and restarts its age. ENOSPC when the table holds
 * MEMFED_ROUTES_MAX entries. Needs CAP_NET_ADMIN.
 *
 *    MEMFED_A_ROUTE: NLA_NESTED
 *        MEMFED_ROUTE_A_DEST: NLA_U64, required, destination module ID
 *        MEMFED_ROUTE_A_CLASS: NLA_U32, optional, enum memfed_traffic_class,
 *                              default MEMFED_CLASS_FAULT; part of the key
 *        MEMFED_ROUTE_A_NEXT_HOP: NLA_U64, required, ID of the neighbour to
 *                                 forward to (== DEST for a direct route,
 *                                 and when the neighbour runs no module of
 *                                 its own: VIA names it then)
 *        MEMFED_ROUTE_A_METRIC: NLA_U32, optional, cost, lower is better,
 *                               default 0
 *        MEMFED_ROUTE_A_HOPS: NLA_U32, optional, hop count to DEST, 1 to
 *                             MEMFED_HOPS_MAX, default 1
 *        MEMFED_ROUTE_A_AGE_MS: NLA_U64, read-only (refused in requests),
 *                               milliseconds since the last SET of this route
 *        MEMFED_ROUTE_A_PAD: padding for 64-bit attributes, ignore
 *        MEMFED_ROUTE_A_VIA: NLA_BINARY, exactly 16 bytes, optional
 *                            (version 2), the next hop's IPv6 address (the
 *                            mesh's link-local address of the neighbour),
 *                            default all zeroes (not known)
 *        MEMFED_ROUTE_A_DEV: NLA_NUL_STRING, optional (version 2), the
 *                            interface to the next hop, at most IFNAMSIZ - 1
 *                            (15) bytes, default ""
 *
 * MEMFED_CMD_GET_ROUTE: doit with MEMFED_A_ROUTE holding DEST and optionally
 * CLASS replies with that route (ENOENT if absent); as a dump sends every
 * route, ordered by destination, then class.
 *
 * MEMFED_CMD_DEL_ROUTE: MEMFED_A_ROUTE holding DEST and optionally CLASS
 * removes that route, ENOENT if absent. Needs CAP_NET_ADMIN.
 *
 * MEMFED_CMD_SET_WINDOW: creates or replaces one window. OFFSET, LENGTH and
 * ADDR are multiples of MEMFED_WINDOW_ALIGN; LENGTH is at most 2^va_bits and
 * OFFSET + LENGTH does not wrap. PID and ADDR are given together (the window
 * is mapped in that process at that address) or not at all (not mapped).
 * ENOSPC when the table holds MEMFED_WINDOWS_MAX entries. Needs
 * CAP_NET_ADMIN.
 *
 *    MEMFED_A_WINDOW: NLA_NESTED
 *        MEMFED_WINDOW_A_INDEX: NLA_U32, required, extension index, 1 to
 *                               the layout's INDEX_MAX
 *        MEMFED_WINDOW_A_MODULE: NLA_U64, required, module holding the range
 *        MEMFED_WINDOW_A_OFFSET: NLA_U64, required, FA offset of the range
 *        MEMFED_WINDOW_A_LENGTH: NLA_U64, required, bytes, not 0
 *        MEMFED_WINDOW_A_PID: NLA_U32, optional, process that maps it
 *        MEMFED_WINDOW_A_ADDR: NLA_U64, optional, local address there
 *        MEMFED_WINDOW_A_EVA: NLA_U64, read-only (refused in requests),
 *                             first EVA of the window, INDEX << va_bits
 *        MEMFED_WINDOW_A_PAD: padding for 64-bit attributes, ignore
 *
 * MEMFED_CMD_GET_WINDOW: doit with MEMFED_A_WINDOW holding INDEX replies with
 * that window (ENOENT if absent); as a dump sends every window in index order.
 *
 * MEMFED_CMD_DEL_WINDOW: MEMFED_A_WINDOW holding INDEX removes that window,
 * ENOENT if absent. Needs CAP_NET_ADMIN.
 *
 * Versions
 * --------
 *
 * The family's version (CTRL_ATTR_VERSION of the controller's reply) says
 * which attributes a kmod knows. Version 2 added MEMFED_MODULE_A_REASON,
 * MEMFED_ROUTE_A_VIA and MEMFED_ROUTE_A_DEV, numbered after the version 1
 * attributes. A version 1 kmod refuses them (EINVAL, unknown attribute), so
 * a client sends them only to a kmod of version 2 or later. Replies always
 * carry every attribute the kmod knows; a client built for version 1 skips
 * the ones after its own last attribute.
 *
 * Change events
 * -------------
 *
 * The multicast group MEMFED_MCGRP_EVENTS ("events") announces every change,
 * in the order the changes happened; joining it needs no privilege. An event
 * is a message with command MEMFED_CMD_SET_MODULE, _SET_ROUTE or _SET_WINDOW
 * (entry created or replaced; carries the new entry) or MEMFED_CMD_DEL_MODULE,
 * _DEL_ROUTE or _DEL_WINDOW (entry removed; carries the entry as it was), with
 * the same attribute tree as a GET reply. When memfed.ko is unloaded the
 * family and its group disappear without further events.
 *
 * sysfs and debugfs
 * -----------------
 *
 * The same state, one value per file, under /sys/kernel/memfed/:
 *
 *    layout/{va_bits,ext_bits,index_max}     decimal
 *    limits/{modules_max,routes_max,windows_max}
 *    counters/modules, routes, windows       entries in each table
 *    counters/objects                        live kernel objects (entries);
 *                                            0 after every table is emptied
 *    counters/changes                        SET and DEL requests applied
 *    counters/rejected                       requests memfed's handlers
 *                                            refused (the netlink core's
 *                                            policy refusals not counted)
 *    modules/<id>/{state,capacity,endpoint,flags,reason}
 *        <id> in text form "02:00:00:00:00:01"; state as its name ("up"),
 *        capacity in decimal bytes, flags as "0x%x", reason as given
 *    windows/<index>/{module,offset,length,fa,eva,pid,addr,mapped}
 *        <index> decimal; module as its ID text, offset/length/eva/addr as
 *        "0x%llx", fa as "<id>/0x<offset>", pid and mapped (0/1) decimal,
 *        pid and addr 0 when not mapped
 *
 * The route table can hold MEMFED_ROUTES_MAX entries, too many for one
 * directory per route: it is dumped through netlink, and as a text table,
 * one route per line, in /sys/kernel/debug/memfed/routes (when debugfs is
 * mounted):
 *
 *    <dest id> <class name> <next hop id> <metric> <hops> <age ms> <via> <dev>
 *
 * via is the next hop's IPv6 address in compressed form ("::" when not
 * known) and dev the interface ("-" when not known).
 */
#ifndef _UAPI_MEMFED_NETLINK_H
#define _UAPI_MEMFED_NETLINK_H

#include <linux/types.h>

#define MEMFED_GENL_NAME "memfed"
#define MEMFED_GENL_VERSION 2
#define MEMFED_MCGRP_EVENTS "events"

#define MEMFED_MODULES_MAX 1024
#define MEMFED_ROUTES_MAX 4096
#define MEMFED_WINDOWS_MAX 1024
#define MEMFED_ENDPOINT_MAX 128
#define MEMFED_REASON_MAX 128
#define MEMFED_VIA_LEN 16
#define MEMFED_HOPS_MAX 255
#define MEMFED_WINDOW_ALIGN 4096
#define MEMFED_MODULE_ID_MASK ((1ULL << 48) - 1)

enum memfed_cmd {
	MEMFED_CMD_UNSPEC,
	MEMFED_CMD_GET_LAYOUT,
	MEMFED_CMD_GET_MODULE,
	MEMFED_CMD_SET_MODULE,
	MEMFED_CMD_DEL_MODULE,
	MEMFED_CMD_GET_ROUTE,
	MEMFED_CMD_SET_ROUTE,
	MEMFED_CMD_DEL_ROUTE,
	MEMFED_CMD_GET_WINDOW,
	MEMFED_CMD_SET_WINDOW,
	MEMFED_CMD_DEL_WINDOW,
	__MEMFED_CMD_LAST
};

#define MEMFED_CMD_MAX (__MEMFED_CMD_LAST - 1)

enum memfed_attr {
	MEMFED_A_UNSPEC,
	MEMFED_A_LAYOUT,
	MEMFED_A_MODULE,
	MEMFED_A_ROUTE,
	MEMFED_A_WINDOW,
	__MEMFED_A_LAST
};

#define MEMFED_A_MAX (__MEMFED_A_LAST - 1)

enum memfed_layout_attr {
	MEMFED_LAYOUT_A_UNSPEC,
	MEMFED_LAYOUT_A_VA_BITS,
	MEMFED_LAYOUT_A_EXT_BITS,
	MEMFED_LAYOUT_A_INDEX_MAX,
	MEMFED_LAYOUT_A_MODULES_MAX,
	MEMFED_LAYOUT_A_ROUTES_MAX,
	MEMFED_LAYOUT_A_WINDOWS_MAX,
	__MEMFED_LAYOUT_A_LAST
};

#define MEMFED_LAYOUT_A_MAX (__MEMFED_LAYOUT_A_LAST - 1)

enum memfed_module_state {
	MEMFED_MODULE_STATE_UNKNOWN,	/* "unknown": not heard from yet */
	MEMFED_MODULE_STATE_UP,		/* "up": reachable, serving */
	MEMFED_MODULE_STATE_DEGRADED,	/* "degraded": reachable, impaired */
	MEMFED_MODULE_STATE_DOWN,	/* "down": unreachable */
	__MEMFED_MODULE_STATE_LAST
};

#define MEMFED_MODULE_STATE_MAX (__MEMFED_MODULE_STATE_LAST - 1)

enum memfed_module_flags {
	MEMFED_MODULE_F_LOCAL = 1U << 0,	/* exported by this node */
	MEMFED_MODULE_F_RELAY = 1U << 1,	/* forwards for others */
	MEMFED_MODULE_F_RDMA = 1U << 2,		/* pool reachable over RDMA */
	MEMFED_MODULE_F_ALL = (1U << 3) - 1
};

enum memfed_module_attr {
	MEMFED_MODULE_A_UNSPEC,
	MEMFED_MODULE_A_ID,
	MEMFED_MODULE_A_STATE,
	MEMFED_MODULE_A_CAPACITY,
	MEMFED_MODULE_A_ENDPOINT,
	MEMFED_MODULE_A_FLAGS,
	MEMFED_MODULE_A_PAD,
	MEMFED_MODULE_A_REASON, /* version 2 */
	__MEMFED_MODULE_A_LAST
};

#define MEMFED_MODULE_A_MAX (__MEMFED_MODULE_A_LAST - 1)

/* Same values as the wire protocol's traffic classes. */
enum memfed_traffic_class {
	MEMFED_CLASS_FAULT,	/* "fault": demand faults */
	MEMFED_CLASS_CONTROL,	/* "control": management traffic */
	MEMFED_CLASS_BULK,	/* "bulk": prefetch, write-back, replication */
	__MEMFED_CLASS_LAST
};

#define MEMFED_CLASS_MAX (__MEMFED_CLASS_LAST - 1)

enum memfed_route_attr {
	MEMFED_ROUTE_A_UNSPEC,
	MEMFED_ROUTE_A_DEST,
	MEMFED_ROUTE_A_CLASS,
	MEMFED_ROUTE_A_NEXT_HOP,
	MEMFED_ROUTE_A_METRIC,
	MEMFED_ROUTE_A_HOPS,
	MEMFED_ROUTE_A_AGE_MS,
	MEMFED_ROUTE_A_PAD,
	MEMFED_ROUTE_A_VIA, /* version 2 */
	MEMFED_ROUTE_A_DEV, /* version 2 */
	__MEMFED_ROUTE_A_LAST
};

#define MEMFED_ROUTE_A_MAX (__MEMFED_ROUTE_A_LAST - 1)

enum memfed_window_attr {
	MEMFED_WINDOW_A_UNSPEC,
	MEMFED_WINDOW_A_INDEX,
	MEMFED_WINDOW_A_MODULE,
	MEMFED_WINDOW_A_OFFSET,
	MEMFED_WINDOW_A_LENGTH,
	MEMFED_WINDOW_A_PID,
	MEMFED_WINDOW_A_ADDR,
	MEMFED_WINDOW_A_EVA,
	MEMFED_WINDOW_A_PAD,
	__MEMFED_WINDOW_A_LAST
};

#define MEMFED_WINDOW_A_MAX (__MEMFED_WINDOW_A_LAST - 1)

#endif /* _UAPI_MEMFED_NETLINK_H */
