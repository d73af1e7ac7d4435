# Embeds gateway/web/index.html as a C++ raw string: cmake -DIN=... -DOUT=... -P web_assets.cmake
file(READ ${IN} html)
string(FIND "${html}" ")aijobs_html\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw-string delimiter )aijobs_html\"")
endif()
file(WRITE ${OUT}.tmp "// Generated from gateway/web/index.html by gateway/web_assets.cmake.\n"
  "#include \"gateway/gateway.h\"\n"
  "namespace aijobs::gateway {\n"
  "absl::string_view WebIndexHtml() {\n"
  "  static const char kHtml[] = R\"aijobs_html(${html})aijobs_html\";\n"
  "  return absl::string_view(kHtml, sizeof(kHtml) - 1);\n"
  "}\n"
  "}  // namespace aijobs::gateway\n")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
