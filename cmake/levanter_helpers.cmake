# Shared compile settings for every target of the project.
function(levanter_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare
                         -Wno-missing-field-initializers)
  # libtorch is built with the new C++11 ABI on Debian; TORCH_CXX_FLAGS carries it.
  separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(${target} PRIVATE ${_torch_flags})
endfunction()

# Precompile the heavy ATen header once (in the haliax target) and reuse it everywhere: on 2 cores a
# translation unit that includes <ATen/ATen.h> costs ~10 s without it.
function(levanter_use_aten_pch target)
  if(NOT LEVANTER_USE_PCH)
    return()
  endif()
  if(target STREQUAL "haliax")
    target_precompile_headers(haliax PRIVATE <ATen/ATen.h>)
  else()
    target_precompile_headers(${target} REUSE_FROM haliax)
  endif()
endfunction()

# One GoogleTest binary per test folder: fewer links against libtorch than one per file.
# levanter_add_test_suite(name dir LIBS... [FAULT_FILTER gtest-filter]): LIBS are the project libraries the suite
# tests (haliax's suite links haliax alone, so it cannot depend on levanter). Each test gets one CTest label (a list
# given to gtest_discover_tests' PROPERTIES is split into separate property arguments, so only its first item would
# stick): the suite's name (`ctest -L interop` runs interop_tests, the tests against outside tools), or for the tests
# FAULT_FILTER matches `<name>_fault` (`ctest -L fault`: the fault-injection and hostile-input suite,
# docs/reliability.md; `-L` is a regular expression, so `ctest -L levanter_tests` still runs them too).
function(levanter_add_test_suite name dir)
  cmake_parse_arguments(S "" "FAULT_FILTER" "" ${ARGN})
  file(GLOB_RECURSE _srcs CONFIGURE_DEPENDS ${dir}/*.cpp)
  if(NOT _srcs)
    return()
  endif()
  add_executable(${name} ${_srcs})
  target_link_libraries(${name} PRIVATE ${S_UNPARSED_ARGUMENTS} GTest::gtest GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${name} PRIVATE LEVANTER_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                             LEVANTER_BINARY_DIR="${PROJECT_BINARY_DIR}"
                             LEVANTER_PYTHON="${LEVANTER_PYTHON}"
                             LEVANTER_INTEROP_PYTHON="${PROJECT_SOURCE_DIR}/.venv/interop/bin/python")
  levanter_target_defaults(${name})
  levanter_use_aten_pch(${name})
  if(S_FAULT_FILTER)
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                         TEST_FILTER "${S_FAULT_FILTER}"
                         PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" LABELS ${name}_fault)
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                         TEST_FILTER "-${S_FAULT_FILTER}"
                         PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" LABELS ${name})
  else()
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                         PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" LABELS ${name})
  endif()
endfunction()
