// Threads of the test process, for tests that check what memfed does to
// them (colocation_test.cc, pager_link_test.cc).
#pragma once

#include <catch2/catch.hpp>

#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

namespace memfed::testing
{

// The id of this process's thread named `name` (its comm), waiting up to a
// second for a thread that names itself as it starts; 0 if there is none.
inline pid_t thread_named(const char *name)
{
	for (int tries = 0; tries < 100; tries++) {
		for (const auto &e : std::filesystem::directory_iterator("/proc/self/task")) {
			FILE *f = std::fopen((e.path() / "comm").c_str(), "re");
			if (f == nullptr)
				continue;
			char comm[32] = {};
			bool hit = std::fgets(comm, sizeof(comm), f) != nullptr &&
			           std::string(comm) == std::string(name) + "\n";
			std::fclose(f);
			if (hit)
				return pid_t(std::stoi(e.path().filename().string()));
		}
		usleep(10000);
	}
	return 0;
}

inline cpu_set_t cpus_of(pid_t tid)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	REQUIRE(sched_getaffinity(tid, sizeof(s), &s) == 0);
	return s;
}

} // namespace memfed::testing
