# Installs headers, libtessera and a CMake package so `find_package(tessera)` works for C++ users.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS tessera EXPORT tesseraTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS tessera_sentencepiece LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})  # opened beside libtessera
install(DIRECTORY csrc/tessera DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" PATTERN "pch.h" EXCLUDE)
# Named variants, read at run time (core::load_config_dir): share/tessera/models/<family>/configs/.
install(DIRECTORY csrc/tessera/models/ DESTINATION ${CMAKE_INSTALL_DATADIR}/tessera/models
  FILES_MATCHING PATTERN "*.json")
# The pybind11 helper for extensions lives with the bindings (csrc/python), installed beside.
install(DIRECTORY csrc/python/tessera DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(EXPORT tesseraTargets NAMESPACE tessera:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tessera)
configure_package_config_file(cmake/tesseraConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/tesseraConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tessera)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/tesseraConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/tesseraConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/tesseraConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/tessera)
