# memfedd's Prometheus endpoint and memfedctl stats --plot, against a daemon
# that served real faults (the C API example). Included by
# tests/integration/CMakeLists.txt.
memfed_shell_test(metrics metrics_test.sh)
set_tests_properties(metrics PROPERTIES TIMEOUT 180 ENVIRONMENT
  "${MEMFED_TEST_ENV};MEMFED_EXAMPLE_MAP=$<TARGET_FILE:memfed-example-map>")
