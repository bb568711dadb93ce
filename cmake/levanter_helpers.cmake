# Shared compile settings for every target of the project.
function(levanter_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare
                         -Wno-missing-field-initializers)
  # libtorch is built with the new C++11 ABI on Debian; TORCH_CXX_FLAGS carries it.
  separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(${target} PRIVATE ${_torch_flags})
  # Every target gets the same flags, so the precompiled header (built with haliax's) stays usable by all.
  if(LEVANTER_SANITIZE)
    # -Wno-maybe-uninitialized: GCC's manual warns that sanitizers raise that warning's false positives
    # (here: std::function inside libstdc++'s <regex>, in optim/config.cpp); the normal build still checks.
    target_compile_options(${target} PRIVATE -fsanitize=${LEVANTER_SANITIZE} -fno-omit-frame-pointer
                           -Wno-maybe-uninitialized)
    if(LEVANTER_SANITIZE MATCHES "undefined")
      # Undefined behaviour stops the test (a report that scrolls by in a passing test is not seen).
      target_compile_options(${target} PRIVATE -fno-sanitize-recover=undefined)
    endif()
    # PUBLIC: a static library hands it on to whatever links it (executables link the runtime).
    target_link_options(${target} PUBLIC -fsanitize=${LEVANTER_SANITIZE})
  endif()
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
# tests (haliax's suite links haliax, and levanter_runtime only for openblas_core_init.cpp, so its tests cannot depend
# on the rest of levanter). Each test gets one CTest label (a list
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
  # openblas_core_init.cpp: each binary runs with the OpenBLAS core the product chooses (runtime/openblas_core.h).
  add_executable(${name} ${_srcs} ${PROJECT_SOURCE_DIR}/tests/openblas_core_init.cpp)
  target_link_libraries(${name} PRIVATE ${S_UNPARSED_ARGUMENTS} levanter_runtime GTest::gtest GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${name} PRIVATE LEVANTER_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                             LEVANTER_BINARY_DIR="${PROJECT_BINARY_DIR}"
                             LEVANTER_PYTHON="${LEVANTER_PYTHON}"
                             LEVANTER_INTEROP_PYTHON="${PROJECT_SOURCE_DIR}/.venv/interop/bin/python")
  levanter_target_defaults(${name})
  levanter_use_aten_pch(${name})
  set(_discovery)
  if(LEVANTER_SANITIZE)
    # An instrumented binary loading libtorch can take longer than the default 5 s to list its tests.
    set(_discovery DISCOVERY_TIMEOUT 60)
  endif()
  if(S_FAULT_FILTER)
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST ${_discovery} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                         TEST_FILTER "${S_FAULT_FILTER}"
                         PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" LABELS ${name}_fault)
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST ${_discovery} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                         TEST_FILTER "-${S_FAULT_FILTER}"
                         PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" LABELS ${name})
  else()
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST ${_discovery} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                         PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2" LABELS ${name})
  endif()
endfunction()
