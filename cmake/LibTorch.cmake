# Provides the target moescale::torch.
#
# LibTorch comes from the torch wheel in the project venv (.venv). Its own
# CMake config (find_package(Torch)) links libtorch.so, which pulls in
# libtorch_cuda.so and a few GB of CUDA libraries at every start of the
# program, even on machines without a GPU. A CPU build therefore links only
# libtorch_cpu and libc10; MOESCALE_CUDA=ON uses Torch's own config.
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
if(MOESCALE_CUDA)
  list(APPEND CMAKE_PREFIX_PATH "${TORCH_ROOT}/share/cmake")
  find_package(Torch REQUIRED)
  target_link_libraries(moescale_torch INTERFACE ${TORCH_LIBRARIES})
  target_compile_definitions(moescale_torch INTERFACE MOESCALE_HAVE_CUDA=1)
else()
  find_library(TORCH_CPU_LIB torch_cpu PATHS "${TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  find_library(TORCH_C10_LIB c10 PATHS "${TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
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
endif()
# The wheel is built with the C++11 ABI.
target_compile_definitions(moescale_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
