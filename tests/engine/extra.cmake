# Included by tests/CMakeLists.txt before the engine tests are created: link
# nlohmann_json into the tests that read reference JSON, once they exist.
function(assistd_engine_test_extras)
  foreach(target engine_model_reference_test)
    if(TARGET ${target})
      target_link_libraries(${target} PRIVATE nlohmann_json::nlohmann_json)
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL assistd_engine_test_extras)
