# Trust on one node (issue 13): quotas per uid, `region ls` filtered to what a
# user may read, and freed extents reading as zeros to their next owner, each
# checked as real other uids (setpriv; skipped, exit 77, when not root).
# Included by tests/integration/CMakeLists.txt.
memfed_shell_test(quota quota_test.sh)
set_tests_properties(quota PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77)
