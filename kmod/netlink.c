// SPDX-License-Identifier: GPL-2.0
/*
 * The generic-netlink family "memfed".
 *
 * This file is the API boundary: the policies validate every attribute's
 * type, length and range; the handlers check what a policy cannot express
 * (required attributes, module IDs, alignment, overflow) and answer with an
 * errno plus an extack message naming the attribute. The tables behind it
 * trust what they get. Every change is announced on the "events" group while
 * memfed_lock is held, so events arrive in the order of the changes.
 * The API is documented in uapi/memfed_netlink.h.
 */
#include <linux/kernel.h>
#include <linux/module.h>
#include <net/genetlink.h>
#include <net/netlink.h>

#include "memfed.h"

static struct genl_family memfed_family;

enum { KIND_MODULE, KIND_ROUTE, KIND_WINDOW };

static const struct nla_policy module_policy[MEMFED_MODULE_A_MAX + 1] = {
	[MEMFED_MODULE_A_ID] = { .type = NLA_U64 },
	[MEMFED_MODULE_A_STATE] = NLA_POLICY_MAX(NLA_U32,
						 MEMFED_MODULE_STATE_MAX),
	[MEMFED_MODULE_A_CAPACITY] = { .type = NLA_U64 },
	[MEMFED_MODULE_A_ENDPOINT] = { .type = NLA_NUL_STRING,
				       .len = MEMFED_ENDPOINT_MAX - 1 },
	[MEMFED_MODULE_A_FLAGS] = NLA_POLICY_MASK(NLA_U32, MEMFED_MODULE_F_ALL),
	[MEMFED_MODULE_A_PAD] = { .type = NLA_REJECT,
				  .reject_message = "padding is output only" },
	[MEMFED_MODULE_A_REASON] = { .type = NLA_NUL_STRING,
				     .len = MEMFED_REASON_MAX - 1 },
};

static const struct nla_policy route_policy[MEMFED_ROUTE_A_MAX + 1] = {
	[MEMFED_ROUTE_A_DEST] = { .type = NLA_U64 },
	[MEMFED_ROUTE_A_CLASS] = NLA_POLICY_MAX(NLA_U32, MEMFED_CLASS_MAX),
	[MEMFED_ROUTE_A_NEXT_HOP] = { .type = NLA_U64 },
	[MEMFED_ROUTE_A_METRIC] = { .type = NLA_U32 },
	[MEMFED_ROUTE_A_HOPS] = NLA_POLICY_RANGE(NLA_U32, 1, MEMFED_HOPS_MAX),
	[MEMFED_ROUTE_A_AGE_MS] = { .type = NLA_REJECT,
				    .reject_message = "route age is read-only" },
	[MEMFED_ROUTE_A_PAD] = { .type = NLA_REJECT,
				 .reject_message = "padding is output only" },
	[MEMFED_ROUTE_A_VIA] = NLA_POLICY_EXACT_LEN(MEMFED_VIA_LEN),
	[MEMFED_ROUTE_A_DEV] = { .type = NLA_NUL_STRING, .len = IFNAMSIZ - 1 },
};

static const struct nla_policy window_policy[MEMFED_WINDOW_A_MAX + 1] = {
	[MEMFED_WINDOW_A_INDEX] = NLA_POLICY_MIN(NLA_U32, 1),
	[MEMFED_WINDOW_A_MODULE] = { .type = NLA_U64 },
	[MEMFED_WINDOW_A_OFFSET] = { .type = NLA_U64 },
	[MEMFED_WINDOW_A_LENGTH] = { .type = NLA_U64 },
	[MEMFED_WINDOW_A_PID] = NLA_POLICY_MIN(NLA_U32, 1),
	[MEMFED_WINDOW_A_ADDR] = { .type = NLA_U64 },
	[MEMFED_WINDOW_A_EVA] = { .type = NLA_REJECT,
				  .reject_message = "window EVA is read-only" },
	[MEMFED_WINDOW_A_PAD] = { .type = NLA_REJECT,
				  .reject_message = "padding is output only" },
};

static const struct nla_policy memfed_policy[MEMFED_A_MAX + 1] = {
	[MEMFED_A_LAYOUT] = { .type = NLA_REJECT,
			      .reject_message = "the layout is read-only" },
	[MEMFED_A_MODULE] = NLA_POLICY_NESTED(module_policy),
	[MEMFED_A_ROUTE] = NLA_POLICY_NESTED(route_policy),
	[MEMFED_A_WINDOW] = NLA_POLICY_NESTED(window_policy),
};

/* msg is a string literal; NL_SET_ERR_MSG needs one at the call site. */
#define FAIL_ATTR(info, attr, msg)                                            \
	({                                                                  \
		NL_SET_ERR_MSG_ATTR((info)->extack, attr, msg);             \
		-EINVAL;                                                    \
	})

/*
 * Point extack at a message. @msg must be a string literal or otherwise
 * static: the kernel sends it after the handler returns.
 */
static void set_msg(struct netlink_ext_ack *extack, const char *msg)
{
	if (extack)
		extack->_msg = msg;
}

/* The nested attribute @type of the request, parsed into @tb. */
static int parse_nest(struct genl_info *info, int type, struct nlattr **tb,
		      int maxtype, const struct nla_policy *policy,
		      const char *missing)
{
	if (!info->attrs[type]) {
		NL_SET_ERR_ATTR_MISS(info->extack, NULL, type);
		set_msg(info->extack, missing);
		return -EINVAL;
	}
	return nla_parse_nested(tb, maxtype, info->attrs[type], policy,
				info->extack);
}

/* A required attribute @type inside the nest @nest_type. */
static int require(struct genl_info *info, struct nlattr **tb, int nest_type,
		   int type, const char *missing)
{
	if (tb[type])
		return 0;
	NL_SET_ERR_ATTR_MISS(info->extack, info->attrs[nest_type], type);
	set_msg(info->extack, missing);
	return -EINVAL;
}

static bool valid_id(u64 id)
{
	return id && !(id & ~MEMFED_MODULE_ID_MASK);
}

static int result(int err, bool change)
{
	if (err)
		atomic64_inc(&memfed_counters.rejected);
	else if (change)
		atomic64_inc(&memfed_counters.changes);
	return err;
}

/* Message building */

static int fill_module(struct sk_buff *skb, const struct memfed_module_info *m)
{
	struct nlattr *nest = nla_nest_start(skb, MEMFED_A_MODULE);

	if (!nest)
		return -EMSGSIZE;
	if (nla_put_u64_64bit(skb, MEMFED_MODULE_A_ID, m->id,
			      MEMFED_MODULE_A_PAD) ||
	    nla_put_u32(skb, MEMFED_MODULE_A_STATE, m->state) ||
	    nla_put_u64_64bit(skb, MEMFED_MODULE_A_CAPACITY, m->capacity,
			      MEMFED_MODULE_A_PAD) ||
	    nla_put_string(skb, MEMFED_MODULE_A_ENDPOINT, m->endpoint) ||
	    nla_put_u32(skb, MEMFED_MODULE_A_FLAGS, m->flags) ||
	    nla_put_string(skb, MEMFED_MODULE_A_REASON, m->reason)) {
		nla_nest_cancel(skb, nest);
		return -EMSGSIZE;
	}
	nla_nest_end(skb, nest);
	return 0;
}

static int fill_route(struct sk_buff *skb, const struct memfed_route_info *r)
{
	struct nlattr *nest = nla_nest_start(skb, MEMFED_A_ROUTE);

	if (!nest)
		return -EMSGSIZE;
	if (nla_put_u64_64bit(skb, MEMFED_ROUTE_A_DEST, r->dest,
			      MEMFED_ROUTE_A_PAD) ||
	    nla_put_u32(skb, MEMFED_ROUTE_A_CLASS, r->class) ||
	    nla_put_u64_64bit(skb, MEMFED_ROUTE_A_NEXT_HOP, r->next_hop,
			      MEMFED_ROUTE_A_PAD) ||
	    nla_put_u32(skb, MEMFED_ROUTE_A_METRIC, r->metric) ||
	    nla_put_u32(skb, MEMFED_ROUTE_A_HOPS, r->hops) ||
	    nla_put_u64_64bit(skb, MEMFED_ROUTE_A_AGE_MS, r->age_ms,
			      MEMFED_ROUTE_A_PAD) ||
	    nla_put(skb, MEMFED_ROUTE_A_VIA, MEMFED_VIA_LEN, r->via) ||
	    nla_put_string(skb, MEMFED_ROUTE_A_DEV, r->dev)) {
		nla_nest_cancel(skb, nest);
		return -EMSGSIZE;
	}
	nla_nest_end(skb, nest);
	return 0;
}

static int fill_window(struct sk_buff *skb, const struct memfed_window_info *w)
{
	struct nlattr *nest = nla_nest_start(skb, MEMFED_A_WINDOW);

	if (!nest)
		return -EMSGSIZE;
	if (nla_put_u32(skb, MEMFED_WINDOW_A_INDEX, w->index) ||
	    nla_put_u64_64bit(skb, MEMFED_WINDOW_A_MODULE, w->module,
			      MEMFED_WINDOW_A_PAD) ||
	    nla_put_u64_64bit(skb, MEMFED_WINDOW_A_OFFSET, w->offset,
			      MEMFED_WINDOW_A_PAD) ||
	    nla_put_u64_64bit(skb, MEMFED_WINDOW_A_LENGTH, w->length,
			      MEMFED_WINDOW_A_PAD) ||
	    nla_put_u64_64bit(skb, MEMFED_WINDOW_A_EVA,
			      memfed_window_eva(w->index),
			      MEMFED_WINDOW_A_PAD)) {
		nla_nest_cancel(skb, nest);
		return -EMSGSIZE;
	}
	if (w->pid &&
	    (nla_put_u32(skb, MEMFED_WINDOW_A_PID, w->pid) ||
	     nla_put_u64_64bit(skb, MEMFED_WINDOW_A_ADDR, w->addr,
			       MEMFED_WINDOW_A_PAD))) {
		nla_nest_cancel(skb, nest);
		return -EMSGSIZE;
	}
	nla_nest_end(skb, nest);
	return 0;
}

static int fill(struct sk_buff *skb, int kind, const void *entry)
{
	switch (kind) {
	case KIND_MODULE:
		return fill_module(skb, entry);
	case KIND_ROUTE:
		return fill_route(skb, entry);
	default:
		return fill_window(skb, entry);
	}
}

/* One message holding one entry; NULL when out of memory. */
static struct sk_buff *entry_msg(u32 portid, u32 seq, u8 cmd, int kind,
				 const void *entry)
{
	struct sk_buff *skb = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	void *hdr;

	if (!skb)
		return NULL;
	hdr = genlmsg_put(skb, portid, seq, &memfed_family, 0, cmd);
	if (!hdr || fill(skb, kind, entry)) {
		nlmsg_free(skb);
		return NULL;
	}
	genlmsg_end(skb, hdr);
	return skb;
}

/* REQUIRES memfed_lock, so that events keep the order of the changes. */
static void notify(u8 cmd, int kind, const void *entry)
{
	struct sk_buff *skb = entry_msg(0, 0, cmd, kind, entry);

	lockdep_assert_held(&memfed_lock);
	if (skb)
		genlmsg_multicast(&memfed_family, skb, 0, 0, GFP_KERNEL);
}

static int reply(struct genl_info *info, int kind, const void *entry)
{
	struct sk_buff *skb = entry_msg(info->snd_portid, info->snd_seq,
					info->genlhdr->cmd, kind, entry);

	if (!skb)
		return -ENOMEM;
	return genlmsg_reply(skb, info);
}

static int next(int kind, unsigned long *pos, void *out)
{
	switch (kind) {
	case KIND_MODULE:
		return memfed_module_next(pos, out);
	case KIND_ROUTE:
		return memfed_route_next(pos, out);
	default:
		return memfed_window_next(pos, out);
	}
}

/*
 * Dump every entry of one table, one per message, resuming at the key kept
 * in cb->args[0].
 */
static int dump(struct sk_buff *skb, struct netlink_callback *cb, u8 cmd,
		int kind)
{
	union {
		struct memfed_module_info module;
		struct memfed_route_info route;
		struct memfed_window_info window;
	} entry;
	unsigned long pos = cb->args[0];
	void *hdr;

	mutex_lock(&memfed_lock);
	while (!next(kind, &pos, &entry)) {
		hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid,
				  cb->nlh->nlmsg_seq, &memfed_family,
				  NLM_F_MULTI, cmd);
		if (!hdr)
			break;
		if (fill(skb, kind, &entry)) {
			genlmsg_cancel(skb, hdr);
			break;
		}
		genlmsg_end(skb, hdr);
		pos++;
	}
	mutex_unlock(&memfed_lock);
	cb->args[0] = pos;
	return skb->len;
}

static int get_layout(struct sk_buff *skb, struct genl_info *info)
{
	struct sk_buff *msg = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	struct nlattr *nest;
	void *hdr;

	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &memfed_family, 0,
				MEMFED_CMD_GET_LAYOUT);
	if (!hdr)
		goto err;
	nest = nla_nest_start(msg, MEMFED_A_LAYOUT);
	if (!nest ||
	    nla_put_u32(msg, MEMFED_LAYOUT_A_VA_BITS, memfed_layout.va_bits) ||
	    nla_put_u32(msg, MEMFED_LAYOUT_A_EXT_BITS, memfed_layout.ext_bits) ||
	    nla_put_u32(msg, MEMFED_LAYOUT_A_INDEX_MAX,
			memfed_layout.index_max) ||
	    nla_put_u32(msg, MEMFED_LAYOUT_A_MODULES_MAX, MEMFED_MODULES_MAX) ||
	    nla_put_u32(msg, MEMFED_LAYOUT_A_ROUTES_MAX, MEMFED_ROUTES_MAX) ||
	    nla_put_u32(msg, MEMFED_LAYOUT_A_WINDOWS_MAX, MEMFED_WINDOWS_MAX))
		goto err;
	nla_nest_end(msg, nest);
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);

err:
	nlmsg_free(msg);
	return -EMSGSIZE;
}

/* Modules */

static int module_key(struct genl_info *info, struct nlattr **tb, u64 *id)
{
	int err;

	err = parse_nest(info, MEMFED_A_MODULE, tb, MEMFED_MODULE_A_MAX,
			 module_policy, "missing module attribute");
	if (!err)
		err = require(info, tb, MEMFED_A_MODULE, MEMFED_MODULE_A_ID,
			      "missing module ID");
	if (err)
		return err;
	*id = nla_get_u64(tb[MEMFED_MODULE_A_ID]);
	if (!valid_id(*id))
		return FAIL_ATTR(info, tb[MEMFED_MODULE_A_ID],
				 "module ID must be a non-zero 48-bit value");
	return 0;
}

static int set_module(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_MODULE_A_MAX + 1];
	struct memfed_module_info m = {};
	int err;

	err = module_key(info, tb, &m.id);
	if (err)
		return result(err, true);
	if (tb[MEMFED_MODULE_A_STATE])
		m.state = nla_get_u32(tb[MEMFED_MODULE_A_STATE]);
	if (tb[MEMFED_MODULE_A_CAPACITY])
		m.capacity = nla_get_u64(tb[MEMFED_MODULE_A_CAPACITY]);
	if (tb[MEMFED_MODULE_A_ENDPOINT])
		nla_strscpy(m.endpoint, tb[MEMFED_MODULE_A_ENDPOINT],
			    sizeof(m.endpoint));
	if (tb[MEMFED_MODULE_A_FLAGS])
		m.flags = nla_get_u32(tb[MEMFED_MODULE_A_FLAGS]);
	if (tb[MEMFED_MODULE_A_REASON])
		nla_strscpy(m.reason, tb[MEMFED_MODULE_A_REASON],
			    sizeof(m.reason));

	mutex_lock(&memfed_lock);
	err = memfed_module_set(&m);
	if (!err)
		notify(MEMFED_CMD_SET_MODULE, KIND_MODULE, &m);
	mutex_unlock(&memfed_lock);
	if (err == -ENOSPC)
		NL_SET_ERR_MSG(info->extack,
			       "module table full (MEMFED_MODULES_MAX entries)");
	return result(err, true);
}

static int get_module(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_MODULE_A_MAX + 1];
	struct memfed_module_info m;
	u64 id;
	int err;

	err = module_key(info, tb, &id);
	if (err)
		return result(err, false);
	mutex_lock(&memfed_lock);
	err = memfed_module_get(id, &m);
	mutex_unlock(&memfed_lock);
	if (err) {
		NL_SET_ERR_MSG_ATTR(info->extack, tb[MEMFED_MODULE_A_ID],
				    "module not found");
		return result(err, false);
	}
	return result(reply(info, KIND_MODULE, &m), false);
}

static int dump_modules(struct sk_buff *skb, struct netlink_callback *cb)
{
	return dump(skb, cb, MEMFED_CMD_GET_MODULE, KIND_MODULE);
}

static int del_module(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_MODULE_A_MAX + 1];
	struct memfed_module_info old;
	u64 id;
	int err;

	err = module_key(info, tb, &id);
	if (err)
		return result(err, true);
	mutex_lock(&memfed_lock);
	err = memfed_module_del(id, &old);
	if (!err)
		notify(MEMFED_CMD_DEL_MODULE, KIND_MODULE, &old);
	mutex_unlock(&memfed_lock);
	if (err)
		NL_SET_ERR_MSG_ATTR(info->extack, tb[MEMFED_MODULE_A_ID],
				    "module not found");
	return result(err, true);
}

/* Routes */

static int route_key(struct genl_info *info, struct nlattr **tb, u64 *dest,
		     u32 *class)
{
	int err;

	err = parse_nest(info, MEMFED_A_ROUTE, tb, MEMFED_ROUTE_A_MAX,
			 route_policy, "missing route attribute");
	if (!err)
		err = require(info, tb, MEMFED_A_ROUTE, MEMFED_ROUTE_A_DEST,
			      "missing route destination");
	if (err)
		return err;
	*dest = nla_get_u64(tb[MEMFED_ROUTE_A_DEST]);
	if (!valid_id(*dest))
		return FAIL_ATTR(info, tb[MEMFED_ROUTE_A_DEST],
				 "route destination must be a non-zero 48-bit module ID");
	*class = tb[MEMFED_ROUTE_A_CLASS] ?
			 nla_get_u32(tb[MEMFED_ROUTE_A_CLASS]) :
			 MEMFED_CLASS_FAULT;
	return 0;
}

static int set_route(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_ROUTE_A_MAX + 1];
	struct memfed_route_info r = { .hops = 1 };
	int err;

	err = route_key(info, tb, &r.dest, &r.class);
	if (!err)
		err = require(info, tb, MEMFED_A_ROUTE, MEMFED_ROUTE_A_NEXT_HOP,
			      "missing route next hop");
	if (err)
		return result(err, true);
	r.next_hop = nla_get_u64(tb[MEMFED_ROUTE_A_NEXT_HOP]);
	if (!valid_id(r.next_hop))
		return result(FAIL_ATTR(info, tb[MEMFED_ROUTE_A_NEXT_HOP],
					"route next hop must be a non-zero 48-bit module ID"),
			      true);
	if (tb[MEMFED_ROUTE_A_METRIC])
		r.metric = nla_get_u32(tb[MEMFED_ROUTE_A_METRIC]);
	if (tb[MEMFED_ROUTE_A_HOPS])
		r.hops = nla_get_u32(tb[MEMFED_ROUTE_A_HOPS]);
	if (tb[MEMFED_ROUTE_A_VIA])
		nla_memcpy(r.via, tb[MEMFED_ROUTE_A_VIA], sizeof(r.via));
	if (tb[MEMFED_ROUTE_A_DEV])
		nla_strscpy(r.dev, tb[MEMFED_ROUTE_A_DEV], sizeof(r.dev));

	mutex_lock(&memfed_lock);
	err = memfed_route_set(&r);
	if (!err)
		notify(MEMFED_CMD_SET_ROUTE, KIND_ROUTE, &r);
	mutex_unlock(&memfed_lock);
	if (err == -ENOSPC)
		NL_SET_ERR_MSG(info->extack,
			       "route table full (MEMFED_ROUTES_MAX entries)");
	return result(err, true);
}

static int get_route(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_ROUTE_A_MAX + 1];
	struct memfed_route_info r;
	u64 dest;
	u32 class;
	int err;

	err = route_key(info, tb, &dest, &class);
	if (err)
		return result(err, false);
	mutex_lock(&memfed_lock);
	err = memfed_route_get(dest, class, &r);
	mutex_unlock(&memfed_lock);
	if (err) {
		NL_SET_ERR_MSG_ATTR(info->extack, tb[MEMFED_ROUTE_A_DEST],
				    "no route to this destination in this class");
		return result(err, false);
	}
	return result(reply(info, KIND_ROUTE, &r), false);
}

static int dump_routes(struct sk_buff *skb, struct netlink_callback *cb)
{
	return dump(skb, cb, MEMFED_CMD_GET_ROUTE, KIND_ROUTE);
}

static int del_route(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_ROUTE_A_MAX + 1];
	struct memfed_route_info old;
	u64 dest;
	u32 class;
	int err;

	err = route_key(info, tb, &dest, &class);
	if (err)
		return result(err, true);
	mutex_lock(&memfed_lock);
	err = memfed_route_del(dest, class, &old);
	if (!err)
		notify(MEMFED_CMD_DEL_ROUTE, KIND_ROUTE, &old);
	mutex_unlock(&memfed_lock);
	if (err)
		NL_SET_ERR_MSG_ATTR(info->extack, tb[MEMFED_ROUTE_A_DEST],
				    "no route to this destination in this class");
	return result(err, true);
}

/* Windows */

static int window_key(struct genl_info *info, struct nlattr **tb, u32 *index)
{
	int err;

	err = parse_nest(info, MEMFED_A_WINDOW, tb, MEMFED_WINDOW_A_MAX,
			 window_policy, "missing window attribute");
	if (!err)
		err = require(info, tb, MEMFED_A_WINDOW, MEMFED_WINDOW_A_INDEX,
			      "missing window index");
	if (err)
		return err;
	*index = nla_get_u32(tb[MEMFED_WINDOW_A_INDEX]);
	if (*index > memfed_layout.index_max)
		return FAIL_ATTR(info, tb[MEMFED_WINDOW_A_INDEX],
				 "window index does not fit in the extension bits (see layout index_max)");
	return 0;
}

static int window_fields(struct genl_info *info, struct nlattr **tb,
			 struct memfed_window_info *w)
{
	u64 va_limit = 1ULL << memfed_layout.va_bits;
	int err;

	err = require(info, tb, MEMFED_A_WINDOW, MEMFED_WINDOW_A_MODULE,
		      "missing window module");
	if (!err)
		err = require(info, tb, MEMFED_A_WINDOW, MEMFED_WINDOW_A_OFFSET,
			      "missing window offset");
	if (!err)
		err = require(info, tb, MEMFED_A_WINDOW, MEMFED_WINDOW_A_LENGTH,
			      "missing window length");
	if (err)
		return err;
	w->module = nla_get_u64(tb[MEMFED_WINDOW_A_MODULE]);
	w->offset = nla_get_u64(tb[MEMFED_WINDOW_A_OFFSET]);
	w->length = nla_get_u64(tb[MEMFED_WINDOW_A_LENGTH]);
	if (!valid_id(w->module))
		return FAIL_ATTR(info, tb[MEMFED_WINDOW_A_MODULE],
				 "window module must be a non-zero 48-bit module ID");
	if (!IS_ALIGNED(w->offset, MEMFED_WINDOW_ALIGN))
		return FAIL_ATTR(info, tb[MEMFED_WINDOW_A_OFFSET],
				 "window offset must be a multiple of MEMFED_WINDOW_ALIGN");
	if (!w->length || !IS_ALIGNED(w->length, MEMFED_WINDOW_ALIGN) ||
	    w->length > va_limit)
		return FAIL_ATTR(info, tb[MEMFED_WINDOW_A_LENGTH],
				 "window length must be a non-zero multiple of MEMFED_WINDOW_ALIGN, at most 2^va_bits");
	if (w->offset > U64_MAX - w->length)
		return FAIL_ATTR(info, tb[MEMFED_WINDOW_A_LENGTH],
				 "window offset + length wraps around");
	if (!tb[MEMFED_WINDOW_A_PID] != !tb[MEMFED_WINDOW_A_ADDR])
		return FAIL_ATTR(info,
				 tb[MEMFED_WINDOW_A_PID] ?:
					 tb[MEMFED_WINDOW_A_ADDR],
				 "window PID and ADDR go together");
	if (!tb[MEMFED_WINDOW_A_PID])
		return 0;
	w->pid = nla_get_u32(tb[MEMFED_WINDOW_A_PID]);
	w->addr = nla_get_u64(tb[MEMFED_WINDOW_A_ADDR]);
	if (!IS_ALIGNED(w->addr, MEMFED_WINDOW_ALIGN) || w->addr >= va_limit ||
	    w->length > va_limit - w->addr)
		return FAIL_ATTR(info, tb[MEMFED_WINDOW_A_ADDR],
				 "window address must be aligned to MEMFED_WINDOW_ALIGN and the window must lie below 2^va_bits");
	return 0;
}

static int set_window(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_WINDOW_A_MAX + 1];
	struct memfed_window_info w = {};
	int err;

	err = window_key(info, tb, &w.index);
	if (!err)
		err = window_fields(info, tb, &w);
	if (err)
		return result(err, true);

	mutex_lock(&memfed_lock);
	err = memfed_window_set(&w);
	if (!err)
		notify(MEMFED_CMD_SET_WINDOW, KIND_WINDOW, &w);
	mutex_unlock(&memfed_lock);
	if (err == -ENOSPC)
		NL_SET_ERR_MSG(info->extack,
			       "window table full (MEMFED_WINDOWS_MAX entries)");
	return result(err, true);
}

static int get_window(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_WINDOW_A_MAX + 1];
	struct memfed_window_info w;
	u32 index;
	int err;

	err = window_key(info, tb, &index);
	if (err)
		return result(err, false);
	mutex_lock(&memfed_lock);
	err = memfed_window_get(index, &w);
	mutex_unlock(&memfed_lock);
	if (err) {
		NL_SET_ERR_MSG_ATTR(info->extack, tb[MEMFED_WINDOW_A_INDEX],
				    "window not found");
		return result(err, false);
	}
	return result(reply(info, KIND_WINDOW, &w), false);
}

static int dump_windows(struct sk_buff *skb, struct netlink_callback *cb)
{
	return dump(skb, cb, MEMFED_CMD_GET_WINDOW, KIND_WINDOW);
}

static int del_window(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr *tb[MEMFED_WINDOW_A_MAX + 1];
	struct memfed_window_info old;
	u32 index;
	int err;

	err = window_key(info, tb, &index);
	if (err)
		return result(err, true);
	mutex_lock(&memfed_lock);
	err = memfed_window_del(index, &old);
	if (!err)
		notify(MEMFED_CMD_DEL_WINDOW, KIND_WINDOW, &old);
	mutex_unlock(&memfed_lock);
	if (err)
		NL_SET_ERR_MSG_ATTR(info->extack, tb[MEMFED_WINDOW_A_INDEX],
				    "window not found");
	return result(err, true);
}

/*
 * .validate stays 0 on every op: strict validation, and 6.1 refuses to
 * register a family whose new ops set validate flags.
 */
static const struct genl_small_ops memfed_ops[] = {
	{ .cmd = MEMFED_CMD_GET_LAYOUT, .doit = get_layout },
	{ .cmd = MEMFED_CMD_GET_MODULE, .doit = get_module,
	  .dumpit = dump_modules },
	{ .cmd = MEMFED_CMD_SET_MODULE, .doit = set_module,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = MEMFED_CMD_DEL_MODULE, .doit = del_module,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = MEMFED_CMD_GET_ROUTE, .doit = get_route,
	  .dumpit = dump_routes },
	{ .cmd = MEMFED_CMD_SET_ROUTE, .doit = set_route,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = MEMFED_CMD_DEL_ROUTE, .doit = del_route,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = MEMFED_CMD_GET_WINDOW, .doit = get_window,
	  .dumpit = dump_windows },
	{ .cmd = MEMFED_CMD_SET_WINDOW, .doit = set_window,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = MEMFED_CMD_DEL_WINDOW, .doit = del_window,
	  .flags = GENL_ADMIN_PERM },
};

static const struct genl_multicast_group memfed_mcgrps[] = {
	{ .name = MEMFED_MCGRP_EVENTS },
};

static struct genl_family memfed_family = {
	.name = MEMFED_GENL_NAME,
	.version = MEMFED_GENL_VERSION,
	.maxattr = MEMFED_A_MAX,
	.policy = memfed_policy,
	.parallel_ops = true,
	.small_ops = memfed_ops,
	.n_small_ops = ARRAY_SIZE(memfed_ops),
	.mcgrps = memfed_mcgrps,
	.n_mcgrps = ARRAY_SIZE(memfed_mcgrps),
	.module = THIS_MODULE,
};

int memfed_netlink_init(void)
{
	return genl_register_family(&memfed_family);
}

void memfed_netlink_exit(void)
{
	genl_unregister_family(&memfed_family);
}

MODULE_ALIAS_GENL_FAMILY(MEMFED_GENL_NAME);
