# cuda.cmake — when nvcc is available, build the CUDA backend: the built-in handlers' persistent kernels
# (device code) and the host side against the statically linked CUDA runtime. Without nvcc the build
# goes on and rk.backends() says the build has no CUDA backend.
#
# Which GPUs the device code is for: CMAKE_CUDA_ARCHITECTURES, from (first found) -D on the command line,
# $CMAKE_CUDA_ARCHITECTURES, or $CUDAARCHS (CMake's own variable); else SASS for sm_75, sm_80 and sm_90
# plus sm_90 PTX for later GPUs. The backend refuses GPUs below compute capability 7.5 (it needs
# __nanosleep and the PTX memory model's acquire/release atomics), so architectures below 75 are refused
# here too. scripts/gpu_prepare.sh builds for 90 alone (H100/H200): faster, and a smaller bundle.
set(RINGKERNEL_HAS_CUDA OFF)
set(RINGKERNEL_CUDA_DEFAULT_ARCHITECTURES "75-real;80-real;90-real;90-virtual")
if(NOT RINGKERNEL_ENABLE_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER)
    find_program(_rk_nvcc nvcc HINTS ENV CUDA_HOME ENV CUDA_PATH PATH_SUFFIXES bin
                 PATHS /usr/local/cuda/bin)
    if(_rk_nvcc)
      set(CMAKE_CUDA_COMPILER "${_rk_nvcc}" CACHE FILEPATH "CUDA compiler")
    endif()
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Decided before enable_language(CUDA), which would otherwise fill in the compiler's own default.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      if(NOT "$ENV{CMAKE_CUDA_ARCHITECTURES}" STREQUAL "")
        set(CMAKE_CUDA_ARCHITECTURES "$ENV{CMAKE_CUDA_ARCHITECTURES}" CACHE STRING "CUDA architectures")
      elseif("$ENV{CUDAARCHS}" STREQUAL "")
        set(CMAKE_CUDA_ARCHITECTURES "${RINGKERNEL_CUDA_DEFAULT_ARCHITECTURES}" CACHE STRING "CUDA architectures")
      endif()
    endif()
    enable_language(CUDA)
    foreach(_rk_arch IN LISTS CMAKE_CUDA_ARCHITECTURES)
      string(REGEX MATCH "^[0-9]+" _rk_arch_number "${_rk_arch}")
      if(_rk_arch MATCHES "^(all|all-major|native)$")
        continue()
      elseif(NOT _rk_arch_number OR _rk_arch_number LESS 75)
        message(FATAL_ERROR "CMAKE_CUDA_ARCHITECTURES='${CMAKE_CUDA_ARCHITECTURES}': '${_rk_arch}' is not an "
                            "architecture of 75 or later (the CUDA backend needs compute capability 7.5+); "
                            "use e.g. 90 for H100/H200 or '${RINGKERNEL_CUDA_DEFAULT_ARCHITECTURES}'")
      endif()
    endforeach()
    set(RINGKERNEL_HAS_CUDA ON)
  elseif(RINGKERNEL_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "RINGKERNEL_ENABLE_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "ringkernel: no CUDA compiler found; CUDA device code is not compiled")
  endif()
endif()

if(RINGKERNEL_HAS_CUDA)
  find_package(CUDAToolkit REQUIRED)
  # Device code compiled into the library: the built-in handlers' persistent kernels and a compile check
  # of the ring protocol in both scopes.
  add_library(ringkernel_cuda_kernels OBJECT csrc/backends/cuda/cuda_kernels.cu csrc/backends/cuda/dialect_check.cu)
  set_target_properties(ringkernel_cuda_kernels PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
    POSITION_INDEPENDENT_CODE ON)
  target_include_directories(ringkernel_cuda_kernels PRIVATE
    "${CMAKE_CURRENT_SOURCE_DIR}/csrc/include" "${CMAKE_CURRENT_SOURCE_DIR}/csrc/device")
  ringkernel_set_warnings(ringkernel_cuda_kernels)
  # Host side: the C++ compiler builds the backend against the CUDA runtime API, linked statically
  # (cudart opens the driver itself, at the first CUDA call), so the library loads without a driver.
  target_sources(ringkernel PRIVATE $<TARGET_OBJECTS:ringkernel_cuda_kernels>
                 csrc/backends/cuda/cuda_backend.cpp)
  target_include_directories(ringkernel SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(ringkernel PRIVATE CUDA::cudart_static)
  target_compile_definitions(ringkernel PRIVATE RINGKERNEL_HAS_CUDA=1)
  message(STATUS "ringkernel: CUDA ${CMAKE_CUDA_COMPILER_VERSION}; CUDA backend built for architectures "
                 "'${CMAKE_CUDA_ARCHITECTURES}' (cudart static)")
endif()

# The driver probe (no driver linked) and NVRTC are built either way: rk.backends() says why CUDA cannot run.
target_sources(ringkernel PRIVATE csrc/backends/cuda/cuda_probe.cpp csrc/backends/cuda/nvrtc.cpp)
ringkernel_backend(cuda)
