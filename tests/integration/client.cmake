# libmemfed and libmemfed-preload.so: the C/C++ API through its examples,
# unmodified programs under `memfedctl run` (files, heap, fork, daemon
# restart) and the acceptance runs of real Debian programs. Included by
# tests/integration/CMakeLists.txt.
list(APPEND MEMFED_TEST_ENV
  MEMFED_EXAMPLE_MAP=$<TARGET_FILE:memfed-example-map>
  MEMFED_EXAMPLE_EVA=$<TARGET_FILE:memfed-example-eva>)

memfed_shell_test(client_api client_api_test.sh)
set_tests_properties(client_api PROPERTIES TIMEOUT 180)

# These preload libmemfed-preload.so into uninstrumented programs, so they use
# the non-sanitized binaries of ${MEMFED_TOOLS_DIR} (the release tree under
# `make test`): a sanitized shim cannot load into python3 or sqlite3.
set(MEMFED_PROGRAM_ENV ${MEMFED_TEST_ENV}
  MEMFEDD=${MEMFED_TOOLS_DIR}/bin/memfedd
  MEMFEDCTL=${MEMFED_TOOLS_DIR}/bin/memfedctl)
# Built in every tree; the tests run the release tree's (uninstrumented) one.
add_executable(memfed-test-drop-probe ${CMAKE_CURRENT_LIST_DIR}/drop_probe.c)
list(APPEND MEMFED_PROGRAM_ENV MEMFED_DROP_PROBE=${MEMFED_TOOLS_DIR}/bin/memfed-test-drop-probe)
add_executable(memfed-test-page-verify ${CMAKE_CURRENT_LIST_DIR}/page_verify.c)
target_link_libraries(memfed-test-page-verify PRIVATE Threads::Threads)
list(APPEND MEMFED_PROGRAM_ENV MEMFED_PAGE_VERIFY=${MEMFED_TOOLS_DIR}/bin/memfed-test-page-verify)
add_executable(memfed-test-reuse-probe ${CMAKE_CURRENT_LIST_DIR}/reuse_probe.c)
list(APPEND MEMFED_PROGRAM_ENV MEMFED_REUSE_PROBE=${MEMFED_TOOLS_DIR}/bin/memfed-test-reuse-probe)
foreach(t client_files client_fork client_fork_module_away client_restart client_drop_restart
          client_grace restart_pressure programs_stress_ng programs_sqlite programs_python
          thin_heaps page_verify client_restart_verify client_drop_reuse)
  memfed_shell_test(${t} ${t}_test.sh)
  set_tests_properties(${t} PROPERTIES TIMEOUT 180 ENVIRONMENT "${MEMFED_PROGRAM_ENV}")
endforeach()
