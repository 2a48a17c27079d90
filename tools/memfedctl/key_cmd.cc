// memfedctl key generate|show: this node's identity key (daemon/trust/node_key.h).
// `generate` writes a new private key file (0600, never over an existing one)
// and prints its public key; `show PATH` reads a key file without a daemon;
// `show` alone asks the running daemon ("key.show"), which answers with the
// public key only; `pub` turns a private key on stdin into its public key.
// Only public keys are ever printed.
#include <openssl/crypto.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "daemon/service/config.h"
#include "daemon/trust/node_key.h"
#include "tools/memfedctl/commands.h"

namespace memfed::ctl
{

using nlohmann::json;

namespace
{

constexpr const char *kUsage = R"(usage: memfedctl key COMMAND
  generate [PATH]   write a new private key to PATH (mode 0600; an existing file
                    is never replaced) and print its public key; PATH defaults
                    to the key file of memfedd's config (trust.key_file,
                    /var/lib/memfed/node.key)
  show [PATH]       print the public key of the key file PATH, or without PATH,
                    of the running memfedd
  pub               read a private key on stdin, print its public key
                    (as `wg pubkey` does)
  (-j: JSON output)
)";

// The key file memfedd would use: trust.key_file of its config file
// (/etc/memfed/memfedd.json when present), else STATE_DIR/node.key.
Result<std::string> daemon_key_file()
{
	DaemonConfig cfg;
	bool help = false;
	char name[] = "memfedd";
	char *argv[] = {name, nullptr};
	MF_RETURN_IF_ERROR(load_config(1, argv, &cfg, &help));
	return cfg.trust.key_file.empty() ? cfg.state_dir + "/node.key" : cfg.trust.key_file;
}

// The public key of the private key on stdin (one line of base64). The
// input is never echoed, even when malformed.
Result<std::string> public_key_of_stdin()
{
	char buf[128];
	size_t n = std::fread(buf, 1, sizeof(buf), stdin);
	std::string_view text(buf, n);
	while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
		text.remove_suffix(1);
	auto seed = trust::decode_public_key(text);
	OPENSSL_cleanse(buf, sizeof(buf));
	if (!seed)
		return Status(Code::kInvalidArgument,
		              "stdin is not a memfed private key (one line of 44 base64 "
		              "characters, as a key file holds)");
	std::array<uint8_t, trust::kKeySize> s;
	std::copy(seed->begin(), seed->end(), s.begin());
	OPENSSL_cleanse(seed->data(), seed->size());
	auto k = trust::node_key_from_seed(s);
	OPENSSL_cleanse(s.data(), s.size());
	if (!k)
		return k.status();
	return trust::encode_key(k->pub);
}

int print_key(const Globals &g, const std::string &pub, const std::string &path)
{
	if (g.json) {
		json j = {{"key", pub}};
		if (!path.empty())
			j["path"] = path;
		return print_json(j);
	}
	std::cout << pub << "\n";
	return 0;
}

} // namespace

int cmd_key(const Globals &g, Args &a)
{
	if (a.empty() || a.peek() == "--help" || a.peek() == "-h") {
		std::cout << kUsage;
		return a.empty() ? 2 : 0;
	}
	std::string sub = a.next();
	if (sub == "pub") {
		Status st = a.expect_positional(0, "memfedctl key pub < PRIVATE_KEY");
		if (!st)
			return fail(g, st);
		auto k = public_key_of_stdin();
		if (!k)
			return fail(g, k.status());
		return print_key(g, *k, "");
	}
	if (sub != "generate" && sub != "show")
		return fail(
		        g, usage_error("unknown key command '" + sub + "' (memfedctl key --help)"));
	const std::string usage = "memfedctl key " + sub + " [PATH]";
	std::string path;
	if (!a.empty()) {
		Status st = a.expect_positional(1, usage.c_str());
		if (!st)
			return fail(g, st);
		path = a.next();
	}
	if (sub == "show" && path.empty()) {
		auto r = request(g, "key.show");
		if (!r)
			return fail(g, r.status());
		return print_key(g, r->body.value("key", ""), r->body.value("key_file", ""));
	}
	if (sub == "show") {
		auto k = trust::load_node_key(path);
		if (!k)
			return fail(g, k.status());
		return print_key(g, trust::encode_key(k->pub), path);
	}
	if (path.empty()) {
		auto p = daemon_key_file();
		if (!p)
			return fail(g, p.status());
		path = *p;
	}
	std::error_code ec;
	auto dir = std::filesystem::path(path).parent_path();
	if (!dir.empty() && !std::filesystem::exists(dir, ec) &&
	    !std::filesystem::create_directories(dir, ec))
		return fail(g, Status(Code::kIo, "cannot create directory " + dir.string() +
		                                         " for node key " + path + ": " +
		                                         ec.message()));
	auto k = trust::generate_node_key();
	if (!k)
		return fail(g, k.status());
	Status st = trust::save_node_key(path, *k);
	if (!st)
		return fail(g, st);
	return print_key(g, trust::encode_key(k->pub), path);
}

} // namespace memfed::ctl
