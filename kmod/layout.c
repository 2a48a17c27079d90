// SPDX-License-Identifier: GPL-2.0
/*
 * The extended virtual address layout of this node.
 *
 * va_bits is the number of user-space virtual address bits the running
 * kernel gives a process: fls64(TASK_SIZE_MAX), which is 47 with 4-level and
 * 56 with 5-level paging on x86-64 (TASK_SIZE_MAX is 2^va_bits minus a guard
 * page). The bits above va_bits are the extension; an extension index names
 * a window.
 */
#include <linux/bitops.h>
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/uaccess.h>

#include "memfed.h"

struct memfed_layout memfed_layout;

void memfed_layout_init(void)
{
	u32 va_bits = fls64(TASK_SIZE_MAX);

	memfed_layout.va_bits = va_bits;
	memfed_layout.ext_bits = 64 - va_bits;
	if (memfed_layout.ext_bits >= 32)
		memfed_layout.index_max = U32_MAX;
	else
		memfed_layout.index_max = (1U << memfed_layout.ext_bits) - 1;
}

void memfed_id_text(u64 id, char buf[MEMFED_ID_TEXT])
{
	snprintf(buf, MEMFED_ID_TEXT, "%02x:%02x:%02x:%02x:%02x:%02x",
		 (u8)(id >> 40), (u8)(id >> 32), (u8)(id >> 24),
		 (u8)(id >> 16), (u8)(id >> 8), (u8)id);
}
