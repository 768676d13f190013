# tessera_add_test(name SOURCES ... LABELS ...): one GoogleTest executable registered with ctest.
find_package(GTest QUIET)
function(tessera_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE tessera GTest::gtest GTest::gtest_main)
  target_precompile_headers(${name} REUSE_FROM tessera_test_pch)
  tessera_apply_sanitizers(${name})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}"
    ENVIRONMENT "TESSERA_SHARED_DIR=${TESSERA_SHARED_DIR}")
endfunction()

# TESSERA_FUZZ instruments like TESSERA_SANITIZE plus libFuzzer's coverage hooks
# (fuzzer-no-link: the library gets no main), and makes undefined behaviour fatal so that the
# fuzzer stops on it. The fuzz/ executables add -fsanitize=fuzzer themselves.
if(TESSERA_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TESSERA_FUZZ needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++")
  endif()
  set(TESSERA_FUZZ_FLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
      -fno-omit-frame-pointer -g)
endif()

function(tessera_apply_sanitizers target)
  if(TESSERA_FUZZ)
    target_compile_options(${target} PRIVATE ${TESSERA_FUZZ_FLAGS})
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  elseif(TESSERA_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
