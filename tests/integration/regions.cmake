# Region deletion and scale: 20,000 regions created, listed (locally and from
# a remote module) and deleted; `region rm` of a region in use, and forced
# (SIGBUS to every mapping, locally and on a remote module); a clean run
# under a heap budget logs no write-back to a deleted region. Included by
# tests/integration/CMakeLists.txt. They run `memfedctl run`, which preloads
# the shim into uninstrumented programs, so they use the release binaries
# (MEMFED_PROGRAM_ENV, see client.cmake).
foreach(t regions_scale region_rm_busy region_rm_forced)
  memfed_shell_test(${t} ${t}_test.sh)
  set_tests_properties(${t} PROPERTIES TIMEOUT 300 ENVIRONMENT "${MEMFED_PROGRAM_ENV}")
endforeach()
