# Replicated regions (issue 15): three modules and a client whose regions get
# three copies; modules killed under a running `sort` and brought back, copies
# caught up by page version, a damaged page repaired from a good copy. It runs
# `memfedctl run`, which preloads the shim into an uninstrumented program, so
# it uses the release binaries (MEMFED_PROGRAM_ENV, see client.cmake).
# Included by tests/integration/CMakeLists.txt.
memfed_shell_test(replication replication_test.sh)
set_tests_properties(replication PROPERTIES TIMEOUT 300 ENVIRONMENT "${MEMFED_PROGRAM_ENV}")

# Lost copies rebuilt elsewhere after a 2 s grace (--replica-grace): a module
# killed for good, a module restarted on a fresh pool, the per-copy lag, a
# region with nowhere to go, and python3's heap hash with a copy's module
# killed mid-run (so the release binaries too).
memfed_shell_test(replication_rebuild replication_rebuild_test.sh)
set_tests_properties(replication_rebuild PROPERTIES TIMEOUT 300 ENVIRONMENT "${MEMFED_PROGRAM_ENV}")

# Two pagers that both know a region whose copy's module dies: one new copy
# only (the rebuild is claimed); the dropped copy's tombstone survives a
# restart of both pagers and the copy is deleted when its module returns.
memfed_shell_test(replication_once replication_once_test.sh)
set_tests_properties(replication_once PROPERTIES TIMEOUT 120)
