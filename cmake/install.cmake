# install.cmake — install the core as a CMake package: find_package(ringkernel) then link
# ringkernel::ringkernel.
include(CMakePackageConfigHelpers)

install(TARGETS ringkernel EXPORT ringkernelTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY csrc/include/ringkernel DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/generated/ringkernel/version.hpp"
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ringkernel)
install(DIRECTORY csrc/device/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ringkernel/device
  FILES_MATCHING PATTERN "*.h")

set(_rk_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/ringkernel)
install(EXPORT ringkernelTargets NAMESPACE ringkernel:: DESTINATION ${_rk_cmake_dir})
configure_package_config_file(cmake/ringkernelConfig.cmake.in
  "${CMAKE_CURRENT_BINARY_DIR}/ringkernelConfig.cmake" INSTALL_DESTINATION ${_rk_cmake_dir})
write_basic_package_version_file("${CMAKE_CURRENT_BINARY_DIR}/ringkernelConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/ringkernelConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/ringkernelConfigVersion.cmake" DESTINATION ${_rk_cmake_dir})
