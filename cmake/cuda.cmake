# cuda.cmake — when nvcc is available, build the CUDA backend: the built-in handlers' persistent kernels
# (device code, sm_80/sm_90 + PTX) and the host side against the statically linked CUDA runtime.
# Without nvcc the build goes on and rk.backends() says the build has no CUDA backend.
set(RINGKERNEL_HAS_CUDA OFF)
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
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    set(RINGKERNEL_HAS_CUDA ON)
  elseif(RINGKERNEL_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "RINGKERNEL_ENABLE_CUDA=ON but no CUDA compiler was found")
  else()
    message(STATUS "ringkernel: no CUDA compiler found; CUDA device code is not compiled")
  endif()
endif()

if(RINGKERNEL_HAS_CUDA)
  find_package(CUDAToolkit REQUIRED)
  # Device code compiled into the library: the built-in handlers' persistent kernels (SASS for sm_75,
  # sm_80 and sm_90, PTX for later GPUs) and a compile check of the ring protocol in both scopes.
  add_library(ringkernel_cuda_kernels OBJECT csrc/backends/cuda/cuda_kernels.cu csrc/backends/cuda/dialect_check.cu)
  set_target_properties(ringkernel_cuda_kernels PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON CUDA_ARCHITECTURES "75-real;80-real;90-real;90-virtual"
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
  message(STATUS "ringkernel: CUDA ${CMAKE_CUDA_COMPILER_VERSION}; CUDA backend built (sm_75, sm_80, sm_90 + PTX, cudart static)")
endif()
