// memfed-bench-car: the car of the mobility benchmark (issue 11, item 7;
// scripts/bench_car.sh) and of the mesh_car test. It runs in the car's
// network namespace, which has one veth link to each lamp post of a line; the
// car "drives" by bringing those links up and down as its position makes each
// lamp post come into and go out of radio range, and meanwhile reads obstacle
// records, through the car's memfedd (libmemfed, memfed_region_read), from
// the region of the lamp post ahead of it, checking each record's bytes.
//
//   memfed-bench-car --write --socket S --regions R0,R1,...
//       fills every region with its obstacle records (lamp post i: Ri)
//   memfed-bench-car --drive --socket S --regions R0,... --links L0,L1,...
//           --speed-kmh V [--spacing-m 30] [--range-m 20] [--seconds T]
//       drives back and forth along the line for T seconds (default: long
//       enough to pass two lamp posts, at least 10 s) and prints one line:
//       car: V km/h reads N reads/s X failed F wrong W unavailable U
//            stall_ms S handovers H read_p50_us P
//   memfed-bench-car --converge --link L --addr ADDR --bind SRC --port P
//           [--via L2] [--repeat N]
//       N times: L down (L2, if given, up: the car is attached elsewhere),
//       then L up; the ms from L up until the kernel's route to ADDR goes out
//       of L (route), and until a TCP connection from SRC to [ADDR]:P is
//       accepted (usable: both directions routed). One line per run:
//       converge: route_ms R usable_ms U
//
// Geometry: lamp post i stands at i × spacing; a link is up while the car is
// within range of its lamp post. With range > spacing / 2 the ranges
// overlap and the car is attached to two lamp posts at once in between.
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "memfed.h"

namespace
{

using Clock = std::chrono::steady_clock;

constexpr uint32_t kMagic = 0x5453424f; // "OBST"
constexpr uint32_t kRecords = 1024;     // per lamp post: 64 KiB, 16 pages

// One obstacle near a lamp post, as the car reads it.
struct Obstacle {
	uint32_t magic;
	uint16_t lamp;
	uint16_t kind; // 1 pothole, 2 parked car, 3 pedestrian, ...
	uint32_t index;
	int32_t x_cm; // along the road, from lamp post 0
	int32_t y_cm; // across it
	uint32_t size_cm;
	uint8_t note[32];
	uint64_t checksum; // FNV-1a of the bytes before it
};
static_assert(sizeof(Obstacle) == 64);

[[noreturn]] void usage(const std::string &why)
{
	std::fprintf(stderr,
	             "memfed-bench-car: %s\n"
	             "usage: memfed-bench-car --write --socket S --regions R0,R1,...\n"
	             "       memfed-bench-car --drive --socket S --regions R0,... --links L0,... "
	             "--speed-kmh V\n"
	             "               [--spacing-m 30] [--range-m 20] [--seconds T]\n"
	             "       memfed-bench-car --converge --link L --addr ADDR --bind SRC --port P "
	             "[--via L2] [--repeat N]\n",
	             why.c_str());
	std::exit(2);
}

[[noreturn]] void die(const std::string &what)
{
	std::fprintf(stderr, "memfed-bench-car: %s\n", what.c_str());
	std::exit(1);
}

std::vector<std::string> split(const std::string &s)
{
	std::vector<std::string> out;
	size_t at = 0;
	while (at <= s.size()) {
		size_t comma = s.find(',', at);
		if (comma == std::string::npos)
			comma = s.size();
		if (comma > at)
			out.push_back(s.substr(at, comma - at));
		at = comma + 1;
	}
	return out;
}

uint64_t fnv1a(const void *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ static_cast<const uint8_t *>(p)[i]) * 1099511628211ull;
	return h;
}

// The record lamp post `lamp` holds at `index`: known content, so the car
// can check every byte it reads.
Obstacle expected(uint16_t lamp, uint32_t index)
{
	Obstacle o{};
	o.magic = kMagic;
	o.lamp = lamp;
	o.kind = uint16_t(1 + (index * 7 + lamp) % 5);
	o.index = index;
	o.x_cm = int32_t(lamp) * 3000 + int32_t(index % 2000) - 1000;
	o.y_cm = int32_t((index * 37 + lamp * 11) % 700) - 350;
	o.size_cm = 10 + (index * 13 + lamp) % 300;
	std::snprintf(reinterpret_cast<char *>(o.note), sizeof(o.note), "lamp %u obstacle %u",
	              unsigned(lamp), unsigned(index));
	o.checksum = fnv1a(&o, offsetof(Obstacle, checksum));
	return o;
}

double ms_since(Clock::time_point t0)
{
	return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Brings interface `name` of this namespace up or down (what `ip link set`
// does), through the ioctl so that a link changes within microseconds of the
// moment the schedule says.
void set_link(const std::string &name, bool up)
{
	static int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ifreq ifr{};
	std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name.c_str());
	if (::ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		die("interface " + name + ": " + std::strerror(errno) +
		    " (is it in this namespace?)");
	short want = up ? short(ifr.ifr_flags | IFF_UP) : short(ifr.ifr_flags & ~IFF_UP);
	if (want == ifr.ifr_flags)
		return;
	ifr.ifr_flags = want;
	if (::ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		die("setting " + name + (up ? " up: " : " down: ") + std::strerror(errno));
}

// The interface index of the kernel's route to `dst` (what `ip -6 route get`
// answers), 0 if there is none.
int route_oif(const in6_addr &dst)
{
	static int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct {
		nlmsghdr nh;
		rtmsg rt;
		rtattr attr;
		in6_addr addr;
	} req{};
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = RTM_GETROUTE;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.rt.rtm_family = AF_INET6;
	req.rt.rtm_dst_len = 128;
	req.attr.rta_type = RTA_DST;
	req.attr.rta_len = RTA_LENGTH(sizeof(in6_addr));
	req.addr = dst;
	if (::send(fd, &req, sizeof(req), 0) < 0)
		die(std::string("netlink route request: ") + std::strerror(errno));
	alignas(nlmsghdr) char buf[8192];
	ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
	if (n < 0)
		die(std::string("netlink route answer: ") + std::strerror(errno));
	auto *nh = reinterpret_cast<nlmsghdr *>(buf);
	if (!NLMSG_OK(nh, size_t(n)) || nh->nlmsg_type != RTM_NEWROUTE)
		return 0; // NLMSG_ERROR: no route (ENETUNREACH)
	auto *rt = static_cast<rtmsg *>(NLMSG_DATA(nh));
	if (rt->rtm_type != RTN_UNICAST)
		return 0;
	int len = int(RTM_PAYLOAD(nh));
	for (auto *a = RTM_RTA(rt); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == RTA_OIF)
			return *static_cast<int *>(RTA_DATA(a));
	}
	return 0;
}

// One TCP connection attempt from `src` to `dst` port `port`, given up after
// `timeout_ms`: true once the far side accepted it.
bool connects(const in6_addr &src, const in6_addr &dst, uint16_t port, int timeout_ms)
{
	int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	sockaddr_in6 a{};
	a.sin6_family = AF_INET6;
	a.sin6_addr = src;
	if (::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) < 0)
		die(std::string("bind to the car's address: ") + std::strerror(errno));
	a.sin6_addr = dst;
	a.sin6_port = htons(port);
	bool ok = false;
	if (::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0) {
		ok = true;
	} else if (errno == EINPROGRESS) {
		pollfd p{fd, POLLOUT, 0};
		if (::poll(&p, 1, timeout_ms) == 1) {
			int err = 0;
			socklen_t l = sizeof(err);
			::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
			ok = err == 0;
		}
	}
	::close(fd);
	if (!ok)
		std::this_thread::sleep_for(
		        std::chrono::milliseconds(1)); // refused at once: no spin
	return ok;
}

struct Args {
	std::string mode, socket, link, via;
	std::vector<std::string> regions, links;
	double speed_kmh = 0, spacing_m = 30, range_m = 20, seconds = 0;
	in6_addr addr{}, bind{};
	uint16_t port = 0;
	int repeat = 5;
};

in6_addr parse_addr(const char *s)
{
	in6_addr a{};
	if (::inet_pton(AF_INET6, s, &a) != 1)
		usage(std::string("not an IPv6 address: ") + s);
	return a;
}

Args parse(int argc, char **argv)
{
	Args a;
	for (int i = 1; i < argc; i++) {
		std::string k = argv[i];
		if (k == "--write" || k == "--drive" || k == "--converge") {
			a.mode = k.substr(2);
			continue;
		}
		if (i + 1 >= argc)
			usage(k + " needs a value");
		const char *v = argv[++i];
		if (k == "--socket")
			a.socket = v;
		else if (k == "--regions")
			a.regions = split(v);
		else if (k == "--links")
			a.links = split(v);
		else if (k == "--speed-kmh")
			a.speed_kmh = std::atof(v);
		else if (k == "--spacing-m")
			a.spacing_m = std::atof(v);
		else if (k == "--range-m")
			a.range_m = std::atof(v);
		else if (k == "--seconds")
			a.seconds = std::atof(v);
		else if (k == "--link")
			a.link = v;
		else if (k == "--via")
			a.via = v;
		else if (k == "--addr")
			a.addr = parse_addr(v);
		else if (k == "--bind")
			a.bind = parse_addr(v);
		else if (k == "--port")
			a.port = uint16_t(std::atoi(v));
		else if (k == "--repeat")
			a.repeat = std::atoi(v);
		else
			usage("unknown option " + k);
	}
	if (a.mode.empty())
		usage("say --write, --drive or --converge");
	return a;
}

memfed_conn *connect_daemon(const Args &a)
{
	if (a.socket.empty())
		usage("--socket names the car's memfedd");
	memfed_conn *m = nullptr;
	if (int rc = memfed_connect(a.socket.c_str(), &m); rc < 0)
		die("memfedd at " + a.socket + ": " + memfed_strerror(rc));
	return m;
}

std::vector<memfed_region *> open_regions(memfed_conn *m, const Args &a)
{
	if (a.regions.empty())
		usage("--regions names one region per lamp post");
	std::vector<memfed_region *> out;
	for (const auto &name : a.regions) {
		// A module the mesh just found again may not answer lookups yet.
		memfed_region *r = nullptr;
		int rc = 0;
		for (int tries = 0; tries < 100; tries++) {
			if ((rc = memfed_region_open(m, name.c_str(), &r)) == 0)
				break;
			std::this_thread::sleep_for(std::chrono::milliseconds(100));
		}
		if (rc < 0)
			die("region " + name + ": " + memfed_strerror(rc));
		out.push_back(r);
	}
	return out;
}

int write_records(const Args &a)
{
	memfed_conn *m = connect_daemon(a);
	auto regions = open_regions(m, a);
	for (size_t lamp = 0; lamp < regions.size(); lamp++) {
		std::vector<Obstacle> recs(kRecords);
		for (uint32_t i = 0; i < kRecords; i++)
			recs[i] = expected(uint16_t(lamp), i);
		int64_t n = memfed_region_write(regions[lamp], 0, recs.data(),
		                                recs.size() * sizeof(Obstacle));
		if (n != int64_t(recs.size() * sizeof(Obstacle)))
			die("writing the records of " + a.regions[lamp] + ": " +
			    (n < 0 ? memfed_strerror(int(n)) : "short write"));
	}
	std::printf("car: wrote %u obstacle records to each of %zu regions\n", kRecords,
	            regions.size());
	for (auto *r : regions)
		memfed_region_close(r);
	memfed_close(m);
	return 0;
}

// Where the car is after `t` seconds: it drives from lamp post 0 to the last
// and back, again and again; dir is +1 or -1.
double position(double t, double speed, double road, int *dir)
{
	double d = std::fmod(t * speed, 2 * road);
	*dir = d <= road ? 1 : -1;
	return d <= road ? d : 2 * road - d;
}

int drive(const Args &a)
{
	if (a.links.size() != a.regions.size() || a.links.size() < 2)
		usage("--links and --regions name one link and one region per lamp post (2 or "
		      "more)");
	if (a.speed_kmh <= 0 || a.spacing_m <= 0 || a.range_m < a.spacing_m / 2)
		usage("need --speed-kmh > 0 and --range-m >= --spacing-m / 2 (no gap between lamp "
		      "posts)");
	const double speed = a.speed_kmh / 3.6;
	const double road = a.spacing_m * double(a.links.size() - 1);
	const double seconds = a.seconds > 0 ? a.seconds : std::max(10.0, 2 * a.spacing_m / speed);
	memfed_conn *m = connect_daemon(a);
	auto regions = open_regions(m, a);
	const size_t lamps = a.links.size();

	// Start at lamp post 0, attached to it (and to any other in range).
	std::vector<bool> up(lamps);
	for (size_t i = 0; i < lamps; i++) {
		up[i] = double(i) * a.spacing_m <= a.range_m;
		set_link(a.links[i], up[i]);
	}
	// The mesh settles on that start before the clock runs: the links just
	// brought down would otherwise count as a handover.
	std::this_thread::sleep_for(std::chrono::seconds(2));
	std::atomic<int> ahead{1};
	std::atomic<bool> done{false};
	int handovers = 0;
	const auto t0 = Clock::now();

	// The reader: one record at a time from the lamp post ahead.
	uint64_t reads = 0, wrong = 0, unavailable = 0;
	double stall_ms = 0, stall_at_s = 0;
	int stall_lamp = -1;
	std::vector<double> lat_us;
	std::thread reader([&] {
		auto last_ok = Clock::now();
		uint32_t index = 0;
		while (!done.load()) {
			int lamp = ahead.load();
			index = (index + 97) % kRecords;
			Obstacle got{};
			auto start = Clock::now();
			int64_t n = memfed_region_read(regions[size_t(lamp)],
			                               uint64_t(index) * sizeof(Obstacle), &got,
			                               sizeof(got));
			auto end = Clock::now();
			if (n != int64_t(sizeof(got))) {
				unavailable++;
				if (unavailable <= 5)
					std::fprintf(stderr, "car: reading %s record %u: %s\n",
					             a.regions[size_t(lamp)].c_str(), index,
					             n < 0 ? memfed_strerror(int(n))
					                   : "short read");
				std::this_thread::sleep_for(std::chrono::milliseconds(1));
				continue;
			}
			Obstacle want = expected(uint16_t(lamp), index);
			if (std::memcmp(&got, &want, sizeof(got)) != 0 ||
			    got.checksum != fnv1a(&got, offsetof(Obstacle, checksum))) {
				wrong++;
				if (wrong <= 5)
					std::fprintf(stderr, "car: %s record %u has wrong bytes\n",
					             a.regions[size_t(lamp)].c_str(), index);
				continue;
			}
			reads++;
			lat_us.push_back(
			        std::chrono::duration<double, std::micro>(end - start).count());
			double gap =
			        std::chrono::duration<double, std::milli>(end - last_ok).count();
			if (gap > stall_ms) {
				stall_ms = gap;
				stall_at_s = std::chrono::duration<double>(end - t0).count();
				stall_lamp = lamp;
			}
			last_ok = end;
		}
	});

	// The radio: every millisecond, which lamp posts are in range.
	while (true) {
		double t = ms_since(t0) / 1000;
		if (t >= seconds)
			break;
		int dir = 1;
		double p = position(t, speed, road, &dir);
		for (size_t i = 0; i < lamps; i++) {
			bool in_range = std::fabs(p - double(i) * a.spacing_m) <= a.range_m;
			if (in_range != up[i]) {
				set_link(a.links[i], in_range);
				up[i] = in_range;
				handovers += in_range ? 1 : 0;
			}
		}
		// The lamp post ahead: the next one in the direction of travel.
		double ahead_at =
		        dir > 0 ? std::ceil(p / a.spacing_m) : std::floor(p / a.spacing_m);
		ahead.store(int(std::clamp(ahead_at, 0.0, double(lamps - 1))));
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	}
	done.store(true);
	reader.join();
	double elapsed = ms_since(t0) / 1000;
	std::sort(lat_us.begin(), lat_us.end());
	double p50 = lat_us.empty() ? 0 : lat_us[lat_us.size() / 2];
	std::printf(
	        "car: %.0f km/h reads %llu reads/s %.0f failed %llu wrong %llu unavailable %llu "
	        "stall_ms %.1f handovers %d read_p50_us %.0f seconds %.1f stall_end_s %.1f "
	        "stall_lamp %d\n",
	        a.speed_kmh, (unsigned long long)reads, double(reads) / elapsed,
	        (unsigned long long)(wrong + unavailable), (unsigned long long)wrong,
	        (unsigned long long)unavailable, stall_ms, handovers, p50, elapsed, stall_at_s,
	        stall_lamp);
	// Leave every link up: the mesh whole again for the next run.
	for (const auto &l : a.links)
		set_link(l, true);
	for (auto *r : regions)
		memfed_region_close(r);
	memfed_close(m);
	return 0;
}

int converge(const Args &a)
{
	if (a.link.empty() || a.port == 0)
		usage("--converge needs --link, --addr, --bind and --port");
	int ifindex = int(if_nametoindex(a.link.c_str()));
	if (ifindex == 0)
		die("no interface " + a.link + " in this namespace");
	if (!a.via.empty())
		set_link(a.via, true);
	for (int r = 0; r < a.repeat; r++) {
		set_link(a.link, false);
		auto gone = Clock::now();
		while (route_oif(a.addr) == ifindex) {
			if (ms_since(gone) > 10000)
				die("the route still goes out of " + a.link +
				    " 10 s after it went down");
			std::this_thread::sleep_for(std::chrono::milliseconds(1));
		}
		// Long enough for both ends to forget the neighbour and for the old
		// route (via --via) to settle.
		std::this_thread::sleep_for(std::chrono::milliseconds(1500));
		auto t0 = Clock::now();
		set_link(a.link, true);
		while (route_oif(a.addr) != ifindex) {
			if (ms_since(t0) > 30000)
				die("no route out of " + a.link + " 30 s after it came up");
			std::this_thread::sleep_for(std::chrono::microseconds(500));
		}
		double route_ms = ms_since(t0);
		while (!connects(a.bind, a.addr, a.port, 20)) {
			if (ms_since(t0) > 30000)
				die("no connection over " + a.link + " 30 s after it came up");
		}
		double usable_ms = ms_since(t0);
		std::printf("converge: route_ms %.1f usable_ms %.1f\n", route_ms, usable_ms);
		std::fflush(stdout);
	}
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	Args a = parse(argc, argv);
	if (a.mode == "write")
		return write_records(a);
	if (a.mode == "drive")
		return drive(a);
	return converge(a);
}
