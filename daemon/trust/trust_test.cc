// Node keys: derivation against RFC 8032's test vector, the key file's
// format and permission checks, base64 parsing.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

#include "daemon/trust/node_key.h"
#include "daemon/trust/trusted_peers.h"

using namespace memfed;
using namespace memfed::trust;

namespace
{

std::array<uint8_t, 32> from_hex(const char *hex)
{
	std::array<uint8_t, 32> out{};
	for (size_t i = 0; i < 32; i++)
		std::sscanf(hex + 2 * i, "%2hhx", &out[i]);
	return out;
}

std::string temp_dir()
{
	char tmpl[] = "/tmp/memfed-trust-XXXXXX";
	REQUIRE(mkdtemp(tmpl) != nullptr);
	return tmpl;
}

} // namespace

TEST_CASE("public key derivation matches RFC 8032 test 1", "[trust]")
{
	auto k = node_key_from_seed(
	        from_hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"));
	REQUIRE(k);
	CHECK(k->pub ==
	      from_hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"));
	CHECK(encode_key(k->pub) == "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
}

TEST_CASE("public keys round-trip through base64 and bad ones are named", "[trust]")
{
	auto k = generate_node_key();
	REQUIRE(k);
	auto back = decode_public_key(encode_key(k->pub));
	REQUIRE(back);
	CHECK(*back == k->pub);

	auto two = generate_node_key();
	REQUIRE(two);
	CHECK(two->pub != k->pub);

	for (const char *bad : {"", "short=", "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo",
	                        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURp=",
	                        "!1qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}) {
		auto r = decode_public_key(bad, "peer key");
		CHECK_FALSE(r);
		CHECK(r.status().code() == Code::kInvalidArgument);
		CHECK(r.status().message().find("peer key") != std::string::npos);
	}
}

TEST_CASE("the key file is created 0600, reloaded, and refused when loose", "[trust]")
{
	std::string dir = temp_dir();
	std::string path = dir + "/node.key";
	bool created = false;
	auto k = load_or_create_node_key(path, &created);
	REQUIRE(k);
	CHECK(created);
	struct stat st;
	REQUIRE(stat(path.c_str(), &st) == 0);
	CHECK((st.st_mode & 0777) == 0600);

	auto again = load_or_create_node_key(path, &created);
	REQUIRE(again);
	CHECK_FALSE(created);
	CHECK(again->pub == k->pub);
	CHECK(again->seed == k->seed);

	CHECK(save_node_key(path, *k).code() == Code::kAlreadyExists);

	REQUIRE(chmod(path.c_str(), 0644) == 0);
	auto loose = load_node_key(path);
	REQUIRE_FALSE(loose);
	CHECK(loose.status().code() == Code::kPermission);
	CHECK(loose.status().message().find("chmod 600 " + path) != std::string::npos);
	REQUIRE(chmod(path.c_str(), 0600) == 0);

	std::ofstream(path, std::ios::trunc) << "not a key\n";
	auto bad = load_node_key(path);
	REQUIRE_FALSE(bad);
	CHECK(bad.status().code() == Code::kInvalidArgument);
	CHECK(bad.status().message().find("key generate") != std::string::npos);
	// The message never carries the file's content.
	CHECK(bad.status().message().find("not a key") == std::string::npos);

	unlink(path.c_str());
	auto missing = load_node_key(path);
	CHECK(missing.status().code() == Code::kNotFound);
	rmdir(dir.c_str());
}

TEST_CASE("the trusted set finds keys, names them, and is replaced whole", "[trust]")
{
	auto a = generate_node_key();
	auto b = generate_node_key();
	REQUIRE(a);
	REQUIRE(b);
	TrustedPeers peers({{a->pub, "lamp-7", "10.0.0.7:7700"}});
	CHECK(peers.contains(a->pub));
	CHECK_FALSE(peers.contains(b->pub));
	CHECK(peers.describe(a->pub) == "lamp-7 (" + encode_key(a->pub) + ")");
	CHECK(peers.describe(b->pub) == encode_key(b->pub));
	peers.replace({{b->pub, "", ""}});
	CHECK_FALSE(peers.contains(a->pub));
	CHECK(peers.contains(b->pub));
	CHECK(peers.size() == 1);
}
