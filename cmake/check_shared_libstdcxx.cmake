# cmake -DNM=... -DLIB=... -P check_shared_libstdcxx.cmake: run after libtessera.so links.
# A toolchain that links libstdc++ statically (seen on a CUDA image: gcc 13 in /opt/gcc) puts an
# exported copy of it into the library. The libraries loaded with it (sentencepiece) then bind
# their std::ostream calls to that copy before it is initialised, and `import tessera` dies with
# SIGSEGV. Better a clear build error than that crash.
execute_process(COMMAND "${NM}" -D --defined-only "${LIB}" OUTPUT_VARIABLE symbols RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0)
  message(STATUS "tessera: could not list ${LIB}'s symbols with ${NM}: libstdc++ check skipped")
  return()
endif()
if(symbols MATCHES "_ZNSt8ios_base4InitC[12]Ev")
  file(REMOVE "${LIB}")
  message(FATAL_ERROR "${LIB} defines std::ios_base::Init: the compiler linked libstdc++ into it "
    "statically, and importing it would crash. Link the shared libstdc++ by name, e.g. "
    "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--push-state,--no-as-needed,/lib/x86_64-linux-gnu/libstdc++.so.6,--pop-state "
    "(scripts/device_check.sh does this).")
endif()
