// Markers for tests that run inside the QEMU guest.
//
// Each guest test prints exactly one line "MEMFED-TEST <name> PASS" or
// "MEMFED-TEST <name> FAIL", preceded by one "MEMFED-DETAIL <name>: ..." line
// per failed check. The host runner decides from these lines only.
// Single-threaded use.
#pragma once

#include <cstdio>
#include <string>

namespace memfed::guest
{

class Check
{
public:
	explicit Check(std::string name) : name_(std::move(name)) {}
	~Check()
	{
		std::printf("MEMFED-TEST %s %s\n", name_.c_str(), ok_ ? "PASS" : "FAIL"),
		        std::fflush(stdout);
	}
	Check(const Check &) = delete;
	Check &operator=(const Check &) = delete;

	// Records a failed check; returns cond so callers can stop early.
	bool operator()(bool cond, const std::string &what)
	{
		if (!cond) {
			ok_ = false;
			std::printf("MEMFED-DETAIL %s: %s\n", name_.c_str(), what.c_str());
			std::fflush(stdout);
		}
		return cond;
	}
	bool ok() const { return ok_; }

private:
	std::string name_;
	bool ok_ = true;
};

} // namespace memfed::guest
