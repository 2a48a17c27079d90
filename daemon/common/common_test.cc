#include <catch2/catch.hpp>

#include <cstring>

#include <unistd.h>

#include "daemon/common/crc32c.h"
#include "daemon/common/ids.h"
#include "daemon/common/proc_stat.h"
#include "daemon/common/status.h"

using namespace memfed;

TEST_CASE("crc32c matches the standard check value")
{
	const char *s = "123456789";
	REQUIRE(crc32c(s, 9) == 0xe3069283u);
	// Incremental equals one-shot; odd lengths exercise the byte tail.
	REQUIRE(crc32c(s + 4, 5, crc32c(s, 4)) == 0xe3069283u);
	uint8_t zeros[4096] = {};
	REQUIRE(crc32c(zeros, sizeof(zeros)) != 0);
}

TEST_CASE("crc32c: short buffers (the crc32 instruction) agree with long ones (ISA-L)")
{
	// A short buffer's crc, continued over the rest, must give the crc of
	// the whole whichever code computed each part.
	unsigned char buf[1000];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = static_cast<unsigned char>(i * 131 + 7);
	uint32_t whole = crc32c(buf, sizeof(buf));
	for (size_t split : {0, 1, 7, 8, 60, 64, 127, 128, 129, 200})
		CHECK(crc32c(buf + split, sizeof(buf) - split, crc32c(buf, split)) == whole);
	for (size_t len = 0; len <= 300; len++) {
		uint32_t bytewise = 0;
		for (size_t i = 0; i < len; i++)
			bytewise = crc32c(buf + i, 1, bytewise);
		INFO("length " << len);
		CHECK(crc32c(buf, len) == bytewise);
	}
}

TEST_CASE("crc32c_combine gives the crc of the concatenation")
{
	uint8_t buf[3 * 4096 + 13];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = uint8_t(i * 131 + (i >> 9));
	// Whole pages (the table path) and other lengths (the generic path).
	for (size_t split : {size_t{4096}, size_t{2 * 4096}, size_t{1}, size_t{777}}) {
		size_t len_b = sizeof(buf) - split;
		uint32_t a = crc32c(buf, split), b = crc32c(buf + split, len_b);
		CHECK(crc32c_combine(a, b, len_b) == crc32c(buf, sizeof(buf)));
	}
	uint32_t c = 0;
	for (size_t p = 0; p < 3; p++)
		c = crc32c_combine(c, crc32c(buf + p * 4096, 4096), 4096);
	CHECK(c == crc32c(buf, 3 * 4096));
	CHECK(crc32c_combine(crc32c(buf, 10), 0, 0) == crc32c(buf, 10));
}

TEST_CASE("module ids round-trip and reject malformed text")
{
	auto id = ModuleId::parse("02:00:00:00:00:01");
	REQUIRE(id);
	REQUIRE(id->value == 0x020000000001ull);
	REQUIRE(id->to_string() == "02:00:00:00:00:01");
	REQUIRE_FALSE(ModuleId::parse("02:00:00:00:00"));
	REQUIRE_FALSE(ModuleId::parse("02-00-00-00-00-01"));
	REQUIRE_FALSE(ModuleId::parse("0g:00:00:00:00:01"));
	REQUIRE_FALSE(ModuleId::parse("00:00:00:00:00:00")); // zero is "none"
	for (int i = 0; i < 100; i++) {
		ModuleId r = ModuleId::random();
		REQUIRE(r.valid());
		REQUIRE(((r.value >> 40) & 0x03) == 0x02); // local, unicast
		REQUIRE(ModuleId::parse(r.to_string())->value == r.value);
	}
}

TEST_CASE("federated addresses have one text form")
{
	auto fa = FederatedAddress::parse("02:00:00:00:00:01/0x200000");
	REQUIRE(fa);
	REQUIRE(fa->offset == 0x200000);
	REQUIRE(fa->to_string() == "02:00:00:00:00:01/0x200000");
	REQUIRE_FALSE(FederatedAddress::parse("02:00:00:00:00:01/200000"));
	REQUIRE_FALSE(FederatedAddress::parse("02:00:00:00:00:01/0x"));
	REQUIRE_FALSE(FederatedAddress::parse("02:00:00:00:00:01/0x12345678901234567"));
}

TEST_CASE("status carries a code and a message")
{
	Status st = Status::from_errno(ENOENT, "opening pool /x");
	REQUIRE(st.code() == Code::kNotFound);
	REQUIRE(st.to_string() ==
	        std::string("not_found: opening pool /x: ") + std::strerror(ENOENT));
	REQUIRE(code_from_name(code_name(Code::kNoSpace)) == Code::kNoSpace);
	REQUIRE(Status().is_ok());
}

#include "daemon/common/size.h"

TEST_CASE("sizes parse like people write them")
{
	REQUIRE(parse_size("4096") == 4096u);
	REQUIRE(parse_size("64K") == 65536u);
	REQUIRE(parse_size("512M") == 512ull << 20);
	REQUIRE(parse_size("1GiB") == 1ull << 30);
	REQUIRE(parse_size("2t") == 2ull << 40);
	REQUIRE(parse_size("10B") == 10u);
	REQUIRE_FALSE(parse_size(""));
	REQUIRE_FALSE(parse_size("M"));
	REQUIRE_FALSE(parse_size("12Q"));
	REQUIRE_FALSE(parse_size("1GG"));
	REQUIRE_FALSE(parse_size("99999999999999999999"));
	REQUIRE_FALSE(parse_size("16777216T"));
	REQUIRE(format_size(1ull << 30) == "1G");
	REQUIRE(format_size(1536) == "1536");
	REQUIRE(format_size(3ull << 20) == "3M");
	REQUIRE(human_size(1068367872) == "1018.9M");
	REQUIRE(human_size(4096) == "4K");
	REQUIRE(human_size(100) == "100");
}

TEST_CASE("proc_stat_fields reads fields after a name with spaces and parentheses", "[common]")
{
	char path[] = "/tmp/memfed-proc-stat-XXXXXX";
	int fd = mkstemp(path);
	REQUIRE(fd >= 0);
	const char line[] = "4242 (a ) b (c) 99) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
	                    "17 23 0 0 20 0 1 0 123456 1000 10\n";
	REQUIRE(write(fd, line, sizeof(line) - 1) == ssize_t(sizeof(line) - 1));
	close(fd);
	auto f = memfed::proc_stat_fields(path);
	REQUIRE(f.size() == 22); // fields 3 to 24
	CHECK(f[0] == "S");
	CHECK(memfed::proc_stat_number(f, 14) == 17);     // utime
	CHECK(memfed::proc_stat_number(f, 15) == 23);     // stime
	CHECK(memfed::proc_stat_number(f, 22) == 123456); // starttime
	CHECK(memfed::proc_stat_number(f, 99) == 0);
	unlink(path);
	CHECK(memfed::proc_stat_fields(path).empty());
	// The real thing: this process started after boot.
	auto self = memfed::proc_stat_fields("/proc/self/stat");
	CHECK(memfed::proc_stat_number(self, 22) > 0);
}
