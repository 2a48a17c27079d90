/*
 * memfed_nl_fuzz: malformed and random generic-netlink messages against
 * memfed.ko, run in the QEMU guest as root with memfed.ko loaded.
 *
 *   memfed_nl_fuzz ITERATIONS SEED [unprivileged]
 *
 * First a fixed list of malformed requests, each of which must be refused
 * with a given errno and extack message (test "netlink-malformed"); then
 * ITERATIONS random messages built from SEED (test "netlink-fuzz"): every
 * answer must be an ACK, a reply or an error with a plausible errno. Oopses
 * and WARNs are caught by the kernel (oops=panic, panic_on_warn=1): the guest
 * dies and the host sees no final marker. Raw sockets, no libnl, so that the
 * messages can be as broken as needed. With "unprivileged" the program drops
 * to uid/gid 65534 first and runs only the fuzz (test
 * "netlink-fuzz-unprivileged"): every change must be refused with EPERM.
 * Single-threaded.
 */
#include <errno.h>
#include <grp.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kmod/uapi/memfed_netlink.h"

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

static int sock_fd;
static uint16_t family;
static uint32_t seq;
static int failed_checks;

/* Message under construction. */
static union {
	struct nlmsghdr h;
	char bytes[8192];
} out;
static size_t out_len;
static uint64_t rx[65536 / 8];
static char extack[256];

/* NLMSG_OK/NLMSG_NEXT without their signed/unsigned comparison. */
static int msg_ok(const struct nlmsghdr *h, int len)
{
	return len >= (int)sizeof(*h) && h->nlmsg_len >= sizeof(*h) &&
	       h->nlmsg_len <= (unsigned int)len;
}

static struct nlmsghdr *msg_next(struct nlmsghdr *h, int *len)
{
	int step = (int)NLMSG_ALIGN(h->nlmsg_len);

	*len -= step;
	return (struct nlmsghdr *)((char *)h + step);
}

static void msg_begin(uint16_t type, uint16_t flags, uint8_t cmd)
{
	struct genlmsghdr *g;

	memset(&out, 0, sizeof(out));
	out.h.nlmsg_type = type;
	out.h.nlmsg_flags = NLM_F_REQUEST | flags;
	out.h.nlmsg_seq = ++seq;
	g = (struct genlmsghdr *)NLMSG_DATA(&out.h);
	g->cmd = cmd;
	g->version = MEMFED_GENL_VERSION;
	out_len = NLMSG_HDRLEN + GENL_HDRLEN;
}

/* Appends an attribute header claiming `len` payload bytes, then `n` bytes. */
static size_t attr_raw(uint16_t type, uint16_t len, const void *data, size_t n)
{
	struct nlattr *a = (struct nlattr *)(out.bytes + out_len);
	size_t at = out_len;

	if (out_len + NLA_HDRLEN + NLA_ALIGN(n) > sizeof(out))
		return at;
	a->nla_type = type;
	a->nla_len = (uint16_t)(NLA_HDRLEN + len);
	if (n)
		memcpy(out.bytes + out_len + NLA_HDRLEN, data, n);
	out_len += NLA_HDRLEN + NLA_ALIGN(n);
	return at;
}

static size_t attr(uint16_t type, const void *data, size_t n)
{
	return attr_raw(type, (uint16_t)n, data, n);
}

static void attr_u32(uint16_t type, uint32_t v)
{
	attr(type, &v, 4);
}

static void attr_u64(uint16_t type, uint64_t v)
{
	attr(type, &v, 8);
}

static size_t nest_begin(uint16_t type)
{
	return attr(type | NLA_F_NESTED, NULL, 0);
}

static void nest_end(size_t at)
{
	struct nlattr *a = (struct nlattr *)(out.bytes + at);

	a->nla_len = (uint16_t)(out_len - at);
}

/*
 * Sends the message and reads up to the ACK, error or end of dump. Returns 0
 * or a positive errno; -1 when the socket itself failed; -2 when an answer
 * made no sense.
 */
static int transact(void)
{
	out.h.nlmsg_len = (uint32_t)out_len;
	extack[0] = 0;
	if (send(sock_fd, &out, out_len, 0) < 0)
		return -1;
	for (;;) {
		ssize_t n = recv(sock_fd, rx, sizeof(rx), 0);
		int len = (int)n;
		struct nlmsghdr *h;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		for (h = (struct nlmsghdr *)rx; msg_ok(h, len); h = msg_next(h, &len)) {
			struct nlmsgerr *e;

			if (h->nlmsg_seq != out.h.nlmsg_seq)
				continue;
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type != NLMSG_ERROR)
				continue;
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
				return -2;
			e = (struct nlmsgerr *)NLMSG_DATA(h);
			if ((h->nlmsg_flags & NLM_F_ACK_TLVS) && (h->nlmsg_flags & NLM_F_CAPPED)) {
				struct nlattr *a = (struct nlattr *)(e + 1);
				int rem = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*e)));

				while (rem >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN &&
				       a->nla_len <= rem) {
					if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG)
						snprintf(extack, sizeof(extack), "%.*s",
						         a->nla_len - NLA_HDRLEN,
						         (char *)a + NLA_HDRLEN);
					rem -= NLA_ALIGN(a->nla_len);
					a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len));
				}
			}
			return -e->error;
		}
	}
}

static int resolve_family(void)
{
	struct nlmsghdr *h;
	ssize_t n;
	int len;

	msg_begin(GENL_ID_CTRL, 0, CTRL_CMD_GETFAMILY);
	((struct genlmsghdr *)NLMSG_DATA(&out.h))->version = 1;
	attr(CTRL_ATTR_FAMILY_NAME, MEMFED_GENL_NAME, sizeof(MEMFED_GENL_NAME));
	out.h.nlmsg_len = (uint32_t)out_len;
	if (send(sock_fd, &out, out_len, 0) < 0)
		return -1;
	n = recv(sock_fd, rx, sizeof(rx), 0);
	len = (int)n;
	for (h = (struct nlmsghdr *)rx; n > 0 && msg_ok(h, len); h = msg_next(h, &len)) {
		struct nlattr *a;
		int rem;

		if (h->nlmsg_type != GENL_ID_CTRL)
			continue;
		a = (struct nlattr *)((char *)NLMSG_DATA(h) + GENL_HDRLEN);
		rem = (int)(h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN));
		while (rem >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= rem) {
			if (a->nla_type == CTRL_ATTR_FAMILY_ID) {
				memcpy(&family, (char *)a + NLA_HDRLEN, 2);
				return 0;
			}
			rem -= NLA_ALIGN(a->nla_len);
			a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len));
		}
	}
	return -1;
}

/* One malformed request: send it, then expect errno and extack text. */
static void expect(const char *what, int want, const char *text)
{
	int got = transact();

	if (got != want || (text && !strstr(extack, text))) {
		printf("MEMFED-DETAIL netlink-malformed: %s: errno %d, extack '%s'; "
		       "want errno %d, extack with '%s'\n",
		       what, got, extack, want, text ? text : "");
		failed_checks++;
	}
}

static void malformed(void)
{
	char long_ep[200];
	uint32_t small = 1;
	size_t n;

	memset(long_ep, 'x', sizeof(long_ep) - 1);
	long_ep[sizeof(long_ep) - 1] = 0;

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	expect("set module without attributes", EINVAL, "missing module attribute");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr_u32(MEMFED_MODULE_A_STATE, 1);
	nest_end(n);
	expect("set module without ID", EINVAL, "missing module ID");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr(MEMFED_MODULE_A_ID, &small, 4);
	nest_end(n);
	expect("module ID of 4 bytes", EINVAL, "invalid attribute length");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr_u64(MEMFED_MODULE_A_ID, 0x020000000001ull);
	attr_u32(MEMFED_MODULE_A_STATE, MEMFED_MODULE_STATE_MAX + 1);
	nest_end(n);
	expect("state out of range", ERANGE, "out of range");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr_u64(MEMFED_MODULE_A_ID, 0x020000000001ull);
	attr_u32(MEMFED_MODULE_A_FLAGS, 1u << 30);
	nest_end(n);
	expect("unknown flag bit", EINVAL, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr_u64(MEMFED_MODULE_A_ID, 0x020000000001ull);
	attr(MEMFED_MODULE_A_ENDPOINT, long_ep, sizeof(long_ep));
	nest_end(n);
	expect("endpoint of 199 bytes", EINVAL, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr_u64(MEMFED_MODULE_A_ID, 0x020000000001ull);
	attr(MEMFED_MODULE_A_ENDPOINT, "abc", 3);
	nest_end(n);
	expect("endpoint without NUL", EINVAL, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr_u64(MEMFED_MODULE_A_ID, 0x020000000001ull);
	attr_u32(MEMFED_MODULE_A_MAX + 1, 0);
	nest_end(n);
	expect("unknown module attribute", EINVAL, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	attr_u32(MEMFED_A_MAX + 5, 0);
	expect("unknown top-level attribute", EINVAL, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_GET_LAYOUT);
	attr(MEMFED_A_LAYOUT, NULL, 0);
	expect("layout in a request", EINVAL, "the layout is read-only");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_ROUTE);
	n = nest_begin(MEMFED_A_ROUTE);
	attr_u64(MEMFED_ROUTE_A_DEST, 0x020000000001ull);
	attr_u64(MEMFED_ROUTE_A_NEXT_HOP, 0x020000000002ull);
	attr_u64(MEMFED_ROUTE_A_AGE_MS, 5);
	nest_end(n);
	expect("route age in a request", EINVAL, "route age is read-only");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_ROUTE);
	n = nest_begin(MEMFED_A_ROUTE);
	attr_u64(MEMFED_ROUTE_A_DEST, 0x020000000001ull);
	nest_end(n);
	expect("route without next hop", EINVAL, "missing route next hop");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_WINDOW);
	n = nest_begin(MEMFED_A_WINDOW);
	attr_u32(MEMFED_WINDOW_A_INDEX, 1);
	attr_u64(MEMFED_WINDOW_A_MODULE, 0x020000000001ull);
	attr_u64(MEMFED_WINDOW_A_OFFSET, 0);
	attr_u64(MEMFED_WINDOW_A_LENGTH, 4096);
	attr_u32(MEMFED_WINDOW_A_PID, 1);
	nest_end(n);
	expect("window PID without ADDR", EINVAL, "window PID and ADDR go together");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_WINDOW);
	n = nest_begin(MEMFED_A_WINDOW);
	attr_u32(MEMFED_WINDOW_A_INDEX, 1);
	attr_u64(MEMFED_WINDOW_A_EVA, 0);
	nest_end(n);
	expect("window EVA in a request", EINVAL, "window EVA is read-only");

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_WINDOW);
	n = nest_begin(MEMFED_A_WINDOW);
	attr_u32(MEMFED_WINDOW_A_INDEX, 0);
	nest_end(n);
	expect("window index 0", ERANGE, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	attr_u32(MEMFED_A_MODULE, 7);
	expect("module nest holding a u32", EINVAL, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_SET_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr_raw(MEMFED_MODULE_A_ID, 64, &small, 4);
	nest_end(n);
	expect("attribute longer than its nest", EINVAL, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_MAX + 1);
	expect("unknown command", EOPNOTSUPP, NULL);

	msg_begin(family, NLM_F_ACK, MEMFED_CMD_DEL_MODULE);
	n = nest_begin(MEMFED_A_MODULE);
	attr_u64(MEMFED_MODULE_A_ID, 0x02000000ffffull);
	nest_end(n);
	expect("delete an absent module", ENOENT, "module not found");
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: reproducible from the seed printed in the log. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

/* A value that is often interesting: 0, small, a boundary, or random. */
static uint64_t value(void)
{
	static const uint64_t edges[] = {
	        0,
	        1,
	        2,
	        3,
	        4095,
	        4096,
	        0x020000000001ull,
	        0xffffffffffffull,
	        1ull << 47,
	        1ull << 48,
	        1ull << 56,
	        ~0ull,
	        ~0ull - 4095,
	        0x7fffffff,
	};

	switch (rnd() % 4) {
	case 0:
		return edges[rnd() % (sizeof(edges) / sizeof(edges[0]))];
	case 1:
		return rnd() % 8;
	case 2:
		return (rnd() % 64) * 4096;
	default:
		return rnd();
	}
}

static void random_attrs(int depth)
{
	int count = (int)(rnd() % 7);

	while (count-- > 0 && out_len < sizeof(out) - 512) {
		uint16_t type = (uint16_t)(rnd() % 11);
		uint64_t v = value();
		char junk[64];
		size_t i, n;

		switch (rnd() % 8) {
		case 0:
		case 1:
			attr_u64(type, v);
			break;
		case 2:
		case 3:
			attr_u32(type, (uint32_t)v);
			break;
		case 4:
			if (depth < 3) {
				n = nest_begin(type);
				random_attrs(depth + 1);
				nest_end(n);
			}
			break;
		case 5:
			n = rnd() % sizeof(junk);
			for (i = 0; i < n; i++)
				junk[i] = (char)rnd();
			attr(type, junk, n);
			break;
		case 6:
			/* A length that lies about its payload. */
			attr_raw(type, (uint16_t)(rnd() % 300), &v, 8);
			break;
		default:
			attr(type | (rnd() % 2 ? NLA_F_NESTED : NLA_F_NET_BYTEORDER), &v,
			     rnd() % 9);
			break;
		}
	}
}

/*
 * Width of each attribute of a nest: 4 (u32), 8 (u64), 16 (an IPv6 address)
 * or 0 (string).
 */
static const uint8_t module_widths[MEMFED_MODULE_A_MAX + 1] = {
        [MEMFED_MODULE_A_ID] = 8,       [MEMFED_MODULE_A_STATE] = 4, [MEMFED_MODULE_A_CAPACITY] = 8,
        [MEMFED_MODULE_A_ENDPOINT] = 0, [MEMFED_MODULE_A_FLAGS] = 4, [MEMFED_MODULE_A_PAD] = 8,
        [MEMFED_MODULE_A_REASON] = 0,
};
static const uint8_t route_widths[MEMFED_ROUTE_A_MAX + 1] = {
        [MEMFED_ROUTE_A_DEST] = 8,   [MEMFED_ROUTE_A_CLASS] = 4, [MEMFED_ROUTE_A_NEXT_HOP] = 8,
        [MEMFED_ROUTE_A_METRIC] = 4, [MEMFED_ROUTE_A_HOPS] = 4,  [MEMFED_ROUTE_A_AGE_MS] = 8,
        [MEMFED_ROUTE_A_PAD] = 8,    [MEMFED_ROUTE_A_VIA] = 16,  [MEMFED_ROUTE_A_DEV] = 0,
};
static const uint8_t window_widths[MEMFED_WINDOW_A_MAX + 1] = {
        [MEMFED_WINDOW_A_INDEX] = 4,  [MEMFED_WINDOW_A_MODULE] = 8, [MEMFED_WINDOW_A_OFFSET] = 8,
        [MEMFED_WINDOW_A_LENGTH] = 8, [MEMFED_WINDOW_A_PID] = 4,    [MEMFED_WINDOW_A_ADDR] = 8,
        [MEMFED_WINDOW_A_EVA] = 8,    [MEMFED_WINDOW_A_PAD] = 8,
};

/*
 * A request whose nest matches its command and whose attributes have their
 * types' widths, with values drawn from small sets so that SET, GET and DEL
 * meet the same entries: these reach the tables and sysfs, not just the
 * policy.
 */
static void typed_message(void)
{
	uint8_t cmd = (uint8_t)(MEMFED_CMD_GET_MODULE + rnd() % (MEMFED_CMD_MAX - 1));
	const uint8_t *widths;
	uint16_t nest, type, max;
	size_t n;

	if (cmd <= MEMFED_CMD_DEL_MODULE) {
		nest = MEMFED_A_MODULE, widths = module_widths, max = MEMFED_MODULE_A_MAX;
	} else if (cmd <= MEMFED_CMD_DEL_ROUTE) {
		nest = MEMFED_A_ROUTE, widths = route_widths, max = MEMFED_ROUTE_A_MAX;
	} else {
		nest = MEMFED_A_WINDOW, widths = window_widths, max = MEMFED_WINDOW_A_MAX;
	}
	msg_begin(family, rnd() % 8 == 0 ? NLM_F_DUMP : NLM_F_ACK, cmd);
	n = nest_begin(nest);
	for (type = 1; type <= max; type++) {
		uint64_t v;

		if (rnd() % 8 == 0 || (type > 1 && rnd() % 4 == 0))
			continue; /* the key is usually there, the rest often */
		v = rnd() % 4 ? 0x020000000001ull + rnd() % 8 : value();
		if (rnd() % 2)
			v = rnd() % 2 ? (rnd() % 16) * 4096 : rnd() % 4;
		if (widths[type] == 8)
			attr_u64(type, v);
		else if (widths[type] == 4)
			attr_u32(type, (uint32_t)(rnd() % 4 ? v % 16 : v));
		else if (widths[type] == 16)
			attr(type, "\xfe\x80\0\0\0\0\0\0\0\0\0\0\0\0\0\x02",
			     rnd() % 4 ? 16 : rnd() % 20);
		else if (nest == MEMFED_A_ROUTE)
			attr(type, "veth0", 6); /* an interface name: 15 bytes at most */
		else
			attr(type, "tcp:10.0.0.1:7070", 18);
	}
	nest_end(n);
}

/* Mostly well-formed requests with random values, sometimes garbage. */
static void random_message(void)
{
	uint8_t cmd = (uint8_t)(rnd() % (MEMFED_CMD_MAX + 3));
	uint16_t flags = rnd() % 4 == 0 ? NLM_F_DUMP : NLM_F_ACK;
	static const uint16_t nests[] = {MEMFED_A_MODULE, MEMFED_A_ROUTE, MEMFED_A_WINDOW,
	                                 MEMFED_A_LAYOUT};
	size_t n;
	int i, k;

	if (rnd() % 2) {
		typed_message();
		return;
	}
	msg_begin(family, flags, cmd);
	if (rnd() % 8 == 0) {
		random_attrs(0);
		return;
	}
	n = nest_begin(nests[rnd() % 4]);
	k = (int)(rnd() % 8);
	for (i = 0; i < k; i++) {
		uint16_t type = (uint16_t)(1 + rnd() % 8);

		switch (rnd() % 3) {
		case 0:
			attr_u32(type, (uint32_t)value());
			break;
		case 1:
			attr_u64(type, value());
			break;
		default:
			attr(type, "tcp:10.0.0.1:7070", 18);
			break;
		}
	}
	nest_end(n);
	if (rnd() % 16 == 0)
		out_len -= rnd() % 8; /* truncate the last attribute */
}

static int is_change(uint8_t cmd)
{
	return cmd == MEMFED_CMD_SET_MODULE || cmd == MEMFED_CMD_DEL_MODULE ||
	       cmd == MEMFED_CMD_SET_ROUTE || cmd == MEMFED_CMD_DEL_ROUTE ||
	       cmd == MEMFED_CMD_SET_WINDOW || cmd == MEMFED_CMD_DEL_WINDOW;
}

/* Sends `iterations` random messages; as root EPERM is never a valid answer,
 * without privileges it is the only answer a change may get. */
static int fuzz(long iterations, int unprivileged, const char *test)
{
	long i, counts[5] = {0};

	for (i = 0; i < iterations; i++) {
		uint8_t cmd;
		int err;

		random_message();
		cmd = ((struct genlmsghdr *)NLMSG_DATA(&out.h))->cmd;
		err = transact();
		if (unprivileged && err == 0 && is_change(cmd)) {
			printf("MEMFED-DETAIL %s: message %ld: command %u accepted without "
			       "CAP_NET_ADMIN\n",
			       test, i, cmd);
			return -1;
		}
		switch (err) {
		case 0:
			counts[0]++;
			break;
		case EPERM:
			if (!unprivileged)
				goto unexpected;
			counts[4]++;
			break;
		case EINVAL:
		case ERANGE:
			counts[1]++;
			break;
		case ENOENT:
			counts[2]++;
			break;
		case ENOSPC:
		case EOPNOTSUPP:
		case EMSGSIZE:
			counts[3]++;
			break;
		default:
		unexpected:
			printf("MEMFED-DETAIL %s: message %ld: unexpected answer %d (%s)\n", test,
			       i, err, extack);
			return -1;
		}
	}
	printf("MEMFED-INFO %s: %ld messages: %ld accepted, %ld EINVAL/ERANGE, "
	       "%ld ENOENT, %ld EPERM, %ld other refusals\n",
	       test, iterations, counts[0], counts[1], counts[2], counts[4], counts[3]);
	if (unprivileged)
		return counts[4] > 0 ? 0 : -1;
	return counts[0] > 0 && counts[1] > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	long iterations;
	int one = 1;

	int unprivileged = argc == 4 && !strcmp(argv[3], "unprivileged");
	const char *test = unprivileged ? "netlink-fuzz-unprivileged" : "netlink-fuzz";

	if (argc != 3 && !unprivileged) {
		fprintf(stderr, "usage: memfed_nl_fuzz ITERATIONS SEED [unprivileged]\n");
		return 2;
	}
	if (unprivileged && (setgroups(0, NULL) || setgid(65534) || setuid(65534))) {
		printf("MEMFED-DETAIL %s: cannot drop to uid 65534\n", test);
		printf("MEMFED-TEST %s FAIL\n", test);
		return 1;
	}
	iterations = strtol(argv[1], NULL, 0);
	rng_state = strtoull(argv[2], NULL, 0) | 1;
	setvbuf(stdout, NULL, _IOLBF, 0);

	sock_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (sock_fd < 0 || bind(sock_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    setsockopt(sock_fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) ||
	    setsockopt(sock_fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one)) ||
	    resolve_family()) {
		printf("MEMFED-DETAIL %s: cannot reach the memfed family\n", test);
		printf("MEMFED-TEST %s FAIL\n", unprivileged ? test : "netlink-malformed");
		return 1;
	}

	if (!unprivileged) {
		malformed();
		printf("MEMFED-TEST netlink-malformed %s\n", failed_checks ? "FAIL" : "PASS");
	}
	printf("MEMFED-INFO %s seed %s\n", test, argv[2]);
	printf("MEMFED-TEST %s %s\n", test, fuzz(iterations, unprivileged, test) ? "FAIL" : "PASS");
	return 0;
}
