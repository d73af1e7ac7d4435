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

namespace {

void AppendInt32(std::string& out, uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, 4);
}

constexpr uint32_t kByteaOid = 17;

}  // namespace

ByteaArrayBuilder& ByteaArrayBuilder::Add(std::string_view bytes) {
  AppendInt32(elements_, static_cast<uint32_t>(bytes.size()));
  elements_.append(bytes.data(), bytes.size());
  ++count_;
  return *this;
}

ByteaArrayBuilder& ByteaArrayBuilder::AddNull() {
  AppendInt32(elements_, 0xffffffffu);  // length -1
  has_null_ = true;
  ++count_;
  return *this;
}

std::string ByteaArrayBuilder::Finish() {
  std::string out;
  out.reserve(20 + elements_.size());
  AppendInt32(out, count_ > 0 ? 1 : 0);  // dimensions
  AppendInt32(out, has_null_ ? 1 : 0);
  AppendInt32(out, kByteaOid);
  if (count_ > 0) {
    AppendInt32(out, static_cast<uint32_t>(count_));
    AppendInt32(out, 1);  // lower bound
    out.append(elements_);
  }
  elements_.clear();
  count_ = 0;
  has_null_ = false;
  return out;
}

}  // namespace aijobs::pg
