# Generates the two configure-time headers the ATen vec headers need, from the source tree's own
# templates, the way PyTorch's CMake does (configure_file): c10/macros/cmake_macros.h and
# ATen/Config.h. No library is built here, so every feature switch is off.
#   cmake -DSRC=<torch tree> -DOUT=<dir> -P generate_headers.cmake
foreach(var AT_MKLDNN_ENABLED AT_MKLDNN_ACL_ENABLED AT_MKL_ENABLED AT_MKL_SEQUENTIAL
            AT_POCKETFFT_ENABLED AT_NNPACK_ENABLED CAFFE2_STATIC_LINK_CUDA_INT
            AT_BUILD_WITH_BLAS AT_BUILD_WITH_LAPACK AT_PARALLEL_OPENMP AT_BLAS_F2C
            AT_BLAS_USE_CBLAS_DOT)
  set(${var} 0)
endforeach()
set(AT_PARALLEL_NATIVE 1)
configure_file(${SRC}/c10/macros/cmake_macros.h.in ${OUT}/c10/macros/cmake_macros.h)
configure_file(${SRC}/aten/src/ATen/Config.h.in ${OUT}/ATen/Config.h @ONLY)
