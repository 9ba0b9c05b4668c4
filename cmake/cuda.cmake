# cuda.cmake — when nvcc is available, compile the device dialect in a CUDA translation unit for
# sm_80 and sm_90, so a CUDA compile error fails the build. Without nvcc the build goes on.
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
  add_library(ringkernel_cuda_dialect_check OBJECT csrc/backends/cuda/dialect_check.cu)
  set_target_properties(ringkernel_cuda_dialect_check PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON CUDA_ARCHITECTURES "80;90")
  target_include_directories(ringkernel_cuda_dialect_check PRIVATE
    "${CMAKE_CURRENT_SOURCE_DIR}/csrc/include" "${CMAKE_CURRENT_SOURCE_DIR}/csrc/device")
  ringkernel_set_warnings(ringkernel_cuda_dialect_check)
  # Built with the default target, so `cmake --build` and `pip install .` both compile it.
  add_custom_target(ringkernel_cuda_check ALL DEPENDS ringkernel_cuda_dialect_check)
  message(STATUS "ringkernel: CUDA ${CMAKE_CUDA_COMPILER_VERSION}; device dialect compiled for sm_80, sm_90")
endif()
