# Replicated regions (issue 15): three modules and a client whose regions get
# three copies; modules killed under a running `sort` and brought back, copies
# caught up by page version, a damaged page repaired from a good copy. It runs
# `memfedctl run`, which preloads the shim into an uninstrumented program, so
# it uses the release binaries (MEMFED_PROGRAM_ENV, see client.cmake).
# Included by tests/integration/CMakeLists.txt.
memfed_shell_test(replication replication_test.sh)
set_tests_properties(replication PROPERTIES TIMEOUT 300 ENVIRONMENT "${MEMFED_PROGRAM_ENV}")
