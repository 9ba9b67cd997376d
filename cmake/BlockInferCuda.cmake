# The CUDA backend is built when nvcc is found (BLOCKINFER_CUDA=AUTO) or demanded (ON).
# Architectures are passed as explicit -gencode flags: CMake 3.25 does not know the
# arch-specific "90a" target, which wgmma and setmaxnreg need.
set(BLOCKINFER_HAVE_CUDA OFF)
if(NOT BLOCKINFER_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  check_language(CUDA)
  # cuBLASLt is loaded at run time (dlopen) but its header is needed to build: from the CUDA
  # toolkit, or from the nvidia-cublas wheel (BLOCKINFER_CUBLAS_INCLUDE_DIR, set by tests/run_all.sh).
  set(BLOCKINFER_CUBLAS_INCLUDE_DIR "" CACHE PATH "Directory holding cublasLt.h")
  set(_bi_use_cuda OFF)
  if(CMAKE_CUDA_COMPILER)
    set(_bi_use_cuda ON)
    find_package(CUDAToolkit)
    find_path(BLOCKINFER_CUBLASLT_H cublasLt.h
      HINTS ${BLOCKINFER_CUBLAS_INCLUDE_DIR} ${CUDAToolkit_INCLUDE_DIRS} NO_DEFAULT_PATH)
    if(NOT BLOCKINFER_CUBLASLT_H)
      if(BLOCKINFER_CUDA STREQUAL "ON")
        message(FATAL_ERROR "BLOCKINFER_CUDA=ON but cublasLt.h was not found: install the CUDA toolkit's "
                            "cuBLAS or `pip install nvidia-cublas` and pass -DBLOCKINFER_CUBLAS_INCLUDE_DIR")
      endif()
      message(STATUS "blockinfer: nvcc found but no cublasLt.h; CUDA backend OFF")
      set(_bi_use_cuda OFF)
    endif()
  endif()
  if(_bi_use_cuda)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(BLOCKINFER_CUBLAS_LIBDIR "")
    if(EXISTS "${CUDAToolkit_LIBRARY_DIR}/libcublasLt.so.13")
      set(BLOCKINFER_CUBLAS_LIBDIR "${CUDAToolkit_LIBRARY_DIR}")
    endif()
    set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 knows no CUDA20 flag for nvcc; .cu files need only C++17
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    foreach(arch ${BLOCKINFER_CUDA_ARCHS})
      string(APPEND CMAKE_CUDA_FLAGS " -gencode=arch=compute_${arch},code=sm_${arch}")
    endforeach()
    string(APPEND CMAKE_CUDA_FLAGS " --expt-relaxed-constexpr -lineinfo")
    set(BLOCKINFER_HAVE_CUDA ON)
    message(STATUS "blockinfer: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, archs ${BLOCKINFER_CUDA_ARCHS})")
    # CUTLASS's headers (optional, sm_90a builds): the fused gate_up + SiLU·mul (gemm_cutlass.cu).
    # From BLOCKINFER_CUTLASS_INCLUDE_DIR, else the nvidia-cutlass package of the build's Python
    # (found without importing it); without them that kernel never serves.
    set(BLOCKINFER_CUTLASS_INCLUDE_DIR "" CACHE PATH "Directory holding cutlass/cutlass.h and cute/")
    set(_bi_cutlass "${BLOCKINFER_CUTLASS_INCLUDE_DIR}")
    if(NOT _bi_cutlass)
      find_package(Python COMPONENTS Interpreter QUIET)
      if(Python_EXECUTABLE)
        execute_process(
          COMMAND "${Python_EXECUTABLE}" -c
            "import importlib.util as u, os; s = u.find_spec('cutlass_library'); print(os.path.join(list(s.submodule_search_locations)[0], 'source', 'include') if s else '')"
          OUTPUT_VARIABLE _bi_cutlass OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
      endif()
    endif()
    set(BLOCKINFER_HAVE_CUTLASS OFF)
    if(_bi_cutlass AND EXISTS "${_bi_cutlass}/cutlass/cutlass.h" AND EXISTS "${_bi_cutlass}/cute/tensor.hpp"
       AND "90a" IN_LIST BLOCKINFER_CUDA_ARCHS)
      set(BLOCKINFER_HAVE_CUTLASS ON)
      set(BLOCKINFER_CUTLASS_DIR "${_bi_cutlass}")
      message(STATUS "blockinfer: CUTLASS headers at ${_bi_cutlass}: fused gate_up + SiLU·mul ON")
    else()
      message(STATUS "blockinfer: no CUTLASS headers (pip install nvidia-cutlass) or no sm_90a: fused gate_up + SiLU·mul OFF")
    endif()
  elseif(NOT CMAKE_CUDA_COMPILER AND BLOCKINFER_CUDA STREQUAL "ON")
    message(FATAL_ERROR "BLOCKINFER_CUDA=ON but no CUDA compiler (nvcc) was found")
  elseif(NOT CMAKE_CUDA_COMPILER)
    message(STATUS "blockinfer: nvcc not found, CUDA backend OFF")
  endif()
endif()
