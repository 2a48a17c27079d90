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
// ADDR is IPv6 (the mesh's addresses are); --bind picks the source address
// (a node's own mesh address, which the far side can route back to).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

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
	             "[--warmup N]\n",
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

int client(const std::string &target, const std::string &bind_to, unsigned long count,
           unsigned long warmup)
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
	std::sort(us.begin(), us.end());
	std::printf("raw: %lu round trips p50 %.1f us p99 %.1f us\n", count, us[us.size() / 2],
	            us[us.size() * 99 / 100]);
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	std::string serve_port, target, bind_to;
	unsigned long count = 2000, warmup = 100;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
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
	return client(target, bind_to, count, warmup);
}
