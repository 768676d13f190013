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
# libjpeg(-turbo): JPEG decoded as PIL does, ~5x faster than OpenCV 4.6's row-by-row reader.
find_package(JPEG QUIET)
