// say(): output for the test programs run under `memfedctl run`
// (drop_probe.c, page_verify.c, reuse_probe.c) without stdio, whose buffers
// live in the remote heap: a write(2) of a whole string, retried when
// interrupted or short. Gives up quietly if the descriptor is gone.
#pragma once

#include <errno.h>
#include <string.h>
#include <unistd.h>

static inline void say_fd(int fd, const char *msg)
{
	size_t n = strlen(msg);
	while (n > 0) {
		ssize_t w = write(fd, msg, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		msg += w;
		n -= (size_t)w;
	}
}

static inline void say(const char *msg)
{
	say_fd(1, msg);
}
