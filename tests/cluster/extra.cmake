# The gRPC loopback test links the gRPC transport when it was built, and
# skips with a message when it was not.
if(TARGET assistd_cluster_grpc)
  cmake_language(DEFER CALL target_link_libraries cluster_grpc_transport_test PRIVATE assistd_cluster_grpc)
  cmake_language(DEFER CALL target_compile_definitions cluster_grpc_transport_test PRIVATE ASSISTD_HAVE_GRPC=1)
endif()
if(TARGET assistd_cluster_grpc)
  cmake_language(DEFER CALL target_link_libraries cluster_grpc_reconnect_slow_test PRIVATE assistd_cluster_grpc)
  cmake_language(DEFER CALL target_compile_definitions cluster_grpc_reconnect_slow_test PRIVATE ASSISTD_HAVE_GRPC=1)
endif()
