# Trust on one node (issue 13): quotas per uid, `region ls` filtered to what a
# user may read, and freed extents reading as zeros to their next owner, each
# checked as real other uids (setpriv; skipped, exit 77, when not root).
# Included by tests/integration/CMakeLists.txt.
memfed_shell_test(quota quota_test.sh)
set_tests_properties(quota PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77)

# Trust from the command line: node keys (memfedctl key) and trusted peers
# (memfedctl peer), written to the config file and reloaded on SIGHUP.
# Included by tests/integration/CMakeLists.txt.
memfed_shell_test(trust_cli trust_cli_test.sh)
set_tests_properties(trust_cli PROPERTIES TIMEOUT 120)

# Trust on the wire between daemons: untrusted keys refused, keys not
# addresses, no byte to a plaintext client, a tampering relay in another
# network namespace detected (that part needs root, and says so without it).
memfed_shell_test(trust_wire trust_wire_test.sh)
set_tests_properties(trust_wire PROPERTIES TIMEOUT 180)

# Authorization by (node key, uid) between three nodes: refusals naming the
# grant, read and write grants, revoke at the next request, node quotas.
memfed_shell_test(authz authz_test.sh)
set_tests_properties(authz PROPERTIES TIMEOUT 120)

# Authorization for a node's own users, as real other uids (setpriv; exit 77
# without root): region ls filtered by owner node and grants, and the pager's
# map check, probed by a program that speaks the map protocol itself.
add_executable(memfed-test-map-probe ${CMAKE_CURRENT_SOURCE_DIR}/map_probe.cc)
target_link_libraries(memfed-test-map-probe PRIVATE memfed_client_core)
memfed_shell_test(authz_users authz_users_test.sh)
set_tests_properties(authz_users PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77 ENVIRONMENT
  "${MEMFED_TEST_ENV};MEMFED_MAP_PROBE=$<TARGET_FILE:memfed-test-map-probe>")
