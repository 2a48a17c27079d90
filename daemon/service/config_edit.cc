// save_trusted_peers: memfedd writing "trust.peers" back into its config
// file for `memfedctl peer add|rm` (see config.h). The rest of the file is
// kept as the operator wrote it, key order included (ordered_json).
#include <nlohmann/json.hpp>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "daemon/common/atomic_file.h"
#include "daemon/service/config.h"

namespace memfed
{

Status save_trusted_peers(const std::string &path, const std::vector<trust::TrustedPeer> &peers)
{
	using nlohmann::ordered_json;
	ordered_json doc = ordered_json::object();
	std::ifstream in(path);
	if (in) {
		std::stringstream ss;
		ss << in.rdbuf();
		doc = ordered_json::parse(ss.str(), nullptr, false);
		if (doc.is_discarded() || !doc.is_object())
			return Status(
			        Code::kInvalidArgument,
			        "config file " + path +
			                " is not a JSON object; fix it (memfedd --config " + path +
			                " --print-config checks it) before changing the trusted "
			                "peers");
	} else if (errno != ENOENT) {
		return Status::from_errno(errno, "reading config file " + path);
	}
	if (!doc.contains("trust"))
		doc["trust"] = ordered_json::object();
	if (!doc["trust"].is_object())
		return Status(Code::kInvalidArgument,
		              "config file " + path +
		                      ": key \"trust\" must be an object; fix it first");
	doc["trust"]["peers"] = ordered_json::parse(trusted_peers_json(peers).dump());
	std::string text = doc.dump(2) + "\n";
	DaemonConfig check;
	MF_RETURN_IF_ERROR(apply_config_json(text, path, &check));

	std::error_code ec;
	auto dir = std::filesystem::path(path).parent_path();
	if (!dir.empty())
		std::filesystem::create_directories(dir, ec);
	if (ec)
		return Status(Code::kIo, "cannot create directory " + dir.string() +
		                                 " for config file " + path + ": " + ec.message());
	return write_file_atomic(path, text, AtomicWrite{}, "config file");
}

} // namespace memfed
