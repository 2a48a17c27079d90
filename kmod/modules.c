// SPDX-License-Identifier: GPL-2.0
/*
 * The module table, keyed by 48-bit module ID.
 *
 * Each entry owns a kobject, /sys/kernel/memfed/modules/<id>/, whose release
 * frees it. Replacing an entry updates it in place, so its directory stays.
 */
#include <linux/slab.h>
#include <linux/xarray.h>

#include "memfed.h"

static DEFINE_XARRAY(modules);

static const char *const state_names[] = {
	[MEMFED_MODULE_STATE_UNKNOWN] = "unknown",
	[MEMFED_MODULE_STATE_UP] = "up",
	[MEMFED_MODULE_STATE_DEGRADED] = "degraded",
	[MEMFED_MODULE_STATE_DOWN] = "down",
};

const char *memfed_module_state_name(u32 state)
{
	return state < ARRAY_SIZE(state_names) ? state_names[state] : "invalid";
}

static void copy_out(struct memfed_module *m, struct memfed_module_info *out)
{
	spin_lock(&m->lock);
	*out = m->info;
	spin_unlock(&m->lock);
}

int memfed_module_set(const struct memfed_module_info *info)
{
	struct memfed_module *m;
	int err;

	lockdep_assert_held(&memfed_lock);
	m = xa_load(&modules, info->id);
	if (m) {
		spin_lock(&m->lock);
		m->info = *info;
		spin_unlock(&m->lock);
		return 0;
	}
	if (atomic64_read(&memfed_counters.modules) >= MEMFED_MODULES_MAX)
		return -ENOSPC;
	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	atomic64_inc(&memfed_counters.objects);
	spin_lock_init(&m->lock);
	m->info = *info;
	err = xa_insert(&modules, info->id, m, GFP_KERNEL);
	if (err) {
		kfree(m);
		atomic64_dec(&memfed_counters.objects);
		return err;
	}
	err = memfed_sysfs_add_module(m);
	if (err) {
		xa_erase(&modules, info->id);
		return err;
	}
	atomic64_inc(&memfed_counters.modules);
	return 0;
}

static void drop_entry(struct memfed_module *m)
{
	xa_erase(&modules, m->info.id);
	atomic64_dec(&memfed_counters.modules);
	kobject_put(&m->kobj);
}

int memfed_module_del(u64 id, struct memfed_module_info *old)
{
	struct memfed_module *m;

	lockdep_assert_held(&memfed_lock);
	m = xa_load(&modules, id);
	if (!m)
		return -ENOENT;
	copy_out(m, old);
	drop_entry(m);
	return 0;
}

int memfed_module_get(u64 id, struct memfed_module_info *out)
{
	struct memfed_module *m;

	lockdep_assert_held(&memfed_lock);
	m = xa_load(&modules, id);
	if (!m)
		return -ENOENT;
	copy_out(m, out);
	return 0;
}

int memfed_module_next(unsigned long *pos, struct memfed_module_info *out)
{
	struct memfed_module *m;

	lockdep_assert_held(&memfed_lock);
	m = xa_find(&modules, pos, ULONG_MAX, XA_PRESENT);
	if (!m)
		return -ENOENT;
	copy_out(m, out);
	return 0;
}

void memfed_modules_flush(void)
{
	struct memfed_module *m;
	unsigned long id;

	lockdep_assert_held(&memfed_lock);
	xa_for_each(&modules, id, m)
		drop_entry(m);
}
