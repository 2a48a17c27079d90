// write_file_atomic; see atomic_file.h.
#include "daemon/common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace memfed
{

namespace
{

std::string dir_of(const std::string &path)
{
	auto slash = path.rfind('/');
	if (slash == std::string::npos)
		return ".";
	return slash == 0 ? "/" : path.substr(0, slash);
}

} // namespace

Status write_file_atomic(const std::string &path, std::string_view content, const AtomicWrite &how,
                         const std::string &what)
{
	mode_t mode = how.mode;
	uid_t uid = uid_t(-1);
	gid_t gid = gid_t(-1);
	struct stat old;
	if (::stat(path.c_str(), &old) == 0) {
		if (!how.replace)
			return Status(Code::kAlreadyExists, what + " " + path + " exists");
		if (how.keep_owner) {
			mode = old.st_mode & 07777;
			uid = old.st_uid;
			gid = old.st_gid;
		}
	}
	std::string tmp = path + ".tmp";
	::unlink(tmp.c_str());
	int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return Status::from_errno(errno, "writing " + what + " " + path +
		                                         " (creating its temporary file " + tmp +
		                                         ")");
	bool ok = ::fchmod(fd, mode) == 0;
	if (ok && uid != uid_t(-1) && (uid != ::geteuid() || gid != ::getegid()))
		ok = ::fchown(fd, uid, gid) == 0;
	size_t done = 0;
	while (ok && done < content.size()) {
		ssize_t n = ::write(fd, content.data() + done, content.size() - done);
		if (n < 0 && errno == EINTR)
			continue;
		ok = n > 0;
		if (ok)
			done += size_t(n);
	}
	ok = ok && ::fsync(fd) == 0;
	int e = errno;
	::close(fd);
	if (ok) {
		// link() fails with EEXIST where rename() would replace.
		ok = how.replace ? ::rename(tmp.c_str(), path.c_str()) == 0
		                 : ::link(tmp.c_str(), path.c_str()) == 0;
		e = errno;
		if (ok && !how.replace)
			::unlink(tmp.c_str());
	}
	if (!ok) {
		::unlink(tmp.c_str());
		if (e == EEXIST)
			return Status(Code::kAlreadyExists, what + " " + path + " exists");
		return Status::from_errno(e, "writing " + what + " " + path);
	}
	int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		::fsync(dfd);
		::close(dfd);
	}
	return Status::ok();
}

} // namespace memfed
