// Clang's thread-safety annotations, so the compiler checks what a comment
// could only claim: which mutex guards a field (GUARDED_BY), which a function
// needs held (REQUIRES) or takes (ACQUIRE/RELEASE). Checked by clang with
// -Wthread-safety (the asan build); empty for other compilers.
//
// std::mutex carries no annotations, so guarded state uses Mutex and
// MutexLock below (a std::mutex and a lock_guard that clang can follow).
#pragma once

#include <mutex>

#if defined(__clang__)
#define MF_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define MF_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) MF_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY MF_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) MF_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) MF_THREAD_ANNOTATION(pt_guarded_by(x))
#define REQUIRES(...) MF_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) MF_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) MF_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define EXCLUDES(...) MF_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS MF_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace memfed
{

// A std::mutex clang's analysis knows as a capability.
class CAPABILITY("mutex") Mutex
{
public:
	void lock() ACQUIRE() { mu_.lock(); }
	void unlock() RELEASE() { mu_.unlock(); }
	// For condition variables: the mutex underneath.
	std::mutex &native() { return mu_; }

private:
	std::mutex mu_;
};

// Holds a Mutex for its scope (or until unlock()).
class SCOPED_CAPABILITY MutexLock
{
public:
	explicit MutexLock(Mutex *mu) ACQUIRE(mu) : mu_(mu) { mu_->lock(); }
	~MutexLock() RELEASE()
	{
		if (held_)
			mu_->unlock();
	}
	void unlock() RELEASE()
	{
		held_ = false;
		mu_->unlock();
	}
	MutexLock(const MutexLock &) = delete;
	MutexLock &operator=(const MutexLock &) = delete;

private:
	Mutex *mu_;
	bool held_ = true;
};

} // namespace memfed
