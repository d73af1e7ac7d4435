#include "scheduler/cache_key.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

namespace aijobs::scheduler {
namespace {

void AppendString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out->append(buf);
        } else {
          out->push_back(static_cast<char>(c));  // UTF-8 bytes as they are
        }
    }
  }
  out->push_back('"');
}

void AppendNumber(double d, std::string* out) {
  // Not numbers in JSON: written as (distinct) strings so they still hash deterministically.
  if (std::isnan(d)) {
    out->append("\"NaN\"");
    return;
  }
  if (std::isinf(d)) {
    out->append(d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    return;
  }
  if (d == 0) d = 0;  // -0 and 0 are one number
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", d);
  out->append(buf);
}

void AppendStruct(const google::protobuf::Struct& s, std::string* out);

void AppendValue(const google::protobuf::Value& v, std::string* out) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
    case google::protobuf::Value::KIND_NOT_SET:  // JSON has no "unset": it reads as null
      out->append("null");
      break;
    case google::protobuf::Value::kNumberValue:
      AppendNumber(v.number_value(), out);
      break;
    case google::protobuf::Value::kStringValue:
      AppendString(v.string_value(), out);
      break;
    case google::protobuf::Value::kBoolValue:
      out->append(v.bool_value() ? "true" : "false");
      break;
    case google::protobuf::Value::kStructValue:
      AppendStruct(v.struct_value(), out);
      break;
    case google::protobuf::Value::kListValue: {
      out->push_back('[');
      bool first = true;
      for (const auto& item : v.list_value().values()) {
        if (!first) out->push_back(',');
        first = false;
        AppendValue(item, out);
      }
      out->push_back(']');
      break;
    }
  }
}

void AppendStruct(const google::protobuf::Struct& s, std::string* out) {
  // Map iteration order is unspecified (and differs between equal maps): sort the keys.
  std::vector<const std::string*> keys;
  keys.reserve(s.fields_size());
  for (const auto& [k, unused] : s.fields()) keys.push_back(&k);
  std::sort(keys.begin(), keys.end(),
            [](const std::string* a, const std::string* b) { return *a < *b; });
  out->push_back('{');
  bool first = true;
  for (const std::string* k : keys) {
    if (!first) out->push_back(',');
    first = false;
    AppendString(*k, out);
    out->push_back(':');
    AppendValue(s.fields().at(*k), out);
  }
  out->push_back('}');
}

}  // namespace

std::string CanonicalCacheRequest(const std::string& tenant_id, const std::string& type,
                                  const google::protobuf::Struct& input) {
  std::string out = "[";
  AppendString(tenant_id, &out);
  out.push_back(',');
  AppendString(type, &out);
  out.push_back(',');
  AppendStruct(input, &out);
  out.push_back(']');
  return out;
}

std::string CacheKey(const std::string& tenant_id, const std::string& type,
                     const google::protobuf::Struct& input) {
  std::string canonical = CanonicalCacheRequest(tenant_id, type, input);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // Fails only when out of memory; callers treat the empty key as "do not cache".
  if (EVP_Digest(canonical.data(), canonical.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    return std::string();
  }
  return std::string(reinterpret_cast<const char*>(md), len);
}

std::string HexString(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xf]);
  }
  return out;
}

}  // namespace aijobs::scheduler
