# Third-party dependencies: LibTorch from the pinned torch wheel, the rest from Debian.
find_package(Python3 COMPONENTS Interpreter Development.Module REQUIRED)
if(NOT Torch_DIR)
  execute_process(COMMAND ${Python3_EXECUTABLE} -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE TORCH_CMAKE_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE COMMAND_ERROR_IS_FATAL ANY)
  list(APPEND CMAKE_PREFIX_PATH ${TORCH_CMAKE_PREFIX})
endif()
# The CUDA wheel's config looks for the CUDA toolkit; nvcc here lets it build the CUDA paths.
if(EXISTS /usr/local/cuda/bin/nvcc AND NOT CMAKE_CUDA_COMPILER)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
find_package(Torch REQUIRED)
get_filename_component(TORCH_LIB_DIR "${TORCH_LIBRARY}" DIRECTORY)
message(STATUS "tessera: LibTorch ${Torch_VERSION} from ${TORCH_LIB_DIR}")

# CUDA kernels: need nvcc and a CUDA LibTorch (its config has enabled CUDA when both are there).
# Sanitizer and fuzz builds instrument host code only; AUTO leaves CUDA out of them.
set(TESSERA_HAVE_CUDA OFF)
get_property(_tessera_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
if(TESSERA_CUDA STREQUAL "ON" OR (TESSERA_CUDA STREQUAL "AUTO" AND NOT TESSERA_SANITIZE AND NOT TESSERA_FUZZ))
  if("CUDA" IN_LIST _tessera_languages AND TORCH_CUDA_LIBRARIES)
    enable_language(CUDA)
    set(TESSERA_HAVE_CUDA ON)
  elseif(TESSERA_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TESSERA_CUDA=ON needs nvcc (CMAKE_CUDA_COMPILER) and a CUDA build of LibTorch")
  endif()
endif()
if(TESSERA_HAVE_CUDA)
  # Our architectures, not the eleven LibTorch's config adds to every nvcc call. The cache's
  # CMAKE_CUDA_ARCHITECTURES counts only when the user set it (CMake's own default carries the
  # help string "CUDA architectures"); 80 and 90 (A100, H100/H200) give SASS plus PTX for newer.
  string(REGEX REPLACE "-gencode arch=[^ ]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
  get_property(_tessera_arch_help CACHE CMAKE_CUDA_ARCHITECTURES PROPERTY HELPSTRING)
  if(DEFINED ENV{CUDAARCHS} OR (DEFINED CACHE{CMAKE_CUDA_ARCHITECTURES} AND
                                NOT _tessera_arch_help STREQUAL "CUDA architectures"))
    set(TESSERA_CUDA_ARCHS "$CACHE{CMAKE_CUDA_ARCHITECTURES}")
  else()
    set(TESSERA_CUDA_ARCHS "80;90")
  endif()
  # The CUDA runtime of LibTorch's wheel, searched before the system's: one runtime per process.
  file(GLOB _tessera_cudart "${TORCH_LIB_DIR}/../../nvidia/*/lib/libcudart.so.*")
  if(_tessera_cudart)
    list(GET _tessera_cudart 0 _tessera_cudart)
    get_filename_component(TESSERA_CUDART_DIR "${_tessera_cudart}" DIRECTORY)
    get_filename_component(TESSERA_CUDART_DIR "${TESSERA_CUDART_DIR}" REALPATH)
  endif()
endif()
message(STATUS "tessera: CUDA kernels ${TESSERA_HAVE_CUDA} (TESSERA_CUDA=${TESSERA_CUDA}) ${TESSERA_CUDA_ARCHS}")

find_package(nlohmann_json 3.10 REQUIRED)
find_package(ZLIB REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(ICU REQUIRED IMPORTED_TARGET icu-uc)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)

set(TESSERA_HAVE_OPENCV OFF)
if(NOT TESSERA_WITH_OPENCV STREQUAL "OFF")
  find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
  if(OpenCV_FOUND)
    set(TESSERA_HAVE_OPENCV ON)
  elseif(TESSERA_WITH_OPENCV STREQUAL "ON")
    message(FATAL_ERROR "TESSERA_WITH_OPENCV=ON but OpenCV was not found (apt install libopencv-dev)")
  endif()
endif()
message(STATUS "tessera: OpenCV ${TESSERA_HAVE_OPENCV}")
# OpenMP: at::parallel_for is a header template whose `omp parallel` only runs in parallel when
# the including code is built with -fopenmp; without it every tessera kernel ran on one thread.
# GCC's libgomp is the runtime torch ships (torch/lib/libgomp.so.1, found first through the
# RPATH). clang's default runtime is another (libomp): the sanitizer and fuzz builds stay serial.
set(TESSERA_HAVE_OPENMP OFF)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  find_package(OpenMP QUIET COMPONENTS CXX)
  if(OpenMP_CXX_FOUND)
    set(TESSERA_HAVE_OPENMP ON)
  endif()
endif()
message(STATUS "tessera: OpenMP ${TESSERA_HAVE_OPENMP}")
# libjpeg(-turbo): JPEG decoded as PIL does, ~5x faster than OpenCV 4.6's row-by-row reader.
find_package(JPEG QUIET)
