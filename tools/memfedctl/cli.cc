#include "tools/memfedctl/cli.h"

#include <iostream>

namespace memfed::ctl {

using nlohmann::json;

bool Args::take_flag(const std::string &name, std::string *value)
{
	for (size_t k = i_; k < v_.size(); k++) {
		if (v_[k] == "--")
			return false;
		if (v_[k] == name && k + 1 < v_.size()) {
			*value = v_[k + 1];
			v_.erase(v_.begin() + long(k), v_.begin() + long(k) + 2);
			return true;
		}
		if (v_[k].rfind(name + "=", 0) == 0) {
			*value = v_[k].substr(name.size() + 1);
			v_.erase(v_.begin() + long(k));
			return true;
		}
	}
	return false;
}

bool Args::take_switch(const std::string &name)
{
	for (size_t k = i_; k < v_.size(); k++) {
		if (v_[k] == "--")
			return false;
		if (v_[k] == name) {
			v_.erase(v_.begin() + long(k));
			return true;
		}
	}
	return false;
}

Status Args::expect_positional(size_t n, const char *usage)
{
	for (size_t k = i_; k < v_.size(); k++)
		if (v_[k].size() > 1 && v_[k][0] == '-')
			return usage_error("unknown option '" + v_[k] + "'; usage: " + usage);
	if (v_.size() - i_ != n)
		return usage_error(std::string("usage: ") + usage);
	return Status::ok();
}

Result<control::Client> connect(const Globals &g) { return control::Client::connect(g.socket); }

Result<control::Message> call(control::Client &c, const std::string &op, json fields)
{
	control::Message m;
	m.body = std::move(fields);
	m.body["op"] = op;
	return c.call_ok(m);
}

Result<control::Message> request(const Globals &g, const std::string &op, json fields)
{
	auto c = connect(g);
	if (!c)
		return c.status();
	return call(*c, op, std::move(fields));
}

int fail(const Globals &g, const Status &st)
{
	if (g.json)
		std::cout << json{{"ok", false}, {"code", code_name(st.code())}, {"error", st.message()}}.dump(2)
			  << "\n";
	else
		std::cerr << "memfedctl: " << st.message() << "\n";
	return st.exit_code();
}

int print_json(const json &j)
{
	std::cout << j.dump(2) << "\n";
	return 0;
}

Status usage_error(const std::string &msg) { return Status(Code::kInvalidArgument, msg); }

// "stats", the pager's part gathered through as many pages as it takes
// (the daemon pages it by size, so that thousands of mapped regions fit):
// one body with every region and process.
Result<json> stats_all(control::Client &c)
{
	auto r = call(c, "stats");
	if (!r)
		return r.status();
	json b = std::move(r->body);
	b.erase("ok");
	if (!b.contains("pager") || !b["pager"].is_object())
		return b;
	json &pager = b["pager"];
	while (pager.value("more", false)) {
		std::string next = pager.value("next", "");
		auto page = call(c, "stats", {{"after", next}});
		if (!page)
			return page.status();
		json &p = page->body["pager"];
		for (const char *k : {"regions", "processes"})
			if (p.contains(k) && p[k].is_array())
				for (auto &e : p[k])
					pager[k].push_back(std::move(e));
		pager["more"] = p.value("more", false);
		pager["next"] = p.value("next", "");
		if (pager["more"].get<bool>() && pager["next"].get<std::string>() == next)
			return Status(Code::kProtocol,
			              "stats reply's \"next\" does not move on from '" + next +
			                      "'");
	}
	pager.erase("more");
	pager.erase("next");
	return b;
}

} // namespace memfed::ctl
