# The crash test's writer: a separate process the test kills with SIGKILL.
add_executable(state_crash_writer ${CMAKE_CURRENT_LIST_DIR}/crash_writer.cpp)
assistd_target_defaults(state_crash_writer)
target_link_libraries(state_crash_writer PRIVATE assistd_state)
# The test target is defined later in this directory: attach the writer's path to it then.
cmake_language(DEFER CALL target_compile_definitions state_session_crash_slow_test PRIVATE
  ASSISTD_CRASH_WRITER="$<TARGET_FILE:state_crash_writer>")
cmake_language(DEFER CALL add_dependencies state_session_crash_slow_test state_crash_writer)
# Test support for the state component, built once and linked only by the
# tests that use it: the file system that models a power cut.
add_library(assistd_state_test_support STATIC ${CMAKE_CURRENT_LIST_DIR}/power_cut_file_system.cpp)
assistd_target_defaults(assistd_state_test_support)
target_include_directories(assistd_state_test_support PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(assistd_state_test_support PUBLIC assistd_state)
function(assistd_state_test_support_users)
  foreach(target state_power_cut_file_system_test state_session_power_cut_slow_test state_session_write_failure_test
                 serve_session_power_cut_test)
    if(TARGET ${target})
      target_link_libraries(${target} PRIVATE assistd_state_test_support)
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL assistd_state_test_support_users)
