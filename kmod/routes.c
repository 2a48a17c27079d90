// SPDX-License-Identifier: GPL-2.0
/*
 * The route table, keyed by (destination module, traffic class).
 *
 * The key is dest << 8 | class, so a walk visits routes by destination, then
 * class. Routes have no sysfs directories (there can be MEMFED_ROUTES_MAX of
 * them): netlink dumps them and debugfs.c prints them as a table.
 */
#include <linux/jiffies.h>
#include <linux/slab.h>
#include <linux/xarray.h>

#include "memfed.h"

struct memfed_route {
	struct memfed_route_info info;
	u64 updated; /* jiffies64 of the last SET */
};

static DEFINE_XARRAY(routes);

static const char *const class_names[] = {
	[MEMFED_CLASS_FAULT] = "fault",
	[MEMFED_CLASS_CONTROL] = "control",
	[MEMFED_CLASS_BULK] = "bulk",
};

const char *memfed_class_name(u32 class)
{
	return class < ARRAY_SIZE(class_names) ? class_names[class] : "invalid";
}

static unsigned long key(u64 dest, u32 class)
{
	return (unsigned long)(dest << 8 | class);
}

static void copy_out(const struct memfed_route *r,
		     struct memfed_route_info *out)
{
	*out = r->info;
	out->age_ms = jiffies64_to_msecs(get_jiffies_64() - r->updated);
}

int memfed_route_set(const struct memfed_route_info *info)
{
	unsigned long k = key(info->dest, info->class);
	struct memfed_route *r;
	int err;

	lockdep_assert_held(&memfed_lock);
	r = xa_load(&routes, k);
	if (r) {
		r->info = *info;
		r->updated = get_jiffies_64();
		return 0;
	}
	if (atomic64_read(&memfed_counters.routes) >= MEMFED_ROUTES_MAX)
		return -ENOSPC;
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->info = *info;
	r->updated = get_jiffies_64();
	err = xa_insert(&routes, k, r, GFP_KERNEL);
	if (err) {
		kfree(r);
		return err;
	}
	atomic64_inc(&memfed_counters.objects);
	atomic64_inc(&memfed_counters.routes);
	return 0;
}

static void drop_entry(unsigned long k, struct memfed_route *r)
{
	xa_erase(&routes, k);
	kfree(r);
	atomic64_dec(&memfed_counters.routes);
	atomic64_dec(&memfed_counters.objects);
}

int memfed_route_del(u64 dest, u32 class, struct memfed_route_info *old)
{
	unsigned long k = key(dest, class);
	struct memfed_route *r;

	lockdep_assert_held(&memfed_lock);
	r = xa_load(&routes, k);
	if (!r)
		return -ENOENT;
	copy_out(r, old);
	drop_entry(k, r);
	return 0;
}

int memfed_route_get(u64 dest, u32 class, struct memfed_route_info *out)
{
	struct memfed_route *r;

	lockdep_assert_held(&memfed_lock);
	r = xa_load(&routes, key(dest, class));
	if (!r)
		return -ENOENT;
	copy_out(r, out);
	return 0;
}

int memfed_route_next(unsigned long *pos, struct memfed_route_info *out)
{
	struct memfed_route *r;

	lockdep_assert_held(&memfed_lock);
	r = xa_find(&routes, pos, ULONG_MAX, XA_PRESENT);
	if (!r)
		return -ENOENT;
	copy_out(r, out);
	return 0;
}

void memfed_routes_flush(void)
{
	struct memfed_route *r;
	unsigned long k;

	lockdep_assert_held(&memfed_lock);
	xa_for_each(&routes, k, r)
		drop_entry(k, r);
}
