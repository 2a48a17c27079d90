# memfedd as a Debian service: its systemd unit, the daemon run the way the
# unit runs it (sd_notify, reload, the unit's capabilities), and the Debian
# packages built, installed, used and purged. Included by
# tests/integration/CMakeLists.txt.
set(MEMFED_UNIT_IN ${PROJECT_SOURCE_DIR}/packaging/systemd/memfedd.service.in)

add_test(NAME service_unit COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/service_unit_test.sh
  ${CMAKE_BINARY_DIR}/packaging/verify/memfedd.service)
set_tests_properties(service_unit PROPERTIES LABELS integration TIMEOUT 60 SKIP_RETURN_CODE 77)

memfed_shell_test(service_notify service_notify_test.sh)
# It runs python3 under the preload shim, so the release tree's binaries.
set_tests_properties(service_notify PROPERTIES TIMEOUT 180 ENVIRONMENT
  "MEMFEDD=${MEMFED_TOOLS_DIR}/bin/memfedd;MEMFEDCTL=${MEMFED_TOOLS_DIR}/bin/memfedctl;MEMFED_UNIT=${MEMFED_UNIT_IN}")

# Installs and purges packages: alone, never beside another test.
add_test(NAME deb_install COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/deb_install_test.sh
  ${PROJECT_SOURCE_DIR} ${MEMFED_TOOLS_DIR})
set_tests_properties(deb_install PROPERTIES LABELS integration TIMEOUT 600
  RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
