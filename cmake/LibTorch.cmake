# Provides the target moescale::torch, and MOESCALE_CUDA_ARCHS.
#
# LibTorch comes from the torch wheel in the project venv (.venv). We link its
# libraries directly instead of using its CMake config (find_package(Torch)):
#  - that config links libtorch.so, which pulls in libtorch_cuda.so and a few GB
#    of CUDA libraries, so a CPU build links only libtorch_cpu and libc10;
#  - for CUDA it enables CMake's CUDA language and probes for a GPU at configure
#    time (failing on a machine without one), and CMake 3.25 does not know the
#    CUDA20 dialect it asks for. We compile no .cu files: the CUDA build adds
#    libtorch_cuda and libc10_cuda, linked with --no-as-needed because nothing
#    in our code names their symbols, yet loading them is what registers
#    LibTorch's CUDA backend. The CUDA runtime headers (for c10/cuda) come from
#    the toolkit, or from the wheel's nvidia packages.
set(MOESCALE_PYTHON "${CMAKE_CURRENT_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
    "Python whose torch provides LibTorch")
if(NOT TORCH_ROOT)
  if(NOT EXISTS "${MOESCALE_PYTHON}")
    message(FATAL_ERROR "No Python at ${MOESCALE_PYTHON}: run scripts/setup.sh "
                        "or pass -DMOESCALE_PYTHON=/path/to/python with torch.")
  endif()
  execute_process(
    COMMAND "${MOESCALE_PYTHON}" -c "import os, torch; print(os.path.dirname(torch.__file__))"
    OUTPUT_VARIABLE TORCH_ROOT OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${MOESCALE_PYTHON} cannot import torch: run scripts/setup.sh")
  endif()
  set(TORCH_ROOT "${TORCH_ROOT}" CACHE PATH "torch package folder")
endif()

add_library(moescale_torch INTERFACE)
add_library(moescale::torch ALIAS moescale_torch)

find_library(TORCH_CPU_LIB torch_cpu PATHS "${TORCH_ROOT}/lib" NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH
             REQUIRED)
find_library(TORCH_C10_LIB c10 PATHS "${TORCH_ROOT}/lib" NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH
             REQUIRED)
# torch/include also carries its own fmt headers (v12), which would shadow
# Debian's fmt for every file that sees LibTorch; expose all but those.
set(shim "${PROJECT_BINARY_DIR}/torch-include")
file(MAKE_DIRECTORY "${shim}")
file(GLOB entries RELATIVE "${TORCH_ROOT}/include" "${TORCH_ROOT}/include/*")
foreach(entry ${entries})
  if(NOT entry STREQUAL "fmt" AND NOT EXISTS "${shim}/${entry}")
    file(CREATE_LINK "${TORCH_ROOT}/include/${entry}" "${shim}/${entry}" SYMBOLIC)
  endif()
endforeach()
target_include_directories(moescale_torch SYSTEM INTERFACE
  "${shim}" "${TORCH_ROOT}/include/torch/csrc/api/include")
target_link_libraries(moescale_torch INTERFACE ${TORCH_CPU_LIB} ${TORCH_C10_LIB})
target_link_options(moescale_torch INTERFACE "-Wl,-rpath,${TORCH_ROOT}/lib")
# The wheel is built with the C++11 ABI.
target_compile_definitions(moescale_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)

set(MOESCALE_CUDA_ARCHS "")
if(MOESCALE_CUDA)
  find_library(TORCH_CUDA_LIB torch_cuda PATHS "${TORCH_ROOT}/lib" NO_DEFAULT_PATH
               NO_CMAKE_FIND_ROOT_PATH)
  find_library(TORCH_C10_CUDA_LIB c10_cuda PATHS "${TORCH_ROOT}/lib" NO_DEFAULT_PATH
               NO_CMAKE_FIND_ROOT_PATH)
  if(NOT TORCH_CUDA_LIB OR NOT TORCH_C10_CUDA_LIB)
    message(FATAL_ERROR
      "MOESCALE_CUDA=ON but the torch in ${TORCH_ROOT} is CPU-only (no libtorch_cuda.so): "
      "install a CUDA torch wheel into .venv, or configure with -DMOESCALE_CUDA=OFF")
  endif()
  get_filename_component(wheel_nvidia "${TORCH_ROOT}/../nvidia" ABSOLUTE)
  file(GLOB wheel_cuda_includes "${wheel_nvidia}/cu*/include")
  find_path(MOESCALE_CUDA_INCLUDE cuda_runtime_api.h
    PATHS "$ENV{CUDA_HOME}/include" /usr/local/cuda/include ${wheel_cuda_includes}
    NO_DEFAULT_PATH NO_CMAKE_FIND_ROOT_PATH)
  if(NOT MOESCALE_CUDA_INCLUDE)
    message(FATAL_ERROR "MOESCALE_CUDA=ON but no cuda_runtime_api.h was found: install the "
                        "CUDA toolkit (/usr/local/cuda) or pass -DMOESCALE_CUDA_INCLUDE=DIR")
  endif()
  target_include_directories(moescale_torch SYSTEM INTERFACE "${MOESCALE_CUDA_INCLUDE}")
  target_link_libraries(moescale_torch INTERFACE
    "-Wl,--push-state,--no-as-needed" ${TORCH_CUDA_LIB} ${TORCH_C10_CUDA_LIB} "-Wl,--pop-state")
  target_compile_definitions(moescale_torch INTERFACE MOESCALE_HAVE_CUDA=1)
  # The GPU architectures the linked LibTorch carries kernels for (no GPU needed to ask).
  execute_process(
    COMMAND "${MOESCALE_PYTHON}" -c "import torch; print(torch._C._cuda_getArchFlags())"
    OUTPUT_VARIABLE MOESCALE_CUDA_ARCHS OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  message(STATUS "moescale: CUDA trainer, LibTorch kernels for ${MOESCALE_CUDA_ARCHS}")
endif()
