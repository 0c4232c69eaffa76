# The JavaScript acceptance suites (tests/serve/js/<suite>/*.test.mjs): each
# ctest test installs the suite's npm packages into the build tree
# (${CMAKE_BINARY_DIR}/npm/<suite>, reused while package.json and the lock are
# unchanged), starts the real `assistd serve` on stories260K on a free loopback
# port and runs the suite with node:test. They skip (exit 77) without node/npm,
# the model, or what the suite's package.json lists under "assistd.requires".
set(ASSISTD_TEST_ARTIFACTS_DIR "${CMAKE_BINARY_DIR}/test-artifacts")
foreach(suite openai browser)
  add_test(NAME serve_js_${suite}
           COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/js/run.sh
                   ${CMAKE_CURRENT_LIST_DIR}/js/${suite}
                   ${CMAKE_BINARY_DIR}/npm/${suite}
                   $<TARGET_FILE:assistd>
                   ${ASSISTD_SHARED_DIR}/models/stories260K.gguf
                   ${PROJECT_SOURCE_DIR}/web
                   ${ASSISTD_TEST_ARTIFACTS_DIR})
  # TIMEOUT covers a first npm install; once cached each suite takes seconds.
  set_tests_properties(serve_js_${suite} PROPERTIES
    LABELS "slow;serve"
    SKIP_RETURN_CODE 77
    TIMEOUT 600)
endforeach()
