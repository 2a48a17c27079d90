// Regions as files for programs that know nothing of memfed: opening a path
// under the run's prefix (/memfed/NAME) or one given with --map PATH=NAME
// opens region NAME. The descriptor the program gets is a duplicate of the
// region's memfd (so fstat, lseek, dup and fork behave natively: a regular
// file whose size is the region's), while every access to the bytes -- read,
// pread, write, pwrite, mmap, msync, fsync -- goes through a mapping that the
// pager serves, so file I/O and mappings see the same pages.
//
// A region has a fixed size: ftruncate to another size fails with EINVAL and
// writes past the end with EFBIG; O_TRUNC keeps the bytes. Opening with
// O_CREAT a region that does not exist fails with ENOENT (create it with
// memfedctl region create NAME SIZE).
//
// Thread-safety: all hooks are thread-safe.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace memfed::preload
{

// True if `fd` was opened through a memfed path.
bool file_is_memfed(int fd);
// mmap of such an fd: a pager-served shared mapping of the region.
void *file_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
// munmap of a mapping file_mmap made (true: handled).
bool file_munmap(void *addr, size_t len);

} // namespace memfed::preload
