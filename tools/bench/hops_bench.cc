// memfed-bench-hops: the raw baseline of the mesh benchmark
// (scripts/bench_mesh.sh): a 4 KiB request-response over plain TCP, no memfed
// code, between two mesh nodes over the route babeld installed. The client
// sends a 64-byte request (a memfed READ's size) and the server answers each
// with 4096 bytes; the client times every round trip. TCP_NODELAY on both
// ends, blocking sockets, one request in flight: a demand fault's pattern.
//
//   memfed-bench-hops --serve PORT
//       answers every connection, one at a time, until killed
//   memfed-bench-hops --client [ADDR]:PORT [--bind ADDR] [--count N] [--warmup N]
//       prints one line: raw: N round trips p50 US us p99 US us
//   memfed-bench-hops --client [ADDR]:PORT --uffd [--bind ...] [--count N] [--warmup N]
//       each round trip serves a userfaultfd miss, as a pager's demand fault
//       does with no pager code: a thread touches pages of a registered
//       anonymous mapping in a random order; a handler thread reads each
//       fault, fetches 4 KiB over the connection and installs it with
//       UFFDIO_COPY; the toucher times each touch. Prints
//       raw-uffd: N faults p50 US us p99 US us
// The --uffd line is the floor of any userfaultfd pager over those hops:
// what a fault costs this kernel plus the network's round trip.
// ADDR is IPv6 (the mesh's addresses are); --bind picks the source address
// (a node's own mesh address, which the far side can route back to).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "daemon/pager/uffd.h"

namespace
{

constexpr size_t kRequest = 64;
constexpr size_t kPage = 4096;

[[noreturn]] void die(const std::string &what)
{
	std::fprintf(stderr, "memfed-bench-hops: %s: %s\n", what.c_str(), std::strerror(errno));
	std::exit(1);
}

[[noreturn]] void usage(const std::string &why)
{
	std::fprintf(stderr,
	             "memfed-bench-hops: %s\n"
	             "usage: memfed-bench-hops --serve PORT\n"
	             "       memfed-bench-hops --client [ADDR]:PORT [--bind ADDR] [--count N] "
	             "[--warmup N] [--uffd]\n",
	             why.c_str());
	std::exit(2);
}

bool io_all(int fd, char *buf, size_t len, bool send_it)
{
	while (len > 0) {
		ssize_t n = send_it ? ::send(fd, buf, len, MSG_NOSIGNAL) : ::recv(fd, buf, len, 0);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return false;
		}
		buf += n;
		len -= size_t(n);
	}
	return true;
}

void no_delay(int fd)
{
	int one = 1;
	if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
		die("TCP_NODELAY");
}

unsigned long number(const char *flag, const char *v)
{
	char *end = nullptr;
	unsigned long n = std::strtoul(v, &end, 10);
	if (!*v || *end)
		usage(std::string(flag) + " '" + v + "' is not a number");
	return n;
}

sockaddr_in6 address(const std::string &host, unsigned long port)
{
	sockaddr_in6 a{};
	a.sin6_family = AF_INET6;
	a.sin6_port = htons(uint16_t(port));
	if (::inet_pton(AF_INET6, host.empty() ? "::" : host.c_str(), &a.sin6_addr) != 1)
		usage("'" + host + "' is not an IPv6 address");
	return a;
}

int serve(unsigned long port)
{
	int ls = ::socket(AF_INET6, SOCK_STREAM, 0);
	int one = 1;
	::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sockaddr_in6 a = address("", port);
	if (ls < 0 || ::bind(ls, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0 ||
	    ::listen(ls, 8) != 0)
		die("listen on port " + std::to_string(port));
	std::vector<char> req(kRequest), page(kPage, 'p');
	for (;;) {
		int fd = ::accept(ls, nullptr, nullptr);
		if (fd < 0)
			continue;
		no_delay(fd);
		while (io_all(fd, req.data(), kRequest, false) &&
		       io_all(fd, page.data(), kPage, true)) {
		}
		::close(fd);
	}
}

void print_percentiles(const char *what, const char *unit, std::vector<double> us)
{
	std::sort(us.begin(), us.end());
	std::printf("%s: %zu %s p50 %.1f us p99 %.1f us\n", what, us.size(), unit,
	            us[us.size() / 2], us[us.size() * 99 / 100]);
}

// Each fault of `pages` fresh pages fetched over `fd` by a handler thread and
// installed with UFFDIO_COPY; the touching thread times each touch.
void uffd_faults(int fd, unsigned long count, unsigned long warmup)
{
	using namespace memfed::pager;
	const uint64_t pages = count + warmup;
	auto uffd = open_uffd(0, false);
	if (!uffd)
		die("userfaultfd: " + uffd.status().to_string());
	void *m = ::mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		die("mmap");
	::madvise(m, pages * kPage, MADV_NOHUGEPAGE);
	auto *base = static_cast<char *>(m);
	if (uffd_register(*uffd, uint64_t(base), pages * kPage, UFFDIO_REGISTER_MODE_MISSING) < 0)
		die("UFFDIO_REGISTER");
	int stop = ::eventfd(0, EFD_CLOEXEC);
	std::thread handler([&] {
		std::vector<char> req(kRequest, 'r'), page(kPage);
		for (;;) {
			pollfd pf[2] = {{*uffd, POLLIN, 0}, {stop, POLLIN, 0}};
			if (::poll(pf, 2, -1) < 0)
				continue;
			if (pf[1].revents)
				return;
			uffd_msg msg;
			if (::read(*uffd, &msg, sizeof(msg)) != sizeof(msg) ||
			    msg.event != UFFD_EVENT_PAGEFAULT)
				continue;
			uint64_t a = msg.arg.pagefault.address & ~(kPage - 1);
			if (!io_all(fd, req.data(), kRequest, true) ||
			    !io_all(fd, page.data(), kPage, false))
				die("fetch for a fault");
			if (uffd_copy(*uffd, a, page.data(), kPage, false, nullptr) < 0)
				(void)uffd_wake(*uffd, a, kPage);
		}
	});
	std::vector<uint64_t> order(pages);
	std::iota(order.begin(), order.end(), 0);
	std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
	std::vector<double> us;
	us.reserve(count);
	for (uint64_t i = 0; i < pages; i++) {
		auto t0 = std::chrono::steady_clock::now();
		*static_cast<volatile char *>(base + order[i] * kPage);
		std::chrono::duration<double, std::micro> d = std::chrono::steady_clock::now() - t0;
		if (i >= warmup)
			us.push_back(d.count());
	}
	uint64_t one = 1;
	(void)!::write(stop, &one, sizeof(one));
	handler.join();
	::close(stop);
	::close(*uffd);
	::munmap(m, pages * kPage);
	print_percentiles("raw-uffd", "faults", std::move(us));
}

int client(const std::string &target, const std::string &bind_to, unsigned long count,
           unsigned long warmup, bool uffd)
{
	size_t colon = target.rfind(':');
	if (colon == std::string::npos)
		usage("--client '" + target + "' is not [ADDR]:PORT");
	std::string host = target.substr(0, colon);
	if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
		host = host.substr(1, host.size() - 2);
	sockaddr_in6 to = address(host, number("--client port", target.c_str() + colon + 1));
	int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	if (!bind_to.empty()) {
		sockaddr_in6 from = address(bind_to, 0);
		if (::bind(fd, reinterpret_cast<sockaddr *>(&from), sizeof(from)) != 0)
			die("bind to " + bind_to);
	}
	if (::connect(fd, reinterpret_cast<sockaddr *>(&to), sizeof(to)) != 0)
		die("connect to " + target);
	no_delay(fd);
	if (uffd) {
		uffd_faults(fd, count, warmup);
		::close(fd);
		return 0;
	}
	std::vector<char> req(kRequest, 'r'), page(kPage);
	std::vector<double> us;
	us.reserve(count);
	for (unsigned long i = 0; i < warmup + count; i++) {
		auto t0 = std::chrono::steady_clock::now();
		if (!io_all(fd, req.data(), kRequest, true) ||
		    !io_all(fd, page.data(), kPage, false))
			die("round trip " + std::to_string(i) + " with " + target);
		std::chrono::duration<double, std::micro> d = std::chrono::steady_clock::now() - t0;
		if (i >= warmup)
			us.push_back(d.count());
	}
	::close(fd);
	print_percentiles("raw", "round trips", std::move(us));
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	std::string serve_port, target, bind_to;
	unsigned long count = 2000, warmup = 100;
	bool uffd = false;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		if (a == "--uffd") {
			uffd = true;
			continue;
		}
		if (i + 1 >= argc)
			usage(a + " needs a value");
		const char *v = argv[++i];
		if (a == "--serve")
			serve_port = v;
		else if (a == "--client")
			target = v;
		else if (a == "--bind")
			bind_to = v;
		else if (a == "--count")
			count = number("--count", v);
		else if (a == "--warmup")
			warmup = number("--warmup", v);
		else
			usage("unknown option '" + a + "'");
	}
	if (serve_port.empty() == target.empty())
		usage("give one of --serve PORT and --client ADDR:PORT");
	if (!serve_port.empty())
		return serve(number("--serve", serve_port.c_str()));
	if (count == 0)
		usage("--count must be at least 1");
	return client(target, bind_to, count, warmup, uffd);
}
