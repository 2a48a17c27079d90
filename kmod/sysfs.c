// SPDX-License-Identifier: GPL-2.0
/*
 * /sys/kernel/memfed/, one value per file.
 *
 *   layout/{va_bits,ext_bits,index_max}
 *   limits/{modules_max,routes_max,windows_max}
 *   counters/{modules,routes,windows,objects,changes,rejected}
 *   modules/<id>/{state,capacity,endpoint,flags,reason}
 *   windows/<index>/{module,offset,length,fa,eva,pid,addr,mapped}
 *
 * The format of each file is documented in uapi/memfed_netlink.h.
 */
#include <linux/kobject.h>
#include <linux/slab.h>
#include <linux/sysfs.h>

#include "memfed.h"

static struct kobject *root;
static struct kobject *modules_dir;
static struct kobject *windows_dir;

#define SHOW_VALUE(group, name, fmt, expr)                                    \
	static ssize_t group##_##name##_show(struct kobject *kobj,          \
					     struct kobj_attribute *attr,   \
					     char *buf)                     \
	{                                                                   \
		return sysfs_emit(buf, fmt "\n", expr);                     \
	}                                                                   \
	static struct kobj_attribute group##_##name##_attr =                \
		__ATTR(name, 0444, group##_##name##_show, NULL)

SHOW_VALUE(layout, va_bits, "%u", memfed_layout.va_bits);
SHOW_VALUE(layout, ext_bits, "%u", memfed_layout.ext_bits);
SHOW_VALUE(layout, index_max, "%u", memfed_layout.index_max);

static struct attribute *layout_attrs[] = {
	&layout_va_bits_attr.attr,
	&layout_ext_bits_attr.attr,
	&layout_index_max_attr.attr,
	NULL,
};

static const struct attribute_group layout_group = {
	.name = "layout",
	.attrs = layout_attrs,
};

SHOW_VALUE(limits, modules_max, "%u", MEMFED_MODULES_MAX);
SHOW_VALUE(limits, routes_max, "%u", MEMFED_ROUTES_MAX);
SHOW_VALUE(limits, windows_max, "%u", MEMFED_WINDOWS_MAX);

static struct attribute *limits_attrs[] = {
	&limits_modules_max_attr.attr,
	&limits_routes_max_attr.attr,
	&limits_windows_max_attr.attr,
	NULL,
};

static const struct attribute_group limits_group = {
	.name = "limits",
	.attrs = limits_attrs,
};

#define SHOW_COUNTER(name)                                                    \
	SHOW_VALUE(counters, name, "%lld",                                  \
		   (long long)atomic64_read(&memfed_counters.name))

SHOW_COUNTER(modules);
SHOW_COUNTER(routes);
SHOW_COUNTER(windows);
SHOW_COUNTER(objects);
SHOW_COUNTER(changes);
SHOW_COUNTER(rejected);

static struct attribute *counters_attrs[] = {
	&counters_modules_attr.attr,
	&counters_routes_attr.attr,
	&counters_windows_attr.attr,
	&counters_objects_attr.attr,
	&counters_changes_attr.attr,
	&counters_rejected_attr.attr,
	NULL,
};

static const struct attribute_group counters_group = {
	.name = "counters",
	.attrs = counters_attrs,
};

static const struct attribute_group *root_groups[] = {
	&layout_group,
	&limits_group,
	&counters_group,
	NULL,
};

/* modules/<id>/ */

static struct memfed_module_info module_info(struct kobject *kobj)
{
	struct memfed_module *m = container_of(kobj, struct memfed_module, kobj);
	struct memfed_module_info info;

	spin_lock(&m->lock);
	info = m->info;
	spin_unlock(&m->lock);
	return info;
}

#define MODULE_FIELD(name, fmt, expr)                                         \
	static ssize_t module_##name##_show(struct kobject *kobj,           \
					    struct kobj_attribute *attr,    \
					    char *buf)                      \
	{                                                                   \
		struct memfed_module_info info = module_info(kobj);         \
									    \
		return sysfs_emit(buf, fmt "\n", expr);                     \
	}                                                                   \
	static struct kobj_attribute module_##name##_attr =                 \
		__ATTR(name, 0444, module_##name##_show, NULL)

MODULE_FIELD(state, "%s", memfed_module_state_name(info.state));
MODULE_FIELD(capacity, "%llu", info.capacity);
MODULE_FIELD(endpoint, "%s", info.endpoint);
MODULE_FIELD(flags, "0x%x", info.flags);
MODULE_FIELD(reason, "%s", info.reason);

static struct attribute *memfed_module_attrs[] = {
	&module_state_attr.attr,
	&module_capacity_attr.attr,
	&module_endpoint_attr.attr,
	&module_flags_attr.attr,
	&module_reason_attr.attr,
	NULL,
};
ATTRIBUTE_GROUPS(memfed_module);

static void module_release(struct kobject *kobj)
{
	kfree(container_of(kobj, struct memfed_module, kobj));
	atomic64_dec(&memfed_counters.objects);
}

static struct kobj_type module_ktype = {
	.release = module_release,
	.sysfs_ops = &kobj_sysfs_ops,
	.default_groups = memfed_module_groups,
};

int memfed_sysfs_add_module(struct memfed_module *m)
{
	char name[MEMFED_ID_TEXT];
	int err;

	memfed_id_text(m->info.id, name);
	err = kobject_init_and_add(&m->kobj, &module_ktype, modules_dir, "%s",
				   name);
	if (err)
		kobject_put(&m->kobj);
	return err;
}

/* windows/<index>/ */

static struct memfed_window_info window_info(struct kobject *kobj)
{
	struct memfed_window *w = container_of(kobj, struct memfed_window, kobj);
	struct memfed_window_info info;

	spin_lock(&w->lock);
	info = w->info;
	spin_unlock(&w->lock);
	return info;
}

#define WINDOW_FIELD(name, fmt, expr)                                         \
	static ssize_t window_##name##_show(struct kobject *kobj,           \
					    struct kobj_attribute *attr,    \
					    char *buf)                      \
	{                                                                   \
		struct memfed_window_info info = window_info(kobj);         \
									    \
		return sysfs_emit(buf, fmt "\n", expr);                     \
	}                                                                   \
	static struct kobj_attribute window_##name##_attr =                 \
		__ATTR(name, 0444, window_##name##_show, NULL)

WINDOW_FIELD(offset, "0x%llx", info.offset);
WINDOW_FIELD(length, "0x%llx", info.length);
WINDOW_FIELD(eva, "0x%llx", memfed_window_eva(info.index));
WINDOW_FIELD(pid, "%u", info.pid);
WINDOW_FIELD(addr, "0x%llx", info.addr);
WINDOW_FIELD(mapped, "%d", info.pid != 0);

static ssize_t window_module_show(struct kobject *kobj,
				  struct kobj_attribute *attr, char *buf)
{
	struct memfed_window_info info = window_info(kobj);
	char id[MEMFED_ID_TEXT];

	memfed_id_text(info.module, id);
	return sysfs_emit(buf, "%s\n", id);
}

static struct kobj_attribute window_module_attr =
	__ATTR(module, 0444, window_module_show, NULL);

static ssize_t window_fa_show(struct kobject *kobj,
			      struct kobj_attribute *attr, char *buf)
{
	struct memfed_window_info info = window_info(kobj);
	char id[MEMFED_ID_TEXT];

	memfed_id_text(info.module, id);
	return sysfs_emit(buf, "%s/0x%llx\n", id, info.offset);
}

static struct kobj_attribute window_fa_attr =
	__ATTR(fa, 0444, window_fa_show, NULL);

static struct attribute *memfed_window_attrs[] = {
	&window_module_attr.attr,
	&window_offset_attr.attr,
	&window_length_attr.attr,
	&window_fa_attr.attr,
	&window_eva_attr.attr,
	&window_pid_attr.attr,
	&window_addr_attr.attr,
	&window_mapped_attr.attr,
	NULL,
};
ATTRIBUTE_GROUPS(memfed_window);

static void window_release(struct kobject *kobj)
{
	kfree(container_of(kobj, struct memfed_window, kobj));
	atomic64_dec(&memfed_counters.objects);
}

static struct kobj_type window_ktype = {
	.release = window_release,
	.sysfs_ops = &kobj_sysfs_ops,
	.default_groups = memfed_window_groups,
};

int memfed_sysfs_add_window(struct memfed_window *w)
{
	int err;

	err = kobject_init_and_add(&w->kobj, &window_ktype, windows_dir, "%u",
				   w->info.index);
	if (err)
		kobject_put(&w->kobj);
	return err;
}

int memfed_sysfs_init(void)
{
	int err;

	root = kobject_create_and_add("memfed", kernel_kobj);
	if (!root)
		return -ENOMEM;
	err = sysfs_create_groups(root, root_groups);
	if (err)
		goto err_root;
	err = -ENOMEM;
	modules_dir = kobject_create_and_add("modules", root);
	if (!modules_dir)
		goto err_groups;
	windows_dir = kobject_create_and_add("windows", root);
	if (!windows_dir)
		goto err_modules;
	return 0;

err_modules:
	kobject_put(modules_dir);
err_groups:
	sysfs_remove_groups(root, root_groups);
err_root:
	kobject_put(root);
	return err;
}

void memfed_sysfs_exit(void)
{
	kobject_put(windows_dir);
	kobject_put(modules_dir);
	sysfs_remove_groups(root, root_groups);
	kobject_put(root);
}
