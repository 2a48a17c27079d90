/*
 * map_region.c: create a region of federated memory, map it, write to it,
 * make the writes durable, and read them back through a second mapping.
 *
 *   cc map_region.c $(pkg-config --cflags --libs memfed) -o map_region
 *   ./map_region [SOCKET] [REGION]
 *
 * Exit 0 when what was read back equals what was written.
 */
#include <memfed.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE (4u << 20) /* 4 MiB */

static int check(int rc, const char *what)
{
	if (rc < 0) {
		/* rc is a negative errno value; memfed_strerror() gives memfed's
		 * message for it ("memfedd is not running at ..."). */
		fprintf(stderr, "%s: %s\n", what, memfed_strerror(rc));
		exit(1);
	}
	return rc;
}

int main(int argc, char **argv)
{
	const char *socket = argc > 1 ? argv[1] : NULL; /* NULL: $MEMFED_SOCKET or default */
	const char *name = argc > 2 ? argv[2] : "example-map";
	struct memfed_conn *m;
	struct memfed_region *r;
	struct memfed_region_info info;
	unsigned char *p;

	check(memfed_connect(socket, &m), "connect");
	int rc = memfed_region_create(m, name, SIZE, 0600, &info);
	if (rc != -EEXIST) /* an existing region is fine: use it */
		check(rc, "create");
	check(memfed_region_open(m, name, &r), "open");
	check(memfed_region_stat(r, &info), "stat");
	printf("region %s: %llu bytes at %s\n", info.name, (unsigned long long)info.size, info.fa);

	/* Write a pattern through a writable mapping of the whole region. */
	check(memfed_map(r, 0, 0, MEMFED_MAP_WRITE, (void **)&p), "map");
	for (size_t i = 0; i < SIZE; i++)
		p[i] = (unsigned char)(i * 31 + 7);
	check(memfed_sync(m, p, 0), "sync"); /* durable on the module now */
	check(memfed_unmap(m, p), "unmap");

	/* Map it again, read-only, and check every byte. */
	check(memfed_map(r, 0, SIZE, 0, (void **)&p), "map again");
	size_t bad = 0;
	for (size_t i = 0; i < SIZE; i++)
		bad += p[i] != (unsigned char)(i * 31 + 7);
	check(memfed_unmap(m, p), "unmap");

	/* The same bytes through the daemon, without mapping. */
	unsigned char buf[64];
	check((int)memfed_region_read(r, SIZE - sizeof(buf), buf, sizeof(buf)), "read");
	for (size_t i = 0; i < sizeof(buf); i++)
		bad += buf[i] != (unsigned char)((SIZE - sizeof(buf) + i) * 31 + 7);

	memfed_region_close(r);
	memfed_close(m);
	printf("%s: %zu bad bytes\n", bad ? "FAILED" : "ok", bad);
	return bad ? 1 : 0;
}
