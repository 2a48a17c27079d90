// SPDX-License-Identifier: GPL-2.0
/*
 * The window table, keyed by extension index.
 *
 * A window maps the EVAs index << va_bits ... + length to an FA range. Each
 * entry owns a kobject, /sys/kernel/memfed/windows/<index>/, whose release
 * frees it. Replacing an entry updates it in place.
 */
#include <linux/slab.h>
#include <linux/xarray.h>

#include "memfed.h"

static DEFINE_XARRAY(windows);

u64 memfed_window_eva(u32 index)
{
	return (u64)index << memfed_layout.va_bits;
}

static void copy_out(struct memfed_window *w, struct memfed_window_info *out)
{
	spin_lock(&w->lock);
	*out = w->info;
	spin_unlock(&w->lock);
}

int memfed_window_set(const struct memfed_window_info *info)
{
	struct memfed_window *w;
	int err;

	lockdep_assert_held(&memfed_lock);
	w = xa_load(&windows, info->index);
	if (w) {
		spin_lock(&w->lock);
		w->info = *info;
		spin_unlock(&w->lock);
		return 0;
	}
	if (atomic64_read(&memfed_counters.windows) >= MEMFED_WINDOWS_MAX)
		return -ENOSPC;
	w = kzalloc(sizeof(*w), GFP_KERNEL);
	if (!w)
		return -ENOMEM;
	atomic64_inc(&memfed_counters.objects);
	spin_lock_init(&w->lock);
	w->info = *info;
	err = xa_insert(&windows, info->index, w, GFP_KERNEL);
	if (err) {
		kfree(w);
		atomic64_dec(&memfed_counters.objects);
		return err;
	}
	err = memfed_sysfs_add_window(w);
	if (err) {
		xa_erase(&windows, info->index);
		return err;
	}
	atomic64_inc(&memfed_counters.windows);
	return 0;
}

static void drop_entry(struct memfed_window *w)
{
	xa_erase(&windows, w->info.index);
	atomic64_dec(&memfed_counters.windows);
	kobject_put(&w->kobj);
}

int memfed_window_del(u32 index, struct memfed_window_info *old)
{
	struct memfed_window *w;

	lockdep_assert_held(&memfed_lock);
	w = xa_load(&windows, index);
	if (!w)
		return -ENOENT;
	copy_out(w, old);
	drop_entry(w);
	return 0;
}

int memfed_window_get(u32 index, struct memfed_window_info *out)
{
	struct memfed_window *w;

	lockdep_assert_held(&memfed_lock);
	w = xa_load(&windows, index);
	if (!w)
		return -ENOENT;
	copy_out(w, out);
	return 0;
}

int memfed_window_next(unsigned long *pos, struct memfed_window_info *out)
{
	struct memfed_window *w;

	lockdep_assert_held(&memfed_lock);
	w = xa_find(&windows, pos, ULONG_MAX, XA_PRESENT);
	if (!w)
		return -ENOENT;
	copy_out(w, out);
	return 0;
}

void memfed_windows_flush(void)
{
	struct memfed_window *w;
	unsigned long index;

	lockdep_assert_held(&memfed_lock);
	xa_for_each(&windows, index, w)
		drop_entry(w);
}
