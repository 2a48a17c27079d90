// Status: the result of an operation that can fail, carried as a value.
//
// Errors never cross a module boundary as exceptions. A Status is either OK or
// a Code plus a one-line message that names the thing that failed and, where
// there is one, the fix ("region 'cfg' not found on module 02:00:00:00:00:01").
// Each Code maps to a distinct process exit code for the command-line tools.
#pragma once

#include <string>
#include <utility>

namespace memfed {

enum class Code : int {
	kOk = 0,
	kInvalidArgument = 2, // bad input from a user, a file or a peer
	kNotFound = 3,
	kAlreadyExists = 4,
	kNoSpace = 5,
	kPermission = 6,
	kCorrupt = 7, // on-media data failed a check
	kIo = 8,	  // a system call failed
	kBusy = 9,	  // held by someone else (pool lock, port in use)
	kUnavailable = 10, // peer unreachable, daemon not running
	kProtocol = 11,	   // a peer broke the wire or control protocol
	kOutOfRange = 12,  // access past the end of a region
	kInternal = 13,
	kQuota = 14,	   // a per-uid (or per-node) quota would be exceeded
};

// Stable lower-case name of a code, used in JSON output and logs.
const char *code_name(Code c);
// Inverse of code_name; kInternal for unknown names.
Code code_from_name(const std::string &name);

class [[nodiscard]] Status {
public:
	Status() = default;
	Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}

	static Status ok() { return Status(); }
	// errno-based failure: "<what>: <strerror(err)>".
	static Status from_errno(int err, const std::string &what);

	bool is_ok() const { return code_ == Code::kOk; }
	explicit operator bool() const { return is_ok(); }
	Code code() const { return code_; }
	const std::string &message() const { return msg_; }
	// "<code name>: <message>" or "ok".
	std::string to_string() const;
	// Distinct exit code for CLI tools (0 for OK).
	int exit_code() const { return static_cast<int>(code_); }

private:
	Code code_ = Code::kOk;
	std::string msg_;
};

// Result<T>: a value or the Status that explains why there is none.
template <typename T> class [[nodiscard]] Result {
public:
	Result(T value) : value_(std::move(value)), has_(true) {}
	Result(Status s) : status_(std::move(s)) {}

	bool is_ok() const { return has_; }
	explicit operator bool() const { return has_; }
	const Status &status() const { return status_; }
	T &value() { return value_; }
	const T &value() const { return value_; }
	T &operator*() { return value_; }
	T *operator->() { return &value_; }
	const T *operator->() const { return &value_; }

private:
	T value_{};
	Status status_;
	bool has_ = false;
};

} // namespace memfed

// Return early from the enclosing function if `expr` is not OK.
#define MF_RETURN_IF_ERROR(expr)                                               \
	do {                                                                   \
		::memfed::Status _mf_st = (expr);                              \
		if (!_mf_st.is_ok())                                           \
			return _mf_st;                                         \
	} while (0)
