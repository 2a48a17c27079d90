// A node's identity: a static Ed25519 key pair, as WireGuard users know keys.
//
// Keys travel as base64 of their 32 raw bytes (44 characters). The private
// key lives in a file of its own (<state_dir>/node.key by default) holding
// the base64 of the 32-byte Ed25519 seed and a newline; the file must be
// mode 0600 or stricter and is refused otherwise, with the chmod that fixes
// it. The public key is derived from the seed and never stored.
//
// The key material is never logged: only public keys appear in messages.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/common/status.h"

namespace memfed::trust
{

constexpr size_t kKeySize = 32;
using PublicKey = std::array<uint8_t, kKeySize>;

struct NodeKey {
	std::array<uint8_t, kKeySize> seed{}; // secret
	PublicKey pub{};
	~NodeKey();
};

// base64 of the 32 bytes (44 characters, one '=' of padding).
std::string encode_key(const PublicKey &key);
// A public key from its base64; the error names `what` ("peer key") and says
// what a key looks like.
Result<PublicKey> decode_public_key(std::string_view b64, std::string_view what = "key");

// A fresh key pair from the system's CSPRNG.
Result<NodeKey> generate_node_key();
// The key pair whose seed is `seed`.
Result<NodeKey> node_key_from_seed(const std::array<uint8_t, kKeySize> &seed);

// Reads a private key file. Refuses a file that group or others may read
// (kPermission, naming the file and the chmod), a missing file (kNotFound)
// and a malformed one (kInvalidArgument).
Result<NodeKey> load_node_key(const std::string &path);
// Writes a private key file atomically (temporary file, fsync, rename),
// mode 0600. Refuses to replace an existing file unless `overwrite`.
Status save_node_key(const std::string &path, const NodeKey &key, bool overwrite = false);
// The node's key: loaded from `path`, or created there on first start
// (*created tells which).
Result<NodeKey> load_or_create_node_key(const std::string &path, bool *created);

} // namespace memfed::trust
