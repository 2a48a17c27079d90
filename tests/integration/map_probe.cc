// memfed-test-map-probe: maps a region through memfedd's pager the way a
// program that speaks the map protocol itself would, without asking
// "region.show" first (as libmemfed's memfed_region_open does), so a test
// sees the pager's own access check at "map" (authz_users_test.sh).
//
//   memfed-test-map-probe SOCKET REGION LENGTH [rw]
//
// Maps [0, LENGTH) of REGION shared, read-only (or writable with "rw"), and
// writes the mapped bytes to stdout: exit 0. A refused or failed map: its
// message on stderr, exit 6 for a permission refusal, else 1.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "libclient/pager_link.h"

using namespace memfed;

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 5 || (argc == 5 && std::string(argv[4]) != "rw")) {
		std::fprintf(stderr, "usage: memfed-test-map-probe SOCKET REGION LENGTH [rw]\n");
		return 2;
	}
	client::PagerLink::Options o;
	o.socket_path = argv[1];
	o.handle_fork = false;
	auto link = client::PagerLink::open(o);
	if (!link) {
		std::fprintf(stderr, "attach: %s\n", link.status().to_string().c_str());
		return 1;
	}
	uint64_t length = std::strtoull(argv[3], nullptr, 0);
	auto addr = (*link)->map_shared(argv[2], 0, length, argc == 5, 0, false, 0);
	if (!addr) {
		std::fprintf(stderr, "map: %s\n", addr.status().to_string().c_str());
		return addr.status().code() == Code::kPermission ? 6 : 1;
	}
	// Copied out in user mode first: a userfaultfd of an unprivileged user
	// (UFFD_USER_MODE_ONLY) serves no fault that write(2) takes in the kernel.
	std::vector<uint8_t> bytes(length);
	std::memcpy(bytes.data(), reinterpret_cast<const void *>(*addr), length);
	for (uint64_t done = 0; done < length;) {
		ssize_t n = write(1, bytes.data() + done, length - done);
		if (n <= 0) {
			std::perror("write");
			return 1;
		}
		done += uint64_t(n);
	}
	Status st = (*link)->unmap(*addr);
	if (!st) {
		std::fprintf(stderr, "unmap: %s\n", st.to_string().c_str());
		return 1;
	}
	return 0;
}
