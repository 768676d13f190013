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

function(tessera_apply_sanitizers target)
  if(TESSERA_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
