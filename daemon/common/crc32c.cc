#include "daemon/common/crc32c.h"

#include <array>
#include <cstring>

namespace memfed {

namespace {

constexpr uint32_t kPoly = 0x82f63b78; // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> make_table()
{
	std::array<uint32_t, 256> t{};
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
		t[i] = c;
	}
	return t;
}
constexpr auto kTable = make_table();

uint32_t crc_soft(const uint8_t *p, size_t len, uint32_t crc)
{
	while (len--)
		crc = kTable[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

__attribute__((target("sse4.2"))) uint32_t crc_hw(const uint8_t *p, size_t len, uint32_t crc)
{
	uint64_t c = crc;
	while (len >= 8) {
		uint64_t v;
		std::memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	uint32_t c32 = uint32_t(c);
	while (len--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32;
}

const bool kHaveHw = __builtin_cpu_supports("sse4.2");

} // namespace

uint32_t crc32c(const void *data, size_t len, uint32_t crc)
{
	auto p = static_cast<const uint8_t *>(data);
	crc = ~crc;
	crc = kHaveHw ? crc_hw(p, len, crc) : crc_soft(p, len, crc);
	return ~crc;
}

} // namespace memfed
