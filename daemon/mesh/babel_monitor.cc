#include "daemon/mesh/babel_monitor.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "daemon/common/log.h"

namespace memfed::mesh
{
namespace
{

int connect_unix(const std::string &path)
{
	sockaddr_un sa{};
	sa.sun_family = AF_UNIX;
	if (path.size() >= sizeof(sa.sun_path))
		return -1;
	std::memcpy(sa.sun_path, path.data(), path.size());
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

} // namespace

Status BabelMonitor::start()
{
	stop_fd_ = eventfd(0, EFD_CLOEXEC);
	if (stop_fd_ < 0)
		return Status::from_errno(errno, "eventfd");
	thread_ = std::thread([this] { run(); });
	return Status::ok();
}

void BabelMonitor::stop()
{
	if (stop_fd_ < 0)
		return;
	uint64_t one = 1;
	(void)!write(stop_fd_, &one, sizeof(one));
	if (thread_.joinable())
		thread_.join();
	close(stop_fd_);
	stop_fd_ = -1;
}

void BabelMonitor::run()
{
	bool was_up = false;
	while (true) {
		int fd = connect_unix(path_);
		if (fd >= 0) {
			LOG_DEBUG("mesh", "following babeld at %s", path_.c_str());
			was_up = true;
			std::string why = follow(fd);
			close(fd);
			if (why.empty())
				return; // stopped
			on_lost_(why);
		} else if (was_up) {
			was_up = false;
		}
		pollfd p{stop_fd_, POLLIN, 0};
		if (poll(&p, 1, 100) > 0)
			return;
	}
}

std::string BabelMonitor::follow(int fd)
{
	static const char kMonitor[] = "monitor\n";
	if (send(fd, kMonitor, sizeof(kMonitor) - 1, MSG_NOSIGNAL) < 0)
		return std::string("cannot talk to babeld: ") + strerror(errno);
	std::string buf;
	char chunk[4096];
	while (true) {
		pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return std::string("poll: ") + strerror(errno);
		}
		if (p[1].revents)
			return "";
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n == 0)
			return "babeld closed its local socket";
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return std::string("reading babeld: ") + strerror(errno);
		}
		buf.append(chunk, size_t(n));
		size_t start = 0;
		for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
			auto ev = parse_babel_line(std::string_view(buf).substr(start, nl - start));
			if (!ev) {
				LOG_WARN("mesh", "%s", ev.status().message().c_str());
				continue;
			}
			if (ev->object != BabelEvent::Object::kOther)
				on_event_(*ev);
		}
		buf.erase(0, start);
		if (buf.size() > kMaxBabelLine)
			return "babeld sent a line longer than " + std::to_string(kMaxBabelLine) +
			       " bytes";
	}
}

} // namespace memfed::mesh
