# The crash test's writer: a separate process the test kills with SIGKILL.
add_executable(state_crash_writer ${CMAKE_CURRENT_LIST_DIR}/crash_writer.cpp)
assistd_target_defaults(state_crash_writer)
target_link_libraries(state_crash_writer PRIVATE assistd_state)
# The test target is defined later in this directory: attach the writer's path to it then.
cmake_language(DEFER CALL target_compile_definitions state_session_crash_slow_test PRIVATE
  ASSISTD_CRASH_WRITER="$<TARGET_FILE:state_crash_writer>")
cmake_language(DEFER CALL add_dependencies state_session_crash_slow_test state_crash_writer)
