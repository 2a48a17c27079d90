# Trust from the command line: node keys (memfedctl key) and trusted peers
# (memfedctl peer), written to the config file and reloaded on SIGHUP.
# Included by tests/integration/CMakeLists.txt.
memfed_shell_test(trust_cli trust_cli_test.sh)
set_tests_properties(trust_cli PROPERTIES TIMEOUT 120)
