# options.cmake — the switches of the build. Tests, benchmarks and install rules default on only
# when ringkernel is the top-level project and not being built as a Python wheel.
include(GNUInstallDirs)

set(_rk_top OFF)
if(PROJECT_IS_TOP_LEVEL AND NOT SKBUILD)
  set(_rk_top ON)
endif()

option(RINGKERNEL_BUILD_TESTS "Build the C++ tests (GoogleTest) and register them with ctest" ${_rk_top})
option(RINGKERNEL_BUILD_BENCHMARKS "Build the C++ benchmarks (Google Benchmark)" ${_rk_top})
option(RINGKERNEL_INSTALL "Install the C++ library and its CMake package" ${_rk_top})
option(RINGKERNEL_BUILD_PYTHON "Build the Python extension ringkernel._core" ${SKBUILD})
option(RINGKERNEL_WERROR "Treat warnings in ringkernel's own code as errors" OFF)
set(RINGKERNEL_ENABLE_CUDA "AUTO" CACHE STRING "Compile CUDA device code: AUTO (when nvcc is found), ON or OFF")
set_property(CACHE RINGKERNEL_ENABLE_CUDA PROPERTY STRINGS AUTO ON OFF)
set(RINGKERNEL_ENABLE_OPENCL "AUTO" CACHE STRING "Build the OpenCL backend: AUTO (when CL/cl.h is found), ON or OFF")
set_property(CACHE RINGKERNEL_ENABLE_OPENCL PROPERTY STRINGS AUTO ON OFF)
set(RINGKERNEL_SANITIZE "" CACHE STRING "Sanitizers for ringkernel's own code: '', 'address,undefined' or 'thread'")
