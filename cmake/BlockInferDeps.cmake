# nlohmann-json is header-only. It comes from the PyPI wheel `nlohmann-json` (a build requirement,
# so `pip install .` needs no system package) or, failing that, from a system install.
find_package(Python COMPONENTS Interpreter QUIET)
set(_bi_json_include "")
if(Python_EXECUTABLE)
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c
      "import nlohmann_json, os; print(os.path.join(os.path.dirname(nlohmann_json.__file__), 'include'))"
    OUTPUT_VARIABLE _bi_json_include OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
add_library(blockinfer_json INTERFACE)
if(_bi_json_include AND EXISTS "${_bi_json_include}/nlohmann/json.hpp")
  message(STATUS "blockinfer: nlohmann-json from the Python package: ${_bi_json_include}")
  target_include_directories(blockinfer_json SYSTEM INTERFACE ${_bi_json_include})
else()
  find_package(nlohmann_json 3.10 CONFIG REQUIRED)
  message(STATUS "blockinfer: nlohmann-json from the system")
  target_link_libraries(blockinfer_json INTERFACE nlohmann_json::nlohmann_json)
endif()
