#include "daemon/wire/codec.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "daemon/common/crc32c.h"

using namespace memfed;
using namespace memfed::wire;

namespace
{

Header read_request(uint32_t count = 2)
{
	Header h{};
	h.type = static_cast<uint8_t>(MsgType::kRead);
	h.tclass = static_cast<uint8_t>(TrafficClass::kFault);
	h.hop_limit = kDefaultHopLimit;
	h.src_module = 0x020000000002;
	h.dst_module = 0x020000000001;
	h.request_id = 0x1122334455667788;
	h.offset = 0x200000;
	h.count = count;
	h.region_id = 3;
	return h;
}

std::vector<uint8_t> bytes_of(Header h, std::span<const uint8_t> payload = {})
{
	std::vector<uint8_t> b(kHeaderSize);
	encode_header(h, payload, b.data());
	return b;
}

// Re-seals a header whose fields a test changed through `edit`, so only the
// edited field is wrong.
std::vector<uint8_t> edited(Header h, void (*edit)(Header &))
{
	auto b = bytes_of(h);
	Header d = decode_header(b.data());
	edit(d);
	// encode_header_raw restores the magic and a zero version; put the
	// edited ones back for tests of those fields.
	uint32_t magic = d.magic;
	uint8_t version = d.version;
	encode_header_raw(d, b.data());
	std::memcpy(b.data(), &magic, 4);
	b[4] = version;
	uint32_t crc = crc32c(b.data(), 60);
	std::memcpy(b.data() + 60, &crc, 4);
	return b;
}

std::string error_of(const std::vector<uint8_t> &b)
{
	Header out;
	Status st = validate_header(b, &out);
	if (st.is_ok())
		return "ok";
	CHECK(st.code() == Code::kProtocol);
	return st.message();
}

bool contains(const std::string &s, const std::string &part)
{
	return s.find(part) != std::string::npos;
}

} // namespace

TEST_CASE("header round-trips and is little-endian on the wire")
{
	Header h = read_request();
	auto b = bytes_of(h);
	// Fixed offsets of protocol.h, byte by byte.
	CHECK(std::memcmp(b.data(), "MFW1", 4) == 0);
	CHECK(b[4] == kWireVersion);
	CHECK(b[5] == 2);
	CHECK(b[32] == 0x88);
	CHECK(b[39] == 0x11);
	CHECK(b[48] == 2);
	Header out;
	REQUIRE(validate_header(b, &out).is_ok());
	CHECK(out.request_id == h.request_id);
	CHECK(out.offset == h.offset);
	CHECK(out.count == 2);
	CHECK(out.src_module == h.src_module);
	CHECK(out.header_crc == crc32c(b.data(), 60));
}

TEST_CASE("header validation rejects each bad field with its name and value")
{
	Header h = read_request();
	CHECK(error_of(bytes_of(h)) == "ok");
	std::vector<uint8_t> truncated = bytes_of(h);
	truncated.resize(40);
	CHECK(contains(error_of(truncated), "truncated header: 40 bytes"));
	CHECK(contains(error_of(std::vector<uint8_t>(64, 0xab)), "bad magic 0xabababab"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.magic = 0x50545448; })), "bad magic"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.version = 9; })),
	               "unsupported wire version 9"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.type = 0; })),
	               "unknown message type 0"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.type = 200; })),
	               "unknown message type 200"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.tclass = 3; })),
	               "traffic class 3 out of range"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.hop_limit = 0; })), "hop_limit 0"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.flags = 0x80; })),
	               "unknown flags 0x0080"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.status = 3; })),
	               "request carries status 3"));
	CHECK(contains(error_of(edited(h,
	                               [](Header &d) {
		                               d.flags = kFlagResponse;
		                               d.status = 999;
	                               })),
	               "unknown status code 999"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.src_module = 1ull << 50; })),
	               "src_module"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.dst_module = ~0ull; })), "dst_module"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.payload_len = kMaxPayload + 1; })),
	               "payload_len " + std::to_string(kMaxPayload + 1) + " exceeds"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.count = 257; })),
	               "count 257 exceeds the maximum 256"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.count = 0; })), "READ with count 0"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.offset = 0x1001; })),
	               "READ offset 0x1001 is not a multiple"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.offset = ~0ull << 12; })),
	               "overflows"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.payload_len = 4096; })),
	               "READ request with count 2 has payload_len 4096 (expected 0)"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.payload_crc = 5; })),
	               "payload_crc 0x00000005 with an empty payload"));

	// A flipped bit anywhere in the first 60 bytes breaks the header crc.
	for (size_t i = 0; i < 60; i += 7) {
		auto b = bytes_of(h);
		b[i] ^= 0x10;
		std::string e = error_of(b);
		INFO("byte " << i << ": " << e);
		CHECK(e != "ok");
	}
	auto b = bytes_of(h);
	b[61] ^= 1;
	CHECK(contains(error_of(b), "header crc"));
}

TEST_CASE("READ/WRITE lengths follow count and direction")
{
	Header h = read_request(3);
	h.type = static_cast<uint8_t>(MsgType::kWrite);
	std::vector<uint8_t> pages(3 * kPageSize, 0x42);
	Header out;
	REQUIRE(validate_header(bytes_of(h, pages), &out).is_ok());
	CHECK(check_payload(out, pages).is_ok());
	CHECK(contains(error_of(bytes_of(h)), "WRITE request with count 3 has payload_len 0"));
	std::vector<uint8_t> fewer(2 * kPageSize);
	CHECK(contains(error_of(bytes_of(h, fewer)), "expected 12288"));

	// WRITE response: empty. READ response: the pages.
	h.flags = kFlagResponse;
	CHECK(error_of(bytes_of(h)) == "ok");
	h.type = static_cast<uint8_t>(MsgType::kRead);
	CHECK(error_of(bytes_of(h, pages)) == "ok");
	CHECK(contains(error_of(bytes_of(h)), "READ response with count 3 has payload_len 0"));
	// A failed response carries a message instead, of bounded size.
	h.status = static_cast<uint16_t>(Code::kNotFound);
	std::string msg = "region 7 not found";
	std::span<const uint8_t> m(reinterpret_cast<const uint8_t *>(msg.data()), msg.size());
	REQUIRE(validate_header(bytes_of(h, m), &out).is_ok());
	Status st = response_status(out, m);
	CHECK(st.code() == Code::kNotFound);
	CHECK(st.message() == msg);
	std::vector<uint8_t> long_msg(kMaxErrorMessage + 1, 'x');
	CHECK(contains(error_of(bytes_of(h, long_msg)), "error message of 1025 bytes"));
}

TEST_CASE("payload crc and length are checked")
{
	Header h = read_request(1);
	h.type = static_cast<uint8_t>(MsgType::kWrite);
	std::vector<uint8_t> page(kPageSize, 7);
	Header out;
	REQUIRE(validate_header(bytes_of(h, page), &out).is_ok());
	CHECK(check_payload(out, page).is_ok());
	page[4095] ^= 1;
	Status st = check_payload(out, page);
	CHECK(st.code() == Code::kProtocol);
	CHECK(contains(st.message(), "WRITE payload crc"));
	page.pop_back();
	CHECK(contains(check_payload(out, page).message(),
	               "payload of 4095 bytes, header says 4096"));
}

TEST_CASE("HELLO: any header version, payload range checked")
{
	Header h{};
	h.type = static_cast<uint8_t>(MsgType::kHello);
	h.tclass = 1;
	h.hop_limit = 1;
	h.version = 7; // a newer peer's HELLO is still readable
	HelloRequest r{1, 3, kCapRelay};
	uint8_t p[kHelloRequestSize];
	encode_hello_request(r, p);
	Header out;
	REQUIRE(validate_header(bytes_of(h, p), &out).is_ok());
	auto d = decode_hello_request(p);
	REQUIRE(d.is_ok());
	CHECK(d->min_version == 1);
	CHECK(d->max_version == 3);
	CHECK(d->capabilities == kCapRelay);
	encode_hello_request(HelloRequest{4, 2, 0}, p);
	CHECK(contains(decode_hello_request(p).status().message(), "4..2"));
	CHECK(contains(decode_hello_request({p, 7}).status().message(), "7 bytes (expected 8)"));

	HelloResponse resp;
	resp.capabilities = kCapModule;
	resp.capacity_bytes = 1ull << 40;
	uint8_t q[kHelloResponseSize];
	encode_hello_response(resp, q);
	auto dr = decode_hello_response(q);
	REQUIRE(dr.is_ok());
	CHECK(dr->capacity_bytes == 1ull << 40);
	CHECK(dr->version == kWireVersion);
	q[16] = 0; // page_size 0x1000 becomes 0x2000
	q[17] = 0x20;
	CHECK(contains(decode_hello_response(q).status().message(), "page_size 8192"));
}

TEST_CASE("region spec, region, list, stat and name payloads")
{
	auto spec = make_region_spec("cfg.v2_a-b", 1 << 20, 1000, 0600);
	REQUIRE(spec.is_ok());
	uint8_t sb[kRegionSpecSize];
	encode_region_spec(*spec, sb);
	auto ds = decode_region_spec(sb);
	REQUIRE(ds.is_ok());
	CHECK(region_name(*ds) == "cfg.v2_a-b");
	CHECK(ds->size_bytes == 1 << 20);
	CHECK(ds->mode == 0600);
	CHECK(make_region_spec("", 1, 0, 0).status().code() == Code::kInvalidArgument);
	CHECK(make_region_spec(std::string(64, 'a'), 1, 0, 0).status().code() ==
	      Code::kInvalidArgument);
	CHECK_FALSE(valid_region_name("-x"));
	CHECK_FALSE(valid_region_name("a/b"));
	CHECK_FALSE(valid_region_name("a b"));
	CHECK(valid_region_name(std::string(63, 'a')));
	// One rule with the store's: a leading '_' is a name both accept.
	CHECK(valid_region_name("_x"));
	CHECK(check_region_name(std::string(64, 'a')).message().find("limit is 63") !=
	      std::string::npos);

	uint8_t bad[kRegionSpecSize];
	std::memcpy(bad, sb, sizeof(bad));
	bad[0] = 64;
	CHECK(contains(decode_region_spec(bad).status().message(), "name_len 64 out of range"));
	std::memcpy(bad, sb, sizeof(bad));
	bad[3] = '/';
	CHECK(contains(decode_region_spec(bad).status().message(), "'cf/.v2_a-b' is not a valid"));
	std::memcpy(bad, sb, sizeof(bad));
	std::memset(bad + 64, 0, 8);
	CHECK(contains(decode_region_spec(bad).status().message(), "size_bytes 0"));
	CHECK(contains(decode_region_spec({sb, 95}).status().message(), "95 bytes (expected 96)"));
	// The replica fields round-trip; the reserved bytes after them must be zero.
	auto rs = make_region_spec("rep", 1 << 20, 0, 0600, 0x1122334455667788, 3);
	REQUIRE(rs.is_ok());
	encode_region_spec(*rs, sb);
	CHECK(sb[80] == 0x88);
	CHECK(sb[88] == 3);
	ds = decode_region_spec(sb);
	REQUIRE(ds.is_ok());
	CHECK(ds->replica_group == 0x1122334455667788);
	CHECK(ds->replicas == 3);
	sb[95] = 1;
	CHECK(contains(decode_region_spec(sb).status().message(), "reserved bytes"));

	WireRegion r{};
	r.id = 4;
	r.owner_uid = 1000;
	r.mode = 0640;
	r.name_len = 3;
	std::memcpy(r.name, "cfg", 3);
	r.fa_offset = 0x200000;
	r.size_bytes = 16 * kPageSize;
	r.ctime_ns = 123456789;
	r.length = 5 * kPageSize + 7;
	uint8_t rb[kRegionSize];
	encode_region(r, rb);
	auto dr = decode_region(rb);
	REQUIRE(dr.is_ok());
	CHECK(dr->length == 5 * kPageSize + 7);
	CHECK(dr->id == 4);
	CHECK(dr->fa_offset == 0x200000);
	CHECK(dr->ctime_ns == 123456789);
	CHECK(region_name(*dr) == "cfg");
	CHECK(dr->replicas == 0);
	r.replica_group = 42;
	r.replicas = 2;
	encode_region(r, rb);
	CHECK(rb[112] == 42);
	CHECK(rb[120] == 2);
	dr = decode_region(rb);
	REQUIRE(dr.is_ok());
	CHECK(dr->replica_group == 42);
	CHECK(dr->replicas == 2);
	// An asked list's answer, even one of no rights, is marked answered.
	r.access = kAccessAnswered;
	encode_region(r, rb);
	dr = decode_region(rb);
	REQUIRE(dr.is_ok());
	CHECK(dr->access == kAccessAnswered);
	rb[121] = 0x40;
	CHECK(contains(decode_region(rb).status().message(), "access 0x40 has unknown bits"));
	r.access = 0;
	encode_region(r, rb);
	rb[127] = 9;
	CHECK(contains(decode_region(rb).status().message(), "reserved bytes"));
	CHECK(contains(decode_region({rb, 112}).status().message(), "112 bytes (expected 128)"));
	r.size_bytes = 100;
	encode_region(r, rb);
	CHECK(contains(decode_region(rb).status().message(), "size_bytes 100"));
	r.size_bytes = kPageSize;
	r.fa_offset = 12;
	encode_region(r, rb);
	CHECK(contains(decode_region(rb).status().message(), "fa_offset 0xc"));
	r.fa_offset = 0;
	r.length = kPageSize + 1;
	encode_region(r, rb);
	CHECK(contains(decode_region(rb).status().message(),
	               "length 4097 exceeds its size_bytes 4096"));
	r.length = kPageSize;

	auto sl = make_set_length("cfg", 12345, true);
	REQUIRE(sl.is_ok());
	uint8_t lb1[kSetLengthSize];
	encode_set_length(*sl, lb1);
	auto dsl = decode_set_length(lb1);
	REQUIRE(dsl.is_ok());
	CHECK(region_name(*dsl) == "cfg");
	CHECK(dsl->length == 12345);
	CHECK(dsl->flags == kSetLengthGrowOnly);
	CHECK(make_set_length("a b", 0, false).status().code() == Code::kInvalidArgument);
	lb1[72] = 6;
	CHECK(contains(decode_set_length(lb1).status().message(), "flags 0x6 has unknown bits"));
	lb1[72] = 0;
	lb1[79] = 1;
	CHECK(contains(decode_set_length(lb1).status().message(), "reserved field"));
	CHECK(contains(decode_set_length({lb1, 12}).status().message(), "12 bytes (expected 80)"));

	std::vector<WireRegion> list{r, r};
	list[1].id = 5;
	auto lb = encode_region_list(list);
	auto dl = decode_region_list(lb);
	REQUIRE(dl.is_ok());
	REQUIRE(dl->size() == 2);
	CHECK((*dl)[1].id == 5);
	lb[0] = 3; // says 3, carries 2
	CHECK(contains(decode_region_list(lb).status().message(), "says 3 regions"));
	lb[0] = 0xff;
	lb[3] = 0xff; // a huge n must not allocate or read past the end
	CHECK_FALSE(decode_region_list(lb).is_ok());
	CHECK(contains(decode_region_list({lb.data(), 3}).status().message(), "at least 4"));
	auto empty = decode_region_list(encode_region_list({}));
	REQUIRE(empty.is_ok());
	CHECK(empty->empty());

	// REGION_LIST requests: none (from the first, a whole page) or after + limit.
	auto all = decode_list_request({});
	REQUIRE(all.is_ok());
	CHECK(list_after(*all).empty());
	CHECK(list_limit(*all) == kRegionListPage);
	auto lq = encode_list_request("heap.1", 10);
	REQUIRE(lq.size() == 1 + 6 + 4);
	auto dq = decode_list_request(lq);
	REQUIRE(dq.is_ok());
	CHECK(list_after(*dq) == "heap.1");
	CHECK(list_limit(*dq) == 10);
	auto first = decode_list_request(encode_list_request("", kRegionListPage + 1));
	REQUIRE(first.is_ok());
	CHECK(list_after(*first).empty());
	CHECK(list_limit(*first) == kRegionListPage);
	CHECK_FALSE(dq->asked);
	CHECK(contains(decode_list_request({lq.data(), 5}).status().message(), "after_len 6"));
	// An asked list: the uid the node vouches for, wanting read.
	auto aq = encode_asked_list_request("heap.1", 10, 1000);
	REQUIRE(aq.size() == 1 + 6 + 4 + kAskerSize);
	auto da = decode_list_request(aq);
	REQUIRE(da.is_ok());
	CHECK(da->asked);
	CHECK(da->uid == 1000);
	CHECK(list_after(*da) == "heap.1");
	CHECK(list_limit(*da) == 10);
	aq.back() = kAccessWrite;
	CHECK(contains(decode_list_request(aq).status().message(), "a list asks read"));
	aq.pop_back();
	CHECK(contains(decode_list_request(aq).status().message(), "or 16 with an asker"));
	lq[1] = ' ';
	CHECK(contains(decode_list_request(lq).status().message(), "not a valid region name"));

	WireStat s{};
	s.capacity_bytes = 1 << 30;
	s.used_bytes = 1 << 20;
	s.free_bytes = (1 << 30) - (1 << 20);
	s.largest_free_bytes = 1 << 29;
	s.page_size = kPageSize;
	s.uptime_ns = 77;
	uint8_t stb[kStatSize];
	encode_stat(s, stb);
	auto dst = decode_stat(stb);
	REQUIRE(dst.is_ok());
	CHECK(dst->uptime_ns == 77);
	CHECK(dst->free_bytes == s.free_bytes);
	s.used_bytes = 2ull << 30;
	encode_stat(s, stb);
	CHECK(contains(decode_stat(stb).status().message(), "inconsistent"));

	auto nb = encode_name("cfg");
	CHECK(decode_name(nb).value() == "cfg");
	nb.push_back('x');
	CHECK(contains(decode_name(nb).status().message(), "name_len 3 says 4"));
	CHECK_FALSE(decode_name({}).is_ok());
	CHECK_FALSE(decode_name(encode_name("a\nb")).is_ok());

	std::vector<uint8_t> nul{'a', 0, 'b'};
	CHECK(contains(decode_error_message(nul).status().message(), "NUL"));
}

TEST_CASE("garbage never validates")
{
	// Deterministic pseudo-random bytes: a header crc match is 1 in 2^32.
	uint64_t x = 88172645463325252ull;
	int ok = 0;
	for (int i = 0; i < 20000; i++) {
		uint8_t b[kHeaderSize];
		for (auto &c : b) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			c = static_cast<uint8_t>(x);
		}
		if (i % 2)
			std::memcpy(b, "MFW1", 4);
		Header out;
		ok += validate_header({b, sizeof(b)}, &out).is_ok();
	}
	CHECK(ok == 0);
}

TEST_CASE("crc32c agrees with a bitwise reference across its block boundaries")
{
	// Every wire checksum goes through crc32c; its fast path splits blocks
	// into three streams, so check lengths around each split and alignments.
	auto ref = [](const uint8_t *p, size_t n, uint32_t crc) {
		crc = ~crc;
		while (n--) {
			crc ^= *p++;
			for (int k = 0; k < 8; k++)
				crc = (crc >> 1) ^ ((crc & 1) ? 0x82f63b78u : 0);
		}
		return ~crc;
	};
	std::vector<uint8_t> b(3 * 4096 + 64);
	uint64_t x = 1;
	for (auto &c : b) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		c = static_cast<uint8_t>(x >> 56);
	}
	for (size_t len : {0, 1, 7, 8, 767, 768, 769, 4031, 4032, 4033, 4096, 4160, 12288})
		for (size_t off = 0; off < 9; off += 4)
			for (uint32_t seed : {0u, 0xdeadbeefu}) {
				INFO("len " << len << " off " << off);
				CHECK(crc32c(b.data() + off, len, seed) ==
				      ref(b.data() + off, len, seed));
			}
}

TEST_CASE("versioned messages: lengths follow count, type and direction")
{
	Header h = read_request(3);
	Header out;
	// WRITE_VERSIONED request: the 16-byte prefix, then the pages.
	h.type = static_cast<uint8_t>(MsgType::kWriteVersioned);
	std::vector<uint8_t> p(kVersionedWriteSize + 3 * kPageSize, 0x42);
	encode_versioned_write(WireVersionedWrite{7, kVersionedRepair, 0}, p.data());
	REQUIRE(validate_header(bytes_of(h, p), &out).is_ok());
	CHECK(contains(error_of(bytes_of(h, std::span(p).first(3 * kPageSize))),
	               "WRITE_VERSIONED request with count 3 has payload_len 12288 (expected "
	               "12304)"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.count = 257; })),
	               "WRITE_VERSIONED count 257 exceeds the maximum 256"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.offset = 0x10; })),
	               "WRITE_VERSIONED offset 0x10 is not a multiple"));
	// Its response: u32 applied.
	h.flags = kFlagResponse;
	uint8_t a[kAppliedSize];
	encode_applied(2, a);
	CHECK(error_of(bytes_of(h, a)) == "ok");
	CHECK(contains(error_of(bytes_of(h)), "WRITE_VERSIONED response with count 3 has "
	                                      "payload_len 0 (expected 4)"));

	// READ_VERSIONED: an empty request; the response is versions then pages.
	h = read_request(2);
	h.type = static_cast<uint8_t>(MsgType::kReadVersioned);
	CHECK(error_of(bytes_of(h)) == "ok");
	CHECK(contains(error_of(bytes_of(h, a)), "READ_VERSIONED request with count 2"));
	h.flags = kFlagResponse;
	std::vector<uint8_t> rv(2 * (8 + kPageSize));
	CHECK(error_of(bytes_of(h, rv)) == "ok");
	CHECK(contains(error_of(bytes_of(h, std::span(rv).first(2 * kPageSize))), "expected 8208"));

	// READ_VERSIONS: up to kMaxVersionsPerRequest, the response 8 bytes each.
	h = read_request(kMaxVersionsPerRequest);
	h.type = static_cast<uint8_t>(MsgType::kReadVersions);
	CHECK(error_of(bytes_of(h)) == "ok");
	CHECK(contains(error_of(edited(h, [](Header &d) { d.count = kMaxVersionsPerRequest + 1; })),
	               "READ_VERSIONS count 65537 exceeds the maximum 65536"));
	CHECK(contains(error_of(edited(h, [](Header &d) { d.count = 0; })),
	               "READ_VERSIONS with count 0"));
	h.flags = kFlagResponse;
	std::vector<uint8_t> vs(size_t{kMaxVersionsPerRequest} * 8);
	CHECK(error_of(bytes_of(h, vs)) == "ok");
	vs.pop_back();
	CHECK(contains(error_of(bytes_of(h, vs)), "expected 524288"));
	// Other types keep the page limit.
	h = read_request(kMaxPagesPerRequest + 1);
	h.type = static_cast<uint8_t>(MsgType::kStat);
	CHECK(contains(error_of(bytes_of(h)), "STAT count 257 exceeds the maximum 256"));
	// The largest payload fits: a full READ_VERSIONED response.
	CHECK(kMaxPayload >= kMaxPagesPerRequest * (kPageSize + 8));
	CHECK(kMaxPayload >= kVersionedWriteSize + kMaxPagesPerRequest * kPageSize);
	CHECK(std::string(msg_type_name(10)) == "WRITE_VERSIONED");
	CHECK(std::string(msg_type_name(12)) == "READ_VERSIONS");
	CHECK(contains(error_of(edited(h, [](Header &d) { d.type = kMsgTypeMax + 1; })),
	               "unknown message type " + std::to_string(kMsgTypeMax + 1)));
}

TEST_CASE("versioned payloads: encode, decode and every malformed length")
{
	std::vector<uint8_t> p(kVersionedWriteSize + 2 * kPageSize, 0x5a);
	encode_versioned_write(WireVersionedWrite{0x0102030405060708, kVersionedRepair, 0},
	                       p.data());
	CHECK(p[0] == 0x08); // little-endian
	CHECK(p[8] == 1);
	auto w = decode_versioned_write(2, p);
	REQUIRE(w.is_ok());
	CHECK(w->prefix.version == 0x0102030405060708);
	CHECK(w->prefix.flags == kVersionedRepair);
	CHECK(w->pages.size() == 2 * kPageSize);
	CHECK(w->pages.data() == p.data() + kVersionedWriteSize);
	CHECK(contains(decode_versioned_write(3, p).status().message(),
	               "WRITE_VERSIONED payload of 8208 bytes (expected 12304)"));
	CHECK(contains(decode_versioned_write(0, {}).status().message(), "count 0 out of range"));
	CHECK(contains(decode_versioned_write(257, p).status().message(), "out of range"));
	CHECK(decode_versioned_write(1, std::span(p).first(10)).status().code() == Code::kProtocol);
	std::vector<uint8_t> bad = p;
	encode_versioned_write(WireVersionedWrite{0, 0, 0}, bad.data());
	CHECK(contains(decode_versioned_write(2, bad).status().message(), "version 0"));
	encode_versioned_write(WireVersionedWrite{1, 6, 0}, bad.data());
	CHECK(contains(decode_versioned_write(2, bad).status().message(), "flags 0x6"));
	encode_versioned_write(WireVersionedWrite{1, 0, 0}, bad.data());
	bad[12] = 1;
	CHECK(contains(decode_versioned_write(2, bad).status().message(), "reserved"));

	uint8_t a[kAppliedSize];
	encode_applied(3, a);
	CHECK(*decode_applied(3, a) == 3);
	CHECK(contains(decode_applied(2, a).status().message(), "3 of 2 pages applied"));
	CHECK(contains(decode_applied(3, {a, 3}).status().message(), "3 bytes (expected 4)"));

	const uint64_t v[3] = {1, 0xfedcba9876543210, 0};
	std::vector<uint8_t> vb(sizeof(v));
	encode_versions(v, vb.data());
	CHECK(vb[8] == 0x10);
	uint64_t got[3] = {};
	REQUIRE(decode_versions(3, vb, got).is_ok());
	CHECK(got[1] == v[1]);
	CHECK(contains(decode_versions(2, vb, got).message(), "24 bytes (expected 16)"));

	std::vector<uint8_t> rv(sizeof(v) + 3 * kPageSize, 0x11);
	encode_versions(v, rv.data());
	auto pages = decode_read_versioned(3, rv, got);
	REQUIRE(pages.is_ok());
	CHECK(pages->size() == 3 * kPageSize);
	CHECK((*pages)[0] == 0x11);
	CHECK(got[1] == v[1]);
	rv.pop_back();
	CHECK(contains(decode_read_versioned(3, rv, got).status().message(),
	               "READ_VERSIONED response payload of 12311 bytes (expected 12312)"));
}

TEST_CASE("region access payloads: asked lookups, grant requests and grant lists", "[wire]")
{
	// A lookup with and without an asker.
	auto plain = decode_lookup(encode_name("shared"));
	REQUIRE(plain.is_ok());
	CHECK_FALSE(plain->asked);
	CHECK(plain->name == "shared");
	auto asked = decode_lookup(encode_asked_lookup("shared", 1000, kAccessWrite));
	REQUIRE(asked.is_ok());
	CHECK(asked->asked);
	CHECK(asked->uid == 1000);
	CHECK(asked->want == kAccessWrite);
	CHECK(contains(decode_lookup(encode_asked_lookup("shared", 1, 0x40)).status().message(),
	               "wants access 0x40"));

	WireAccessRequest r{};
	r.name_len = 6;
	std::memcpy(r.name, "shared", 6);
	r.op = uint8_t(AccessOp::kGrant);
	r.rights = kAccessRead | kAccessWrite;
	r.asker_uid = 7;
	r.key[0] = 0xaa;
	r.uid = 0xffffffff;
	uint8_t buf[kAccessRequestSize];
	encode_access_request(r, buf);
	auto back = decode_access_request(buf);
	REQUIRE(back.is_ok());
	CHECK(region_name(*back) == "shared");
	CHECK(back->rights == r.rights);
	CHECK(back->asker_uid == 7);
	CHECK(back->key[0] == 0xaa);
	CHECK(back->uid == 0xffffffff);
	buf[65] = kAccessWrite; // write without read is no grant
	CHECK(contains(decode_access_request(buf).status().message(), "grants rights 0x2"));
	buf[64] = uint8_t(AccessOp::kShow);
	CHECK(contains(decode_access_request(buf).status().message(), "only a grant has rights"));

	WireAccessList l{};
	l.owner_key[31] = 9;
	l.owner_uid = 1000;
	l.grants.push_back(WireGrant{{1}, 1001, kAccessRead});
	auto enc = encode_access_list(l);
	CHECK(enc.size() == 80);
	auto lb = decode_access_list(enc);
	REQUIRE(lb.is_ok());
	CHECK(lb->owner_key[31] == 9);
	CHECK(lb->owner_uid == 1000);
	REQUIRE(lb->grants.size() == 1);
	CHECK(lb->grants[0].uid == 1001);
	enc.pop_back();
	CHECK_FALSE(decode_access_list(enc).is_ok());
}

TEST_CASE("RDMA write messages: a whole WRITE decodes, anything else is refused", "[wire]")
{
	STATIC_REQUIRE(kRdmaWriteMessageMax == kHeaderSize + kSequenceSize + kVersionedWriteSize +
	                                               size_t{kMaxPagesPerRequest} * kPageSize);
	STATIC_REQUIRE(kRdmaAckMax == kHeaderSize + kMaxErrorMessage);
	STATIC_REQUIRE(sizeof(WireRdmaConnect) == 88);
	auto message = [](Header h, std::span<const uint8_t> payload) {
		std::vector<uint8_t> m = bytes_of(h, payload);
		m.insert(m.end(), payload.begin(), payload.end());
		return m;
	};
	Header w = read_request(2);
	w.type = uint8_t(MsgType::kWrite);
	std::vector<uint8_t> pages(2 * kPageSize, 0x5a);
	std::vector<uint8_t> m = message(w, pages);
	Header h{};
	std::span<const uint8_t> payload;
	REQUIRE(decode_rdma_write(m, &h, &payload).is_ok());
	CHECK(h.type == uint8_t(MsgType::kWrite));
	CHECK(h.request_id == w.request_id);
	CHECK(payload.size() == pages.size());
	CHECK(payload.data() == m.data() + kHeaderSize);

	// WRITE_VERSIONED: prefix and pages.
	Header v = w;
	v.type = uint8_t(MsgType::kWriteVersioned);
	std::vector<uint8_t> vp(kVersionedWriteSize + 2 * kPageSize, 1);
	REQUIRE(decode_rdma_write(message(v, vp), &h, &payload).is_ok());
	CHECK(payload.size() == vp.size());

	auto refused = [&](std::span<const uint8_t> bytes, const std::string &why) {
		Status st = decode_rdma_write(bytes, &h, &payload);
		CHECK(st.code() == Code::kProtocol);
		CHECK_THAT(st.message(), Catch::Contains(why));
	};
	// Truncated: short of a header, short of the payload, one byte over.
	refused({m.data(), kHeaderSize - 1}, "shorter than a header");
	refused({m.data(), m.size() - 1}, "payload of");
	std::vector<uint8_t> longer = m;
	longer.push_back(0);
	refused(longer, "payload of");
	// A payload byte changed: the crc.
	std::vector<uint8_t> bad = m;
	bad.back() ^= 1;
	refused(bad, "payload crc");
	// A header byte changed: the header crc.
	bad = m;
	bad[40] ^= 1;
	refused(bad, "crc");
	// Count and payload disagree (sealed, so only that is wrong).
	Header c = w;
	c.count = 3;
	refused(message(c, pages), "payload_len");
	// Not a write; a response.
	Header r = read_request(2);
	refused(message(r, {}), "only WRITE and WRITE_VERSIONED");
	Header resp = w;
	resp.flags = kFlagResponse;
	refused(message(resp, {}), "response");
	// Larger than any receive buffer.
	std::vector<uint8_t> huge(kRdmaWriteMessageMax + 1);
	refused(huge, "exceeds");
	CHECK(std::string(msg_type_name(uint8_t(MsgType::kRdmaFence))) == "RDMA_FENCE");
}

TEST_CASE("sequenced writes: the sequence prefix is counted, split off and checked; only "
          "WRITE and WRITE_VERSIONED requests carry it",
          "[wire]")
{
	Header w = read_request(1);
	w.magic = kWireMagic;
	w.version = kWireVersion;
	w.type = uint8_t(MsgType::kWrite);
	w.flags = kFlagSequenced | kFlagRetry;
	w.payload_len = kSequenceSize + kPageSize;
	CHECK(validate_fields(w).is_ok());
	// The prefix is counted in payload_len: a plain WRITE's length is refused.
	Header shorter = w;
	shorter.payload_len = kPageSize;
	CHECK(contains(validate_fields(shorter).message(), "expected 4112"));
	std::vector<uint8_t> payload(kSequenceSize + kPageSize, 0x33);
	encode_sequence({0xfeedf00d12345678, 7}, payload.data());
	WireSequence seq;
	auto pages = split_sequence(w, payload, &seq);
	REQUIRE(pages.is_ok());
	CHECK(seq.session == 0xfeedf00d12345678);
	CHECK(seq.seq == 7);
	CHECK(pages->size() == kPageSize);
	CHECK(pages->data() == payload.data() + kSequenceSize);
	// Zero session or seq.
	encode_sequence({0, 7}, payload.data());
	CHECK(contains(split_sequence(w, payload, &seq).status().message(), "zero field"));
	encode_sequence({1, 0}, payload.data());
	CHECK(contains(split_sequence(w, payload, &seq).status().message(), "zero field"));
	// Not sequenced: the payload as it is.
	Header plain = w;
	plain.flags = 0;
	auto all = split_sequence(plain, payload, &seq);
	REQUIRE(all.is_ok());
	CHECK(all->size() == payload.size());
	CHECK(seq.session == 0);
	// A sequenced WRITE_VERSIONED: both prefixes.
	Header v = w;
	v.type = uint8_t(MsgType::kWriteVersioned);
	v.payload_len = kSequenceSize + kVersionedWriteSize + kPageSize;
	CHECK(validate_fields(v).is_ok());
	// Retry without sequenced, sequenced on a READ or on a response.
	Header r = w;
	r.flags = kFlagRetry;
	r.payload_len = kPageSize;
	CHECK(contains(validate_fields(r).message(), "without flag sequenced"));
	Header rd = w;
	rd.type = uint8_t(MsgType::kRead);
	rd.flags = kFlagSequenced;
	rd.payload_len = 0;
	CHECK(contains(validate_fields(rd).message(), "flag sequenced on a READ request"));
	Header resp = w;
	resp.flags = kFlagResponse | kFlagSequenced;
	resp.payload_len = 0;
	CHECK(contains(validate_fields(resp).message(), "flag sequenced on a WRITE response"));
}
