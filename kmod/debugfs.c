// SPDX-License-Identifier: GPL-2.0
/*
 * /sys/kernel/debug/memfed/routes: the route table as text.
 *
 * One route per line: "<dest id> <class> <next hop id> <metric> <hops>
 * <age ms> <via> <dev>", ordered by destination, then class; via is the next
 * hop's IPv6 address ("::" if not known), dev its interface ("-"). The route
 * table is too large for one sysfs directory per route; netlink dumps it too.
 */
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include "memfed.h"

static struct dentry *dir;

static int routes_show(struct seq_file *s, void *unused)
{
	struct memfed_route_info r;
	char dest[MEMFED_ID_TEXT], next[MEMFED_ID_TEXT];
	unsigned long pos = 0;

	mutex_lock(&memfed_lock);
	while (!memfed_route_next(&pos, &r)) {
		memfed_id_text(r.dest, dest);
		memfed_id_text(r.next_hop, next);
		seq_printf(s, "%s %s %s %u %u %llu %pI6c %s\n", dest,
			   memfed_class_name(r.class), next, r.metric, r.hops,
			   r.age_ms, r.via, r.dev[0] ? r.dev : "-");
		pos++;
	}
	mutex_unlock(&memfed_lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(routes);

void memfed_debugfs_init(void)
{
	/* debugfs is optional: failures leave the module working without it. */
	dir = debugfs_create_dir("memfed", NULL);
	debugfs_create_file("routes", 0444, dir, NULL, &routes_fops);
}

void memfed_debugfs_exit(void)
{
	debugfs_remove_recursive(dir);
}
