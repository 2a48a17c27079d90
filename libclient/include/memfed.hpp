// memfed.hpp: the C++ API of libmemfed, a header-only layer over memfed.h.
//
// Same model as the C API (connect, create/open regions, map them, sync, EVAs)
// with RAII handles and errors as values: every fallible call returns a
// memfed::api::Expected<T> (a T or an Error with the errno value and memfed's
// message); nothing throws. Link as for the C API (pkg-config memfed, or
// CMake memfed::memfed). Man page: libmemfed(3).
//
// Thread-safety: as memfed.h. A Connection may be shared between threads;
// Region and Mapping objects are used by one thread at a time, and must not
// outlive the Connection they came from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include "memfed.h"

namespace memfed::api
{

// Why a call failed: the errno value of the C call and memfed's message.
class Error
{
public:
	// `err`: the errno value, negative as a C call returns it or positive.
	Error(int err, std::string message)
	    : errnum_(err < 0 ? -err : err), msg_(std::move(message))
	{
	}
	// The last failure of this thread (after a C call returned `rc` < 0).
	static Error last(int rc) { return Error(rc, memfed_strerror(rc)); }
	// Positive errno value (ENOENT, ...); the C call returned its negation.
	int errnum() const { return errnum_; }
	// The same as a std::error_code, to compare with std::errc values:
	// e.code() == std::errc::no_such_file_or_directory.
	std::error_code code() const { return std::error_code(errnum_, std::generic_category()); }
	// memfed's message ("region 'cfg' not found on any module (...)").
	const std::string &message() const { return msg_; }
	// "<message> (<strerror text>)", or the strerror text alone if the
	// message is no more than that.
	std::string to_string() const
	{
		std::string sys = code().message();
		return msg_.empty() || msg_ == sys ? sys : msg_ + " (" + sys + ")";
	}

private:
	int errnum_;
	std::string msg_;
};

// A T or the Error that explains why there is none.
template <typename T> class [[nodiscard]] Expected
{
public:
	Expected(T value) : v_(std::move(value)) {}
	Expected(Error e) : v_(std::move(e)) {}
	bool ok() const { return v_.index() == 0; }
	explicit operator bool() const { return ok(); }
	// REQUIRES: ok().
	T &value() { return std::get<0>(v_); }
	const T &value() const { return std::get<0>(v_); }
	T &operator*() { return value(); }
	T *operator->() { return &value(); }
	// REQUIRES: !ok().
	const Error &error() const { return std::get<1>(v_); }

private:
	std::variant<T, Error> v_;
};

// For calls that return nothing: ok() or an Error.
struct Done {
};

using RegionInfo = memfed_region_info;

// A mapped range of a region; unmapped (after writing back) on destruction.
class Mapping
{
public:
	Mapping() = default;
	Mapping(memfed_conn *m, void *addr, size_t size) : m_(m), addr_(addr), size_(size) {}
	~Mapping() { reset(); }
	Mapping(Mapping &&o) noexcept { *this = std::move(o); }
	Mapping &operator=(Mapping &&o) noexcept
	{
		if (this != &o) {
			reset();
			std::swap(m_, o.m_);
			std::swap(addr_, o.addr_);
			std::swap(size_, o.size_);
		}
		return *this;
	}
	Mapping(const Mapping &) = delete;
	Mapping &operator=(const Mapping &) = delete;

	void *data() const { return addr_; }
	size_t size() const { return size_; }
	template <typename T> T *as() const { return static_cast<T *>(addr_); }
	// Makes [offset, offset+length) durable (length 0: everything).
	Expected<Done> sync(size_t offset = 0, size_t length = 0) const
	{
		int rc = memfed_sync(m_, static_cast<char *>(addr_) + offset,
		                     length == 0 && offset == 0 ? 0 : length);
		if (rc < 0)
			return Error::last(rc);
		return Done{};
	}
	// Unmaps now and reports the outcome (the destructor cannot).
	Expected<Done> unmap()
	{
		if (!addr_)
			return Done{};
		int rc = memfed_unmap(m_, addr_);
		addr_ = nullptr;
		if (rc < 0)
			return Error::last(rc);
		return Done{};
	}

private:
	void reset()
	{
		if (addr_)
			(void)memfed_unmap(m_, addr_);
		addr_ = nullptr;
	}
	memfed_conn *m_ = nullptr;
	void *addr_ = nullptr;
	size_t size_ = 0;
};

// An opened region.
class Region
{
public:
	Region() = default;
	explicit Region(memfed_region *r) : r_(r) {}
	~Region() { memfed_region_close(r_); }
	Region(Region &&o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
	Region &operator=(Region &&o) noexcept
	{
		std::swap(r_, o.r_);
		return *this;
	}
	Region(const Region &) = delete;
	Region &operator=(const Region &) = delete;

	// Fresh description from the daemon.
	Expected<RegionInfo> stat() const
	{
		RegionInfo info{};
		int rc = memfed_region_stat(r_, &info);
		if (rc < 0)
			return Error::last(rc);
		return info;
	}
	// Maps [offset, offset+length) (length 0: to the end); see memfed_map().
	Expected<Mapping> map(uint64_t offset = 0, uint64_t length = 0,
	                      unsigned flags = MEMFED_MAP_WRITE, uint64_t budget = 0) const
	{
		memfed_map_opts o{};
		o.flags = flags;
		o.budget = budget;
		void *addr = nullptr;
		int rc = memfed_map_ex(r_, offset, length, &o, &addr);
		if (rc < 0)
			return Error::last(rc);
		uint64_t size = length;
		if (size == 0) {
			RegionInfo info{};
			if (memfed_region_stat(r_, &info) == 0)
				size = info.size - offset;
		}
		return Mapping(connection_of(), addr, size);
	}
	// Reads or writes through the daemon without mapping.
	Expected<size_t> read(uint64_t offset, void *buf, size_t length) const
	{
		int64_t n = memfed_region_read(r_, offset, buf, length);
		if (n < 0)
			return Error::last(int(n));
		return size_t(n);
	}
	Expected<size_t> write(uint64_t offset, const void *buf, size_t length) const
	{
		int64_t n = memfed_region_write(r_, offset, buf, length);
		if (n < 0)
			return Error::last(int(n));
		return size_t(n);
	}
	memfed_region *get() const { return r_; }

private:
	friend class Connection;
	memfed_conn *connection_of() const { return conn_; }
	Region(memfed_region *r, memfed_conn *m) : r_(r), conn_(m) {}
	memfed_region *r_ = nullptr;
	memfed_conn *conn_ = nullptr;
};

// A connection to memfedd.
class Connection
{
public:
	// Connects to `socket_path` ("" : $MEMFED_SOCKET or the default path).
	static Expected<Connection> connect(const std::string &socket_path = "")
	{
		memfed_conn *m = nullptr;
		int rc = memfed_connect(socket_path.empty() ? nullptr : socket_path.c_str(), &m);
		if (rc < 0)
			return Error::last(rc);
		return Connection(m);
	}
	Connection(Connection &&o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
	Connection &operator=(Connection &&o) noexcept
	{
		std::swap(m_, o.m_);
		return *this;
	}
	Connection(const Connection &) = delete;
	Connection &operator=(const Connection &) = delete;
	~Connection() { memfed_close(m_); }

	Expected<RegionInfo> create_region(const std::string &name, uint64_t size,
	                                   uint32_t mode = 0600)
	{
		RegionInfo info{};
		int rc = memfed_region_create(m_, name.c_str(), size, mode, &info);
		if (rc < 0)
			return Error::last(rc);
		return info;
	}
	Expected<Done> delete_region(const std::string &name)
	{
		int rc = memfed_region_delete(m_, name.c_str());
		if (rc < 0)
			return Error::last(rc);
		return Done{};
	}
	Expected<std::vector<RegionInfo>> list_regions()
	{
		std::vector<RegionInfo> out;
		int rc = memfed_region_list(
		        m_,
		        [](const memfed_region_info *i, void *arg) {
			        static_cast<std::vector<RegionInfo> *>(arg)->push_back(*i);
			        return 0;
		        },
		        &out);
		if (rc < 0)
			return Error::last(rc);
		return out;
	}
	Expected<Region> open_region(const std::string &name)
	{
		memfed_region *r = nullptr;
		int rc = memfed_region_open(m_, name.c_str(), &r);
		if (rc < 0)
			return Error::last(rc);
		return Region(r, m_);
	}
	// EVA of the first byte of region `name` (gives it a window if needed).
	Expected<uint64_t> window(const std::string &name)
	{
		uint64_t eva = 0;
		int rc = memfed_window_open(m_, name.c_str(), &eva);
		if (rc < 0)
			return Error::last(rc);
		return eva;
	}
	// Local pointer for an EVA (maps its window on first use).
	template <typename T = void> Expected<T *> eva_to_ptr(uint64_t eva)
	{
		void *p = nullptr;
		int rc = memfed_eva_to_ptr(m_, eva, &p);
		if (rc < 0)
			return Error::last(rc);
		return static_cast<T *>(p);
	}
	Expected<uint64_t> ptr_to_eva(const void *p)
	{
		uint64_t eva = 0;
		int rc = memfed_ptr_to_eva(m_, p, &eva);
		if (rc < 0)
			return Error::last(rc);
		return eva;
	}
	memfed_conn *get() const { return m_; }

private:
	explicit Connection(memfed_conn *m) : m_(m) {}
	memfed_conn *m_ = nullptr;
};

} // namespace memfed::api
