// Regions as files for programs that know nothing of memfed: opening a path
// under the run's prefix (/memfed/NAME) or one given with --map PATH=NAME
// opens region NAME. Every access to the bytes -- read, pread, write, pwrite,
// mmap, msync, fsync -- goes through a mapping that the pager serves, so file
// I/O and mappings see the same pages.
//
// A region is a regular file whose length (the region's "length", kept by
// its module) may be anything up to the region's size: writes past the end
// grow it, ftruncate sets it, O_TRUNC empties it, and bytes past a shorter
// end read as zeros when the file grows again. A write or ftruncate beyond
// the region's size fails with EFBIG. The descriptor the program gets is a
// fresh open of an empty memfd whose size is the file's length, shared by
// every descriptor of the region in the process (and its forks), so fstat,
// lseek, dup and fork behave natively; lseek's SEEK_DATA and SEEK_HOLE
// see a file without holes, and copy_file_range and sendfile refuse
// (EXDEV, EINVAL) so that callers fall back to read and write.
//
// Lengths are shared like NFS's close-to-open: a process learns the length
// when it first opens the region, and the module learns of growth at fsync,
// at the last close and at exit (ftruncate tells it at once). A process
// killed before then leaves the module with the shorter length.
//
// Opening with O_CREAT a region that does not exist fails with ENOENT
// (create it with memfedctl region create NAME SIZE --length 0), and with
// O_CREAT|O_EXCL one that does with EEXIST; O_DIRECTORY gets ENOTDIR.
//
// Thread-safety: all hooks are thread-safe.
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace memfed::preload
{

// Takes over the fds of regions this process inherited across exec (a
// shell's `<` and `>`), so that their reads and writes reach the region.
// Called once by the shim's constructor; REQUIRES: InternalScope.
void file_adopt_inherited();
// True if `fd` was opened through a memfed path.
bool file_is_memfed(int fd);
// mmap of such an fd: a pager-served shared mapping of the region.
void *file_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
// munmap of a mapping file_mmap made (true: handled).
bool file_munmap(void *addr, size_t len);

} // namespace memfed::preload
