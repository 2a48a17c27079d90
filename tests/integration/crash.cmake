# crash_test: SIGKILL a module daemon at random instants during a write storm,
# 24 times; after each kill `memfedctl pool check` is clean and every page is a
# complete acknowledged-or-in-flight version.
add_executable(crash_test ${CMAKE_CURRENT_LIST_DIR}/crash_test.cc)
target_link_libraries(crash_test PRIVATE memfed_transport memfed_trust memfed_common)
target_include_directories(crash_test PRIVATE ${PROJECT_SOURCE_DIR})
add_dependencies(crash_test memfedd memfedctl)
add_test(NAME crash COMMAND crash_test --memfedd $<TARGET_FILE:memfedd> --memfedctl $<TARGET_FILE:memfedctl>
  --rounds 24)
set_tests_properties(crash PROPERTIES LABELS integration TIMEOUT 600)
