#include "daemon/control/client.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace memfed::control {

std::string default_socket_path()
{
	const char *env = std::getenv("MEMFED_SOCKET");
	return env && *env ? env : kDefaultSocketPath;
}

Client::~Client()
{
	if (fd_ >= 0)
		close(fd_);
}

Client::Client(Client &&o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }

Client &Client::operator=(Client &&o) noexcept
{
	if (this != &o) {
		if (fd_ >= 0)
			close(fd_);
		fd_ = o.fd_;
		path_ = std::move(o.path_);
		o.fd_ = -1;
	}
	return *this;
}

Result<Client> Client::connect(const std::string &path)
{
	sockaddr_un sa{};
	sa.sun_family = AF_UNIX;
	if (path.size() >= sizeof(sa.sun_path))
		return Status(Code::kInvalidArgument, "control socket path '" + path + "' is too long");
	std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return Status::from_errno(errno, "creating control socket");
	if (::connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) < 0) {
		int err = errno;
		close(fd);
		if (err == ENOENT || err == ECONNREFUSED)
			return Status(Code::kUnavailable,
				      "memfedd is not running at " + path +
					      " (start memfedd, or point --socket/MEMFED_SOCKET at its socket)");
		return Status::from_errno(err, "connecting to " + path);
	}
	Client c;
	c.fd_ = fd;
	c.path_ = path;
	return c;
}

Result<Message> Client::call(const Message &req)
{
	if (fd_ < 0)
		return Status(Code::kUnavailable, "control client is not connected");
	MF_RETURN_IF_ERROR(send_message(fd_, req));
	return recv_message(fd_);
}

Result<Message> Client::call_ok(const Message &req)
{
	auto r = call(req);
	if (!r)
		return r;
	Status st = reply_status(*r);
	if (!st)
		return st;
	return r;
}

Status for_each_region(Client &c, const std::string &prefix,
		       const std::function<void(const nlohmann::json &)> &fn)
{
	std::string after;
	while (true) {
		Message req;
		req.body = {{"op", "region.list"}};
		if (!prefix.empty())
			req.body["prefix"] = prefix;
		if (!after.empty())
			req.body["after"] = after;
		auto r = c.call_ok(req);
		if (!r)
			return r.status();
		auto regions = r->body.find("regions");
		if (regions == r->body.end() || !regions->is_array())
			return Status(Code::kProtocol, "region.list reply lacks \"regions\"");
		for (const auto &reg : *regions)
			fn(reg);
		auto next = r->body.find("next");
		if (!r->body.value("more", false) || next == r->body.end() || !next->is_string() ||
		    next->get<std::string>() <= after)
			return Status::ok();
		after = next->get<std::string>();
	}
}

} // namespace memfed::control
