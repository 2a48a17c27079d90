// write_file_atomic: replace (or create) a file so that a reader, or a crash,
// sees either the old content or the new, never a mix: the content goes to a
// temporary file beside it, is fsynced, and is renamed over the path (or
// linked in, when an existing file must not be replaced), and the directory
// is fsynced.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "daemon/common/status.h"

namespace memfed
{

struct AtomicWrite {
	mode_t mode = 0644;     // the new file's mode (umask does not apply)
	bool replace = true;    // false: kAlreadyExists if `path` exists
	bool keep_owner = true; // a replaced file keeps its owner, group and mode
};

// `what` names the file in errors ("config file", "node key").
Status write_file_atomic(const std::string &path, std::string_view content, const AtomicWrite &how,
                         const std::string &what);

} // namespace memfed
