#include <catch2/catch.hpp>

#include <string>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/control/message.h"

using namespace memfed;
using namespace memfed::control;

static Result<Message> parse(const std::string &s)
{
	return parse_packet(reinterpret_cast<const uint8_t *>(s.data()), s.size());
}

TEST_CASE("control packets carry JSON and binary data")
{
	Message m;
	m.body = {{"op", "region.write"}, {"offset", 4096}};
	m.data = {0, 1, 2, 255};
	auto pkt = encode_packet(m);
	REQUIRE(pkt);
	auto back = parse_packet(pkt->data(), pkt->size());
	REQUIRE(back);
	REQUIRE(back->body["op"] == "region.write");
	REQUIRE(back->data == m.data);
}

TEST_CASE("malformed control packets are refused with a reason")
{
	REQUIRE(parse("").status().code() == Code::kProtocol);
	REQUIRE(parse("not json").status().code() == Code::kProtocol);
	REQUIRE(parse("[1,2]").status().message().find("object") != std::string::npos);
	REQUIRE(parse(std::string(100, '[')).status().message().find("deeper") != std::string::npos);
	REQUIRE(parse(std::string(kMaxPacket + 1, ' ')).status().code() == Code::kProtocol);
	REQUIRE(parse("{\"op\":\"x\"}"));
}

TEST_CASE("fds travel with their message over a seqpacket pair")
{
	int sv[2];
	REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
	int p[2];
	REQUIRE(pipe(p) == 0);
	Message m;
	m.body = {{"op", "map"}};
	m.fds = {p[1]};
	REQUIRE(send_message(sv[0], m));
	auto r = recv_message(sv[1]);
	REQUIRE(r);
	REQUIRE(r->fds.size() == 1);
	REQUIRE(write(r->fds[0], "x", 1) == 1);
	char c = 0;
	REQUIRE(read(p[0], &c, 1) == 1);
	REQUIRE(c == 'x');
	close(r->fds[0]);
	close(p[0]);
	close(p[1]);
	close(sv[1]);
	auto eof = recv_message(sv[0]);
	REQUIRE(eof.status().code() == Code::kUnavailable);
	close(sv[0]);
}

TEST_CASE("error replies round-trip into a status")
{
	Message r = error_reply(Status(Code::kNotFound, "region 'x' not found"));
	Status st = reply_status(r);
	REQUIRE(st.code() == Code::kNotFound);
	REQUIRE(st.message() == "region 'x' not found");
	REQUIRE(reply_status(ok_reply()).is_ok());
}
