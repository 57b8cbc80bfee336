# Included by tests/CMakeLists.txt: the Debian packages built, installed into a clean
# Debian 12 root, run, used by an out-of-tree plugin and purged (test_package.sh).
# Root only (CI runs as root); the first run makes the base root with mmdebstrap and
# caches it in the build directory.
# Registered in the plain build only: the sanitizer build (make sanitize) would build and
# test the very same packages again.
if(NOT ONAIR_SANITIZE)
  add_test(NAME package.debian
    COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/package/test_package.sh ${CMAKE_SOURCE_DIR}
            ${CMAKE_BINARY_DIR}/package-test)
  # started first (COST): the longest test, it overlaps the rest of the suite
  set_tests_properties(package.debian PROPERTIES TIMEOUT 900 COST 10000)
endif()
