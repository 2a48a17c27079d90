#include "daemon/common/log.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <unistd.h>

namespace memfed
{

static std::atomic<int> g_level{int(LogLevel::kInfo)};

void set_log_level(LogLevel level)
{
	g_level.store(int(level), std::memory_order_relaxed);
}
LogLevel log_level()
{
	return LogLevel(g_level.load(std::memory_order_relaxed));
}

bool parse_log_level(const char *name, LogLevel *out)
{
	static const struct {
		const char *n;
		LogLevel l;
	} names[] = {{"debug", LogLevel::kDebug},
	             {"info", LogLevel::kInfo},
	             {"warn", LogLevel::kWarn},
	             {"error", LogLevel::kError}};
	for (const auto &e : names) {
		if (std::strcmp(e.n, name) == 0) {
			*out = e.l;
			return true;
		}
	}
	return false;
}

void log_line(LogLevel level, const char *component, const char *fmt, ...)
{
	static const char *tags[] = {"debug", "info", "warn", "error"};
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	std::vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	// UTC time of day by arithmetic: gmtime_r takes libc's tzset lock (and
	// on its first call reads the zone file into malloc'd memory), which a
	// preloaded program's thread may hold while it waits for a page.
	timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	long day_s = long(ts.tv_sec % 86400);
	// One write(2) per line, so concurrent threads never interleave, and no
	// stdio: a thread of a preloaded program may hold stderr's lock while it
	// waits for a page, and libmemfed's threads must log while memfedd is
	// away (pager_link.cc).
	char line[sizeof(msg) + 96];
	int n = std::snprintf(line, sizeof(line), "%02ld:%02ld:%02ld.%03ld %s %s: %s\n",
	                      day_s / 3600, day_s / 60 % 60, day_s % 60, ts.tv_nsec / 1000000,
	                      tags[int(level)], component, msg);
	if (n <= 0)
		return;
	size_t len = std::min(size_t(n), sizeof(line) - 1);
	if (line[len - 1] != '\n')
		line[len - 1] = '\n';
	while (write(STDERR_FILENO, line, len) < 0 && errno == EINTR) {
	}
}

} // namespace memfed
