# The mesh tests: nodes in network namespaces joined by veth links, each with
# its own memfedd and babeld. They need root; without it they skip (77),
# saying so.
foreach(t mesh_line)
  memfed_shell_test(${t} ${t}_test.sh)
  set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77)
endforeach()
