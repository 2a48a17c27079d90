// eva_list.cpp: a linked list in federated memory whose links are extended
// virtual addresses (EVAs), so any process of the node can follow them.
//
//   c++ -std=c++17 eva_list.cpp $(pkg-config --cflags --libs memfed) -o eva_list
//   ./eva_list [SOCKET]
//
// Builds a list of N nodes spread over two regions, then walks it from its
// head EVA and checks the sum. Exit 0 on success.
#include <memfed.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>

namespace
{

struct Node {
	uint64_t value;
	uint64_t next; // EVA of the next node, 0 at the end
};

template <typename T> T must(memfed::api::Expected<T> e, const char *what)
{
	if (!e) {
		std::fprintf(stderr, "%s: %s\n", what, e.error().to_string().c_str());
		std::exit(1);
	}
	return std::move(e.value());
}

} // namespace

int main(int argc, char **argv)
{
	auto conn = must(memfed::api::Connection::connect(argc > 1 ? argv[1] : ""), "connect");
	const char *names[2] = {"example-eva-a", "example-eva-b"};
	uint64_t base[2];
	for (int i = 0; i < 2; i++) {
		auto made = conn.create_region(names[i], 1 << 20);
		if (!made && made.error().code() != std::errc::file_exists)
			must(std::move(made), "create");
		base[i] = must(conn.window(names[i]), "window"); // EVA of byte 0
	}

	// Node k lives in region k % 2 at slot k / 2; it links to node k + 1.
	const uint64_t n = 1000;
	for (uint64_t k = 0; k < n; k++) {
		uint64_t eva = base[k % 2] + (k / 2) * sizeof(Node);
		Node *node = must(conn.eva_to_ptr<Node>(eva), "eva_to_ptr");
		node->value = k * k;
		node->next = k + 1 < n ? base[(k + 1) % 2] + ((k + 1) / 2) * sizeof(Node) : 0;
	}

	// Walk from the head: every hop turns an EVA into a local pointer.
	uint64_t sum = 0, hops = 0;
	for (uint64_t eva = base[0]; eva != 0; hops++) {
		Node *node = must(conn.eva_to_ptr<Node>(eva), "eva_to_ptr");
		sum += node->value;
		eva = node->next;
	}
	uint64_t want = (n - 1) * n * (2 * n - 1) / 6;
	std::printf("%llu hops, sum %llu (expected %llu), head EVA 0x%llx\n",
	            (unsigned long long)hops, (unsigned long long)sum, (unsigned long long)want,
	            (unsigned long long)base[0]);
	return sum == want && hops == n ? 0 : 1;
}
