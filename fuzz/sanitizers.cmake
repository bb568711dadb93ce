# Included by the top-level CMakeLists.txt when LEVANTER_FUZZ is ON, before src/: every project source of this
# build is compiled with libFuzzer's coverage hooks and AddressSanitizer + UndefinedBehaviorSanitizer, so a bug
# inside a parser (not only in the fuzz target's own file) is reported where it happens. Undefined behaviour
# aborts (-fno-sanitize-recover) so that libFuzzer records it as a crash with its input. The fuzz targets
# themselves add -fsanitize=fuzzer at link time (fuzz/CMakeLists.txt). Debian's libtorch, yaml-cpp, zlib and zstd
# are not rebuilt: their code runs uninstrumented, but every allocation and memcpy goes through ASan.
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "LEVANTER_FUZZ needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++-14, "
                      "or run scripts/fuzz, which does")
endif()
add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                    -fno-omit-frame-pointer)
add_link_options(-fsanitize=address,undefined)
