# libmemfed and libmemfed-preload.so: the C/C++ API through its examples,
# unmodified programs under `memfedctl run` (files, heap, fork, daemon
# restart) and the acceptance runs of real Debian programs. Included by
# tests/integration/CMakeLists.txt.
list(APPEND MEMFED_TEST_ENV
  MEMFED_EXAMPLE_MAP=$<TARGET_FILE:memfed-example-map>
  MEMFED_EXAMPLE_EVA=$<TARGET_FILE:memfed-example-eva>)

foreach(t client_api client_files client_fork client_restart
          programs_stress_ng programs_sqlite programs_python)
  memfed_shell_test(${t} ${t}_test.sh)
  set_tests_properties(${t} PROPERTIES TIMEOUT 180)
endforeach()
