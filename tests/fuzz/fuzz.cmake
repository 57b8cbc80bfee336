# Included by tests/CMakeLists.txt (the normal and the sanitizer build, any compiler):
#   fuzz.replay_<name>  every committed seed (corpus/<name>) and crash reproducer
#                       (crashes/<name>) through the harness, without libFuzzer;
#   fuzz.smoke          `make fuzz` with a short budget: a clang build of the harnesses in
#                       <build>/fuzz and each one fuzzed for 20,000 inputs (at most 30 s),
#                       with a fixed seed (FUZZ_SEED=1): a regression check, not exploration.
include(${CMAKE_CURRENT_LIST_DIR}/harnesses.cmake)
foreach(h ${ONAIR_FUZZ_HARNESSES})
  add_executable(fuzz_replay_${h} ${CMAKE_CURRENT_LIST_DIR}/fuzz_${h}.c
                 ${CMAKE_CURRENT_LIST_DIR}/replay_main.c ${ONAIR_FUZZ_SOURCES_${h}})
  target_include_directories(fuzz_replay_${h} PRIVATE ${ONAIR_FUZZ_INCLUDE_${h}})
  target_link_libraries(fuzz_replay_${h} PRIVATE onair_core ${ONAIR_FUZZ_LIBS_${h}})
  set(inputs ${CMAKE_CURRENT_LIST_DIR}/corpus/${h})
  if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/crashes/${h})
    list(APPEND inputs ${CMAKE_CURRENT_LIST_DIR}/crashes/${h})
  endif()
  add_test(NAME fuzz.replay_${h} COMMAND fuzz_replay_${h} ${inputs})
  set_tests_properties(fuzz.replay_${h} PROPERTIES TIMEOUT 120)
endforeach()

# The smoke run builds with clang on its own: once per suite, not again under sanitize.
if(NOT ONAIR_SANITIZE)
  add_test(NAME fuzz.smoke
    COMMAND env FUZZ_SEED=1 make -s -C ${CMAKE_SOURCE_DIR} fuzz FUZZ_BUILD=${CMAKE_BINARY_DIR}/fuzz
            FUZZ_SECONDS=30 FUZZ_RUNS=20000 JOBS=2)
  set_tests_properties(fuzz.smoke PROPERTIES TIMEOUT 900 COST 5000) # started early, as package.debian
endif()
