#include "daemon/common/status.h"

#include <cstring>
#include <string>

namespace memfed
{

namespace
{
struct CodeName {
	Code code;
	const char *name;
};
constexpr CodeName kNames[] = {
        {Code::kOk, "ok"},
        {Code::kInvalidArgument, "invalid_argument"},
        {Code::kNotFound, "not_found"},
        {Code::kAlreadyExists, "already_exists"},
        {Code::kNoSpace, "no_space"},
        {Code::kPermission, "permission"},
        {Code::kCorrupt, "corrupt"},
        {Code::kIo, "io"},
        {Code::kBusy, "busy"},
        {Code::kUnavailable, "unavailable"},
        {Code::kProtocol, "protocol"},
        {Code::kOutOfRange, "out_of_range"},
        {Code::kInternal, "internal"},
        {Code::kQuota, "quota"},
};
} // namespace

const char *code_name(Code c)
{
	for (const auto &n : kNames)
		if (n.code == c)
			return n.name;
	return "internal";
}

Code code_from_name(const std::string &name)
{
	for (const auto &n : kNames)
		if (name == n.name)
			return n.code;
	return Code::kInternal;
}

Status Status::from_errno(int err, const std::string &what)
{
	Code c = Code::kIo;
	switch (err) {
	case EACCES:
	case EPERM:
		c = Code::kPermission;
		break;
	case ENOENT:
		c = Code::kNotFound;
		break;
	case EEXIST:
		c = Code::kAlreadyExists;
		break;
	case ENOSPC:
		c = Code::kNoSpace;
		break;
	case EADDRINUSE:
	case EBUSY:
	case EWOULDBLOCK:
		c = Code::kBusy;
		break;
	case ECONNREFUSED:
	case ECONNRESET:
	case EPIPE:
	case ETIMEDOUT:
		c = Code::kUnavailable;
		break;
	case EINVAL:
		c = Code::kInvalidArgument;
		break;
	default:
		break;
	}
	// strerrordesc_np, not strerror: the English text without gettext,
	// whose lookup reads the program's translation bindings. A preloaded
	// program keeps those on remote memory, and libmemfed's reconnecting
	// thread must not touch it (libclient/pager_link.cc).
	const char *desc = strerrordesc_np(err);
	return Status(c, what + ": " + (desc ? desc : "errno " + std::to_string(err)));
}

std::string Status::to_string() const
{
	if (is_ok())
		return "ok";
	return std::string(code_name(code_)) + ": " + msg_;
}

} // namespace memfed
