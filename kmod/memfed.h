/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the parts of memfed.ko share.
 *
 * The module is the node's home of the federation tables. Files, one per
 * concept:
 *   main.c     module init and exit
 *   layout.c   extended virtual address layout (va_bits, extension width)
 *   modules.c  module table
 *   routes.c   route table
 *   windows.c  window table
 *   sysfs.c    /sys/kernel/memfed/
 *   debugfs.c  /sys/kernel/debug/memfed/routes
 *   netlink.c  generic-netlink family "memfed": validation, commands, events
 * The user-space API is uapi/memfed_netlink.h.
 *
 * Locking: memfed_lock serialises every change and every walk of the three
 * tables. sysfs show functions never take it (removing a sysfs directory
 * under memfed_lock waits for them); they read an entry under its own
 * spinlock, which writers also take while they update the entry.
 */
#ifndef MEMFED_H
#define MEMFED_H

#include <linux/atomic.h>
#include <linux/if.h>
#include <linux/kobject.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/types.h>

#include "uapi/memfed_netlink.h"

#ifndef CONFIG_64BIT
#error "memfed.ko needs a 64-bit kernel: table keys are 48- and 56-bit values"
#endif

/* "02:00:00:00:00:01" plus NUL. */
#define MEMFED_ID_TEXT 18

extern struct mutex memfed_lock;

struct memfed_counters {
	atomic64_t modules;
	atomic64_t routes;
	atomic64_t windows;
	atomic64_t objects;
	atomic64_t changes;
	atomic64_t rejected;
};

extern struct memfed_counters memfed_counters;

/* layout.c */
struct memfed_layout {
	u32 va_bits;
	u32 ext_bits;
	u32 index_max;
};

extern struct memfed_layout memfed_layout;
void memfed_layout_init(void);
void memfed_id_text(u64 id, char buf[MEMFED_ID_TEXT]);

/* modules.c */
struct memfed_module_info {
	u64 id;
	u64 capacity;
	u32 state;
	u32 flags;
	char endpoint[MEMFED_ENDPOINT_MAX];
	char reason[MEMFED_REASON_MAX];
};

struct memfed_module {
	spinlock_t lock; /* guards info against sysfs readers */
	struct memfed_module_info info;
	struct kobject kobj;
};

const char *memfed_module_state_name(u32 state);
/* All REQUIRE memfed_lock. */
int memfed_module_set(const struct memfed_module_info *info);
int memfed_module_del(u64 id, struct memfed_module_info *old);
int memfed_module_get(u64 id, struct memfed_module_info *out);
/* First entry with ID >= *pos: copies it, sets *pos to its ID. */
int memfed_module_next(unsigned long *pos, struct memfed_module_info *out);
void memfed_modules_flush(void);

/* routes.c */
struct memfed_route_info {
	u64 dest;
	u64 next_hop;
	u64 age_ms; /* output only */
	u32 class;
	u32 metric;
	u32 hops;
	u8 via[MEMFED_VIA_LEN]; /* IPv6 address, all zeroes if not known */
	char dev[IFNAMSIZ];
};

const char *memfed_class_name(u32 class);
/* All REQUIRE memfed_lock. */
int memfed_route_set(const struct memfed_route_info *info);
int memfed_route_del(u64 dest, u32 class, struct memfed_route_info *old);
int memfed_route_get(u64 dest, u32 class, struct memfed_route_info *out);
int memfed_route_next(unsigned long *pos, struct memfed_route_info *out);
void memfed_routes_flush(void);

/* windows.c */
struct memfed_window_info {
	u64 module;
	u64 offset;
	u64 length;
	u64 addr;
	u32 index;
	u32 pid;
};

struct memfed_window {
	spinlock_t lock; /* guards info against sysfs readers */
	struct memfed_window_info info;
	struct kobject kobj;
};

u64 memfed_window_eva(u32 index);
/* All REQUIRE memfed_lock. */
int memfed_window_set(const struct memfed_window_info *info);
int memfed_window_del(u32 index, struct memfed_window_info *old);
int memfed_window_get(u32 index, struct memfed_window_info *out);
int memfed_window_next(unsigned long *pos, struct memfed_window_info *out);
void memfed_windows_flush(void);

/* sysfs.c */
int memfed_sysfs_init(void);
void memfed_sysfs_exit(void);
/*
 * Publish an entry's directory. On failure the entry has been freed. After
 * success the entry is freed by the last kobject_put().
 */
int memfed_sysfs_add_module(struct memfed_module *m);
int memfed_sysfs_add_window(struct memfed_window *w);

/* debugfs.c */
void memfed_debugfs_init(void);
void memfed_debugfs_exit(void);

/* netlink.c */
int memfed_netlink_init(void);
void memfed_netlink_exit(void);

#endif /* MEMFED_H */
