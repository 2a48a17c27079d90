// ZeroedAllocator: storage for per-page arrays that cost memory only where
// written.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <new>
#include <utility>

namespace memfed::pager
{

// A program's heap is mapped whole, at a size no program reaches (memfedctl
// run --heap-size: tens of GiB, millions of pages) of which it uses a part,
// and the pager keeps arrays with an element per page of it (mapping.h,
// refault.h). Their storage comes from mmap, whose pages read as zeros (for
// a Page: kRemote, no flags, the default) and take memory only once
// written, and default construction writes nothing. REQUIRES: a vector using
// it is sized once (resize on a fresh vector), never shrunk and regrown.
template <typename T> struct ZeroedAllocator {
	using value_type = T;
	ZeroedAllocator() = default;
	template <typename U> ZeroedAllocator(const ZeroedAllocator<U> &) {}
	T *allocate(size_t n)
	{
		void *p = mmap(nullptr, n * sizeof(T), PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			throw std::bad_alloc();
		return static_cast<T *>(p);
	}
	void deallocate(T *p, size_t n) { munmap(p, n * sizeof(T)); }
	template <typename U> void construct(U *) noexcept
	{
		// Already zeros (see above).
	}
	template <typename U, typename... A> void construct(U *p, A &&...a)
	{
		::new (static_cast<void *>(p)) U(std::forward<A>(a)...);
	}
	template <typename U> bool operator==(const ZeroedAllocator<U> &) const { return true; }
};

} // namespace memfed::pager
