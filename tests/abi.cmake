# Included by tests/CMakeLists.txt: the example plugin's unit test, the ABI guard
# (sdk/abi/README.md) and the example built out of tree against the installed SDK.

# test_hello is built in sdk/examples/hello; it is registered here because testing is
# enabled only after the sdk directory was added.
if(TARGET test_hello)
  add_test(NAME unit.example_hello COMMAND test_hello)
  set_tests_properties(unit.example_hello PROPERTIES TIMEOUT 120)
endif()
foreach(example notes wordfilter)
  if(TARGET test_${example})
    add_test(NAME unit.example_${example} COMMAND test_${example})
    set_tests_properties(unit.example_${example} PROPERTIES TIMEOUT 120)
  endif()
endforeach()
# The test host's own tests (sdk/testhost/test_testhost_store.c,
# test_testhost_accounts.c and test_testhost_hooks.c), likewise.
if(TARGET test_testhost_store)
  add_test(NAME unit.testhost_store COMMAND test_testhost_store)
  set_tests_properties(unit.testhost_store PROPERTIES TIMEOUT 120)
endif()
if(TARGET test_testhost_accounts)
  add_test(NAME unit.testhost_accounts COMMAND test_testhost_accounts)
  set_tests_properties(unit.testhost_accounts PROPERTIES TIMEOUT 120)
endif()
if(TARGET test_testhost_hooks)
  add_test(NAME unit.testhost_hooks COMMAND test_testhost_hooks)
  set_tests_properties(unit.testhost_hooks PROPERTIES TIMEOUT 120)
endif()

# abidiff exits non-zero on any change of the anchor library's ABI against the
# committed baseline (4: changed, 8: incompatible change, 12: both).
find_program(ONAIR_ABIDIFF abidiff)
if(ONAIR_ABIDIFF)
  add_test(NAME abi.abidiff
    COMMAND ${ONAIR_ABIDIFF} ${CMAKE_SOURCE_DIR}/sdk/abi/onair-sdk.abi
            $<TARGET_FILE:onair_abi_anchor>)
else()
  add_test(NAME abi.abidiff
    COMMAND sh -c "echo 'abidiff not found: apt-get install abigail-tools' >&2; exit 1")
endif()
set_tests_properties(abi.abidiff PROPERTIES TIMEOUT 120)

# Install this build into a temp prefix, build sdk/examples/hello against it with
# pkg-config onair-sdk, check its exports and run its unit test.
add_test(NAME abi.example_out_of_tree
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/abi_out_of_tree.sh ${CMAKE_BINARY_DIR}
          ${CMAKE_SOURCE_DIR})
set_tests_properties(abi.example_out_of_tree PROPERTIES TIMEOUT 600)

# The docs name the plugin ABI version sdk/include/onair/plugin.h defines (README.md,
# docs/, sdk/ and plugins/ *.md; tests/docs_abi_version.sh), and the check catches stale
# statements (its self-test).
add_test(NAME docs.abi_version
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/docs_abi_version.sh ${CMAKE_SOURCE_DIR})
add_test(NAME docs.abi_version_selftest
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/docs_abi_version.sh --self-test)
set_tests_properties(docs.abi_version docs.abi_version_selftest PROPERTIES TIMEOUT 60)
