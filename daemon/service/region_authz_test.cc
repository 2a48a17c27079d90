// rights_of and refusal (region_authz.h): the owner node's users by mode,
// other nodes only by grants, never admin.
#include "daemon/service/region_authz.h"

#include <catch2/catch.hpp>

#include "daemon/trust/node_key.h"
#include "daemon/wire/protocol.h"

using namespace memfed;

namespace
{

NodeKeyBytes key_of(uint8_t b)
{
	NodeKeyBytes k;
	k.fill(b);
	return k;
}

Requester node(uint8_t key, std::optional<uint32_t> uid)
{
	return Requester{false, key_of(key), "", uid.has_value(), uid.value_or(0)};
}

} // namespace

TEST_CASE("the owner node's users get what the mode gives, other nodes what is granted", "[authz]")
{
	using namespace wire;
	RegionInfo r;
	r.name = "shared";
	r.owner_uid = 1000;
	r.mode = 0640;
	RegionAccess a;
	a.owner_key = key_of(1);
	constexpr uint8_t kAll = kAccessRead | kAccessWrite | kAccessAdmin;
	CHECK(rights_of(r, a, Requester{}) == kAll); // this node itself
	CHECK(rights_of(r, a, node(1, 1000)) == kAll);
	CHECK(rights_of(r, a, node(1, 0)) == kAll);
	CHECK(rights_of(r, a, node(1, 1001)) == 0); // mode 0640: nothing for others
	r.mode = 0646;
	CHECK(rights_of(r, a, node(1, 1001)) == (kAccessRead | kAccessWrite));
	CHECK(rights_of(r, a, node(1, std::nullopt)) == kAll);

	// Another node: its uid 1000 is not the owner's uid 1000.
	CHECK(rights_of(r, a, node(2, 1000)) == 0);
	CHECK(rights_of(r, a, node(2, 0)) == 0);
	a.grants.push_back({key_of(2), 1000, kRightRead});
	CHECK(rights_of(r, a, node(2, 1000)) == kAccessRead);
	CHECK(rights_of(r, a, node(2, 1001)) == 0);
	CHECK(rights_of(r, a, node(3, 1000)) == 0);
	CHECK(rights_of(r, a, node(2, std::nullopt)) == kAccessRead);
	a.grants.push_back({key_of(2), kAnyUid, kRightRead | kRightWrite});
	CHECK(rights_of(r, a, node(2, 1001)) == (kAccessRead | kAccessWrite));

	Status st = refusal(r, ModuleId{0x020000000001}, "OWNER=", node(3, 7), kAccessWrite);
	CHECK(st.code() == Code::kPermission);
	CHECK(st.message().find("uid 7 may not write region 'shared' on module "
	                        "02:00:00:00:00:01 (owner: node OWNER= uid 1000)") !=
	      std::string::npos);
	CHECK(st.message().find("memfedctl region grant shared " + trust::encode_key(key_of(3)) +
	                        ":7 write") != std::string::npos);
	st = refusal(r, ModuleId{0x020000000001}, "OWNER=", node(3, 7), kAccessAdmin);
	CHECK(st.message().find("only its owner may delete it or change its grants") !=
	      std::string::npos);
}
