#include "common/pg/array.h"

#include "absl/strings/str_cat.h"

namespace aijobs::pg {

void ArrayBuilder::Separator() {
  if (count_++ > 0) out_.push_back(',');
}

ArrayBuilder& ArrayBuilder::Add(std::string_view text) {
  Separator();
  out_.push_back('"');
  for (char c : text) {
    if (c == '"' || c == '\\') out_.push_back('\\');
    out_.push_back(c);
  }
  out_.push_back('"');
  return *this;
}

ArrayBuilder& ArrayBuilder::Add(int64_t value) {
  Separator();
  absl::StrAppend(&out_, value);
  return *this;
}

ArrayBuilder& ArrayBuilder::AddBytea(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  Separator();
  out_.append("\"\\\\x");
  for (unsigned char c : bytes) {
    out_.push_back(kHex[c >> 4]);
    out_.push_back(kHex[c & 0xf]);
  }
  out_.push_back('"');
  return *this;
}

ArrayBuilder& ArrayBuilder::AddNull() {
  Separator();
  out_.append("NULL");
  return *this;
}

std::string ArrayBuilder::Finish() {
  out_.push_back('}');
  std::string result = std::move(out_);
  out_ = "{";
  count_ = 0;
  return result;
}

}  // namespace aijobs::pg
