// Ed25519 node keys through OpenSSL's EVP interface; see node_key.h.
#include "daemon/trust/node_key.h"

#include "daemon/common/atomic_file.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>

namespace memfed::trust
{
namespace
{

constexpr size_t kB64Size = 44; // base64 of 32 bytes, with one '='

struct PkeyFree {
	void operator()(EVP_PKEY *p) const { EVP_PKEY_free(p); }
};

// Decodes exactly 32 bytes of base64, or returns false.
bool decode32(std::string_view b64, std::array<uint8_t, kKeySize> *out)
{
	if (b64.size() != kB64Size || b64[kB64Size - 1] != '=' || b64[kB64Size - 2] == '=')
		return false;
	uint8_t buf[33];
	// EVP_DecodeBlock counts the padding as a zero byte: 33 for 32 bytes.
	int n = EVP_DecodeBlock(buf, reinterpret_cast<const unsigned char *>(b64.data()),
	                        static_cast<int>(b64.size()));
	if (n != 33)
		return false;
	std::copy(buf, buf + kKeySize, out->begin());
	// Reject non-canonical encodings (stray low bits in the last character).
	std::string again = encode_key(*out);
	OPENSSL_cleanse(buf, sizeof(buf));
	return again == b64;
}

} // namespace

NodeKey::~NodeKey()
{
	OPENSSL_cleanse(seed.data(), seed.size());
}

std::string encode_key(const PublicKey &key)
{
	char out[kB64Size + 1];
	EVP_EncodeBlock(reinterpret_cast<unsigned char *>(out), key.data(),
	                static_cast<int>(key.size()));
	return std::string(out, kB64Size);
}

Result<PublicKey> decode_public_key(std::string_view b64, std::string_view what)
{
	PublicKey key;
	if (!decode32(b64, &key))
		return Status(Code::kInvalidArgument,
		              std::string(what) + " '" + std::string(b64) +
		                      "' is not a memfed key: expected 44 characters of base64 "
		                      "(as `memfedctl key show` prints)");
	return key;
}

Result<NodeKey> node_key_from_seed(const std::array<uint8_t, kKeySize> &seed)
{
	std::unique_ptr<EVP_PKEY, PkeyFree> pk(
	        EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()));
	if (!pk)
		return Status(Code::kInternal, "OpenSSL refused an Ed25519 seed");
	NodeKey k;
	k.seed = seed;
	size_t n = k.pub.size();
	if (EVP_PKEY_get_raw_public_key(pk.get(), k.pub.data(), &n) != 1 || n != k.pub.size())
		return Status(Code::kInternal, "OpenSSL could not derive an Ed25519 public key");
	return k;
}

Result<NodeKey> generate_node_key()
{
	std::array<uint8_t, kKeySize> seed;
	if (RAND_priv_bytes(seed.data(), static_cast<int>(seed.size())) != 1)
		return Status(Code::kInternal, "the system's random generator failed");
	auto k = node_key_from_seed(seed);
	OPENSSL_cleanse(seed.data(), seed.size());
	return k;
}

Result<NodeKey> load_node_key(const std::string &path)
{
	int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return Status(Code::kNotFound,
			              "no node key at " + path +
			                      " (memfedd creates one on first start, or run "
			                      "`memfedctl key generate " +
			                      path + "`)");
		return Status::from_errno(errno, "opening node key " + path);
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		::close(fd);
		return Status::from_errno(e, "stat of node key " + path);
	}
	if ((st.st_mode & 077) != 0) {
		::close(fd);
		char mode[8];
		std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
		return Status(Code::kPermission,
		              "node key " + path + " has mode " + mode +
		                      ": others may read it; fix with `chmod 600 " + path + "`");
	}
	char buf[128];
	ssize_t n = ::read(fd, buf, sizeof(buf));
	int e = errno;
	::close(fd);
	if (n < 0)
		return Status::from_errno(e, "reading node key " + path);
	std::string_view text(buf, static_cast<size_t>(n));
	while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
		text.remove_suffix(1);
	std::array<uint8_t, kKeySize> seed;
	bool ok = decode32(text, &seed);
	OPENSSL_cleanse(buf, sizeof(buf));
	if (!ok)
		return Status(Code::kInvalidArgument,
		              "node key " + path +
		                      " is not a memfed private key (one line of 44 base64 "
		                      "characters); make a new one with `memfedctl key generate " +
		                      path + "`");
	auto k = node_key_from_seed(seed);
	OPENSSL_cleanse(seed.data(), seed.size());
	return k;
}

Status save_node_key(const std::string &path, const NodeKey &key, bool overwrite)
{
	PublicKey seed_as_key;
	std::copy(key.seed.begin(), key.seed.end(), seed_as_key.begin());
	std::string line = encode_key(seed_as_key) + "\n";
	OPENSSL_cleanse(seed_as_key.data(), seed_as_key.size());
	AtomicWrite how;
	how.mode = 0600;
	how.replace = overwrite;
	how.keep_owner = false; // a key file is always 0600
	Status st = write_file_atomic(path, line, how, "node key");
	OPENSSL_cleanse(line.data(), line.size());
	if (st.code() == Code::kAlreadyExists)
		return Status(Code::kAlreadyExists,
		              "node key " + path +
		                      " exists; it is this node's identity and is not "
		                      "replaced (remove it first to make a new one)");
	return st;
}

Result<NodeKey> load_or_create_node_key(const std::string &path, bool *created)
{
	*created = false;
	auto k = load_node_key(path);
	if (k || k.status().code() != Code::kNotFound)
		return k;
	auto fresh = generate_node_key();
	if (!fresh)
		return fresh;
	MF_RETURN_IF_ERROR(save_node_key(path, *fresh));
	*created = true;
	return fresh;
}

} // namespace memfed::trust
