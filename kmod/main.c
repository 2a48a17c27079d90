// SPDX-License-Identifier: GPL-2.0
/*
 * memfed.ko init and exit.
 *
 * Init publishes sysfs and debugfs before the netlink family, so that the
 * first change a client makes has somewhere to appear. Exit unregisters the
 * family first (no new changes), then empties the tables (which removes their
 * sysfs directories), then removes the rest.
 */
#include <linux/module.h>

#include "memfed.h"

/* Serialises every change and walk of the tables (see memfed.h). */
DEFINE_MUTEX(memfed_lock);
struct memfed_counters memfed_counters;

static int __init memfed_init(void)
{
	int err;

	memfed_layout_init();
	err = memfed_sysfs_init();
	if (err)
		return err;
	memfed_debugfs_init();
	err = memfed_netlink_init();
	if (err)
		goto err_netlink;
	pr_info("memfed: loaded, va_bits %u, extension %u bits\n",
		memfed_layout.va_bits, memfed_layout.ext_bits);
	return 0;

err_netlink:
	memfed_debugfs_exit();
	memfed_sysfs_exit();
	return err;
}

static void __exit memfed_exit(void)
{
	memfed_netlink_exit();
	memfed_debugfs_exit();
	mutex_lock(&memfed_lock);
	memfed_windows_flush();
	memfed_routes_flush();
	memfed_modules_flush();
	mutex_unlock(&memfed_lock);
	memfed_sysfs_exit();
	WARN_ON(atomic64_read(&memfed_counters.objects) != 0);
}

module_init(memfed_init);
module_exit(memfed_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("memfed: federation tables of a memory-federation node");
MODULE_AUTHOR("memfed project");
MODULE_VERSION("0.1.0");
