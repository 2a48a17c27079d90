// Helpers shared by pager_link.cc and pager_link_fork.cc: the link's
// requests, and the clock its waits are measured with.
#pragma once

#include <time.h>
#include <unistd.h>

#include <cstdint>

#include "daemon/control/client.h"

namespace memfed::client::link_util
{

constexpr uint64_t kPage = 4096;

inline control::Message request(const char *op, nlohmann::json fields = nlohmann::json::object())
{
	control::Message m;
	m.body = std::move(fields);
	m.body["op"] = op;
	return m;
}

// Closes the descriptors a reply carried.
inline void close_fds(control::Message &m)
{
	for (int fd : m.fds)
		close(fd);
	m.fds.clear();
}

// *out = j[key] if that is an unsigned number.
inline bool get_u64(const nlohmann::json &j, const char *key, uint64_t *out)
{
	auto it = j.find(key);
	if (it == j.end() || !it->is_number_unsigned())
		return false;
	*out = it->get<uint64_t>();
	return true;
}

inline uint64_t monotonic_ms()
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

} // namespace memfed::client::link_util
