#include "daemon/common/crc32c.h"

#include <array>
#include <cstring>

namespace memfed
{

namespace
{

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

// Appending `len` zero bytes to a raw CRC register is linear over GF(2);
// these tables apply it a byte of the register at a time. They let three
// independent crc32 instruction streams (one per third of a block) run in
// parallel and be combined, about 3x the single-stream rate.
struct ShiftTable {
	uint32_t t[4][256];
};

ShiftTable make_shift(size_t len)
{
	uint32_t basis[32];
	for (int i = 0; i < 32; i++) {
		uint32_t c = uint32_t{1} << i;
		for (size_t k = 0; k < len; k++)
			c = kTable[c & 0xff] ^ (c >> 8);
		basis[i] = c;
	}
	ShiftTable st{};
	for (int k = 0; k < 4; k++)
		for (uint32_t n = 0; n < 256; n++) {
			uint32_t v = n << (8 * k), r = 0;
			for (int b = 0; b < 32; b++)
				if (v >> b & 1)
					r ^= basis[b];
			st.t[k][n] = r;
		}
	return st;
}

uint32_t shift(const ShiftTable &st, uint32_t c)
{
	return st.t[0][c & 0xff] ^ st.t[1][(c >> 8) & 0xff] ^ st.t[2][(c >> 16) & 0xff] ^
	       st.t[3][c >> 24];
}

// Stream lengths: three kLong streams cover a 4 KiB page but 64 bytes.
constexpr size_t kLong = 1344;
constexpr size_t kShort = 256;
const ShiftTable kShiftLong = make_shift(kLong);
const ShiftTable kShiftShort = make_shift(kShort);

__attribute__((target("sse4.2"))) uint64_t crc_hw_1(uint64_t c, const uint8_t *p)
{
	uint64_t v;
	std::memcpy(&v, p, 8);
	return __builtin_ia32_crc32di(c, v);
}

__attribute__((target("sse4.2"))) uint64_t crc_hw_3(uint64_t c0, const uint8_t *p, size_t len,
                                                    const ShiftTable &st)
{
	uint64_t c1 = 0, c2 = 0;
	for (size_t i = 0; i < len; i += 8) {
		c0 = crc_hw_1(c0, p + i);
		c1 = crc_hw_1(c1, p + len + i);
		c2 = crc_hw_1(c2, p + 2 * len + i);
	}
	c0 = shift(st, uint32_t(c0)) ^ uint32_t(c1);
	return shift(st, uint32_t(c0)) ^ uint32_t(c2);
}

__attribute__((target("sse4.2"))) uint32_t crc_hw(const uint8_t *p, size_t len, uint32_t crc)
{
	uint64_t c = crc;
	while (len >= 3 * kLong) {
		c = crc_hw_3(c, p, kLong, kShiftLong);
		p += 3 * kLong;
		len -= 3 * kLong;
	}
	while (len >= 3 * kShort) {
		c = crc_hw_3(c, p, kShort, kShiftShort);
		p += 3 * kShort;
		len -= 3 * kShort;
	}
	while (len >= 8) {
		c = crc_hw_1(c, p);
		p += 8;
		len -= 8;
	}
	uint32_t c32 = uint32_t(c);
	while (len--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32;
}

const bool kHaveHw = __builtin_cpu_supports("sse4.2");
const ShiftTable kShiftPage = make_shift(4096);

} // namespace

uint32_t crc32c(const void *data, size_t len, uint32_t crc)
{
	auto p = static_cast<const uint8_t *>(data);
	crc = ~crc;
	crc = kHaveHw ? crc_hw(p, len, crc) : crc_soft(p, len, crc);
	return ~crc;
}

// The register of crc(A || B) is the register of crc(A) shifted over len_b
// zero bytes, xor the register of crc(B) from a zero start; the pre- and
// post-inversions cancel out, so the same holds for the final values.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
	if (len_b == 4096)
		return shift(kShiftPage, crc_a) ^ crc_b;
	for (size_t i = 0; i < len_b; i++)
		crc_a = kTable[crc_a & 0xff] ^ (crc_a >> 8);
	return crc_a ^ crc_b;
}

} // namespace memfed
