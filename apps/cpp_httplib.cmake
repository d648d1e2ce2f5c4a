# cpp-httplib, the HTTP server of `megatron serve`: Debian's libcpp-httplib-dev (scripts/setup.sh
# installs it), or on the GPU machine, which has no network, the same packages unpacked into
# .deps/httplib by scripts/device-deps.sh. Defines the interface target mt_cpp_httplib.
#
# Debian builds cpp-httplib as a shared library (libcpp-httplib.so, with OpenSSL, zlib and Brotli
# support) and ships a header of declarations whose class layouts depend on those support macros:
# code using it must be compiled with the macros of the library's cpp-httplib.pc, and with the
# OpenSSL, zlib and Brotli headers they pull in. Upstream's single header needs no library.
set(MT_HTTPLIB_DEPS ${PROJECT_SOURCE_DIR}/.deps/httplib/usr)
set(MT_DEPS_ARCH_LIB ${MT_HTTPLIB_DEPS}/lib/${CMAKE_LIBRARY_ARCHITECTURE})
find_path(HTTPLIB_INCLUDE_DIR httplib.h HINTS ${MT_HTTPLIB_DEPS}/include)
if(NOT HTTPLIB_INCLUDE_DIR)
  message(FATAL_ERROR "megatron.cpp: cpp-httplib's httplib.h was not found (megatron serve needs it): "
                      "apt-get install libcpp-httplib-dev (scripts/setup.sh installs it), or on a machine "
                      "without network run scripts/device-deps.sh where there is one and bring .deps/ along")
endif()
add_library(mt_cpp_httplib INTERFACE)
target_include_directories(mt_cpp_httplib SYSTEM INTERFACE ${HTTPLIB_INCLUDE_DIR})
find_package(Threads REQUIRED)
target_link_libraries(mt_cpp_httplib INTERFACE Threads::Threads)

find_library(HTTPLIB_LIBRARY cpp-httplib HINTS ${MT_DEPS_ARCH_LIB} NO_CACHE)
file(STRINGS ${HTTPLIB_INCLUDE_DIR}/httplib.h MT_HTTPLIB_VERSION REGEX "define CPPHTTPLIB_VERSION")
if(HTTPLIB_LIBRARY)
  get_filename_component(lib_dir ${HTTPLIB_LIBRARY} DIRECTORY)
  set(pc ${lib_dir}/pkgconfig/cpp-httplib.pc)
  if(NOT EXISTS ${pc})
    message(FATAL_ERROR "megatron.cpp: ${HTTPLIB_LIBRARY} has no ${pc} to say which support macros it was built "
                        "with (reinstall libcpp-httplib-dev)")
  endif()
  file(STRINGS ${pc} cflags REGEX "^Cflags:")
  string(REGEX MATCHALL "-DCPPHTTPLIB_[A-Z_]+" macros "${cflags}")
  string(REPLACE "-D" "" macros "${macros}")
  target_compile_definitions(mt_cpp_httplib INTERFACE ${macros})
  # The headers the macros include: the system's, else .deps' (OpenSSL's configuration header
  # lives under the multiarch include folder; zlib's comes as .deps/zlib).
  set(arch_include ${MT_HTTPLIB_DEPS}/include/${CMAKE_LIBRARY_ARCHITECTURE})
  set(needs "")
  if("CPPHTTPLIB_OPENSSL_SUPPORT" IN_LIST macros)
    list(APPEND needs "openssl/ssl.h" "openssl/configuration.h")
  endif()
  if("CPPHTTPLIB_ZLIB_SUPPORT" IN_LIST macros)
    list(APPEND needs "zlib.h")
  endif()
  if("CPPHTTPLIB_BROTLI_SUPPORT" IN_LIST macros)
    list(APPEND needs "brotli/decode.h")
  endif()
  foreach(header ${needs})
    string(MAKE_C_IDENTIFIER "MT_HTTPLIB_${header}" var)
    find_path(${var} ${header} HINTS ${MT_HTTPLIB_DEPS}/include ${arch_include} ${PROJECT_SOURCE_DIR}/.deps/zlib/usr/include
              /usr/include/${CMAKE_LIBRARY_ARCHITECTURE})
    if(NOT ${var})
      message(FATAL_ERROR "megatron.cpp: ${header} not found; cpp-httplib (${HTTPLIB_LIBRARY}) needs it: apt-get install "
                          "libcpp-httplib-dev, which brings it, or run scripts/device-deps.sh")
    endif()
    target_include_directories(mt_cpp_httplib SYSTEM INTERFACE ${${var}})
  endforeach()
  target_link_libraries(mt_cpp_httplib INTERFACE ${HTTPLIB_LIBRARY})
  if(lib_dir STREQUAL MT_DEPS_ARCH_LIB)
    # The library and its Brotli runtime come from .deps: found there at link and run time, the
    # library's own dependencies too (DT_RPATH, which unlike DT_RUNPATH covers them).
    target_link_options(mt_cpp_httplib INTERFACE "LINKER:-rpath-link,${lib_dir}" "LINKER:--disable-new-dtags"
                        "LINKER:-rpath,${lib_dir}")
  endif()
  message(STATUS "megatron.cpp: cpp-httplib ${HTTPLIB_LIBRARY} (${macros})")
else()
  message(STATUS "megatron.cpp: cpp-httplib header-only ${HTTPLIB_INCLUDE_DIR}/httplib.h")
endif()
