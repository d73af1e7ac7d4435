#include "gateway/transcoding/request_mapper.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/text.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace aijobs::gateway {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

std::string ProtoStatusMessage(const google::protobuf::util::Status& s) {
  return std::string(s.message().data(), s.message().size());
}

bool IsWrapperType(const Descriptor* d) {
  static const char* const kWrappers[] = {
      "google.protobuf.DoubleValue", "google.protobuf.FloatValue",  "google.protobuf.Int64Value",
      "google.protobuf.UInt64Value", "google.protobuf.Int32Value",  "google.protobuf.UInt32Value",
      "google.protobuf.BoolValue",   "google.protobuf.StringValue", "google.protobuf.BytesValue"};
  for (const char* w : kWrappers) {
    if (d->full_name() == w) return true;
  }
  return false;
}

// Message types whose JSON form is a string and that a query parameter can therefore carry.
bool IsStringEncodedWkt(const Descriptor* d) {
  return d->full_name() == "google.protobuf.Duration" ||
         d->full_name() == "google.protobuf.Timestamp" ||
         d->full_name() == "google.protobuf.FieldMask";
}

std::string EnumNames(const google::protobuf::EnumDescriptor* e) {
  std::vector<std::string> names;
  for (int i = 0; i < e->value_count(); ++i) names.push_back(e->value(i)->name());
  return absl::StrJoin(names, ", ");
}

template <typename T>
bool ParseInt(absl::string_view text, T* out) {
  return absl::SimpleAtoi(text, out);
}

// Sets (or appends to, for repeated fields) scalar field `f` of `msg` from its text form.
// Errors name the value but not the parameter; the caller adds that context.
absl::Status SetScalar(Message* msg, const FieldDescriptor* f, absl::string_view value) {
  const Reflection* r = msg->GetReflection();
  const bool rep = f->is_repeated();
  auto bad = [&](absl::string_view type) {
    return absl::InvalidArgumentError(absl::StrCat("\"", value, "\" is not a valid ", type));
  };
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!ParseInt(value, &v)) return bad("int32");
      rep ? r->AddInt32(msg, f, v) : r->SetInt32(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (!ParseInt(value, &v)) return bad("int64");
      rep ? r->AddInt64(msg, f, v) : r->SetInt64(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!ParseInt(value, &v)) return bad("uint32");
      rep ? r->AddUInt32(msg, f, v) : r->SetUInt32(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (!ParseInt(value, &v)) return bad("uint64");
      rep ? r->AddUInt64(msg, f, v) : r->SetUInt64(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      double v;
      if (!absl::SimpleAtod(value, &v)) return bad("number");
      rep ? r->AddDouble(msg, f, v) : r->SetDouble(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_FLOAT: {
      float v;
      if (!absl::SimpleAtof(value, &v)) return bad("number");
      rep ? r->AddFloat(msg, f, v) : r->SetFloat(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      std::string lower = absl::AsciiStrToLower(value);
      bool v;
      if (lower == "true" || lower == "1") {
        v = true;
      } else if (lower == "false" || lower == "0") {
        v = false;
      } else {
        return bad("bool (use true or false)");
      }
      rep ? r->AddBool(msg, f, v) : r->SetBool(msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const google::protobuf::EnumDescriptor* e = f->enum_type();
      const google::protobuf::EnumValueDescriptor* ev = e->FindValueByName(std::string(value));
      int number;
      if (ev == nullptr && absl::SimpleAtoi(value, &number)) ev = e->FindValueByNumber(number);
      if (ev == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("\"", value, "\" is not a value of ",
                                                       e->full_name(), " (", EnumNames(e), ")"));
      }
      rep ? r->AddEnum(msg, f, ev) : r->SetEnum(msg, f, ev);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string v;
      if (f->type() == FieldDescriptor::TYPE_BYTES) {
        if (!absl::Base64Unescape(value, &v) && !absl::WebSafeBase64Unescape(value, &v)) {
          return bad("base64 value");
        }
      } else {
        v = std::string(value);
      }
      rep ? r->AddString(msg, f, std::move(v)) : r->SetString(msg, f, std::move(v));
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("field ", f->full_name(), " is a message and cannot hold a plain value"));
}

// Sets leaf field `f` of `msg` from a query value: a scalar, or a message whose JSON form is a
// scalar (wrappers, Duration, Timestamp, FieldMask).
absl::Status SetLeaf(Message* msg, const FieldDescriptor* f, absl::string_view value) {
  if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return SetScalar(msg, f, value);
  const Descriptor* type = f->message_type();
  const Reflection* r = msg->GetReflection();
  if (IsWrapperType(type)) {
    Message* target = f->is_repeated() ? r->AddMessage(msg, f) : r->MutableMessage(msg, f);
    absl::Status s = SetScalar(target, type->FindFieldByNumber(1), value);
    if (!s.ok()) {  // leave no empty wrapper behind
      f->is_repeated() ? r->RemoveLast(msg, f) : r->ClearField(msg, f);
    }
    return s;
  }
  if (IsStringEncodedWkt(type)) {
    // Reuse protobuf's own parser for these formats: quote the value as a JSON string.
    google::protobuf::Value literal;
    literal.set_string_value(std::string(value));
    std::string json;
    if (!google::protobuf::util::MessageToJsonString(literal, &json).ok()) {
      return absl::InvalidArgumentError(absl::StrCat("\"", value, "\" is not valid text"));
    }
    Message* target = f->is_repeated() ? r->AddMessage(msg, f) : r->MutableMessage(msg, f);
    auto s = google::protobuf::util::JsonStringToMessage(json, target);
    if (!s.ok()) {
      if (f->is_repeated()) r->RemoveLast(msg, f);
      const char* hint = type->full_name() == "google.protobuf.Duration"
                             ? " (e.g. \"1.5s\")"
                             : (type->full_name() == "google.protobuf.Timestamp"
                                    ? " (RFC 3339, e.g. \"2024-01-02T03:04:05Z\")"
                                    : "");
      return absl::InvalidArgumentError(
          absl::StrCat("\"", value, "\" is not a valid ", type->full_name(), hint));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("field ", f->full_name(), " is a message (", type->full_name(),
                   "); set its fields with dotted names or send it in the request body"));
}

const FieldDescriptor* FindFieldByAnyName(const Descriptor* d, absl::string_view name) {
  const FieldDescriptor* f = d->FindFieldByName(std::string(name));
  if (f != nullptr) return f;
  for (int i = 0; i < d->field_count(); ++i) {
    if (d->field(i)->json_name() == name) return d->field(i);
  }
  return nullptr;
}

bool IsPrefix(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  if (a.size() > b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

absl::Status ApplyQuery(const Route& route, const std::vector<VariableBinding>& bindings,
                        absl::string_view query, const JsonOptions& options, Message* request) {
  auto params = ParseQueryString(query);
  if (!params.ok()) return params.status();
  absl::flat_hash_map<std::string, int> seen;  // canonical path -> times set
  for (const auto& param : *params) {
    // Named references, not a structured binding: lambdas may not capture bindings in C++17.
    const std::string& key = param.first;
    const std::string& value = param.second;
    bool reserved = false;
    for (const std::string& r : options.reserved_query_params) reserved |= r == key;
    if (reserved) continue;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("query parameter \"", key, "\": ", what));
    };
    // Resolve the dotted name to fields (each part by proto or json name).
    std::vector<const FieldDescriptor*> fields;
    std::vector<std::string> canonical;
    const Descriptor* current = request->GetDescriptor();
    bool unknown = false;
    for (absl::string_view part : absl::StrSplit(key, '.')) {
      if (current == nullptr) {
        return error(absl::StrCat("\"", canonical.back(), "\" is not a message field"));
      }
      const FieldDescriptor* f = FindFieldByAnyName(current, part);
      if (f == nullptr) {
        unknown = true;
        break;
      }
      if (!fields.empty() && fields.back()->is_repeated()) {
        return error(absl::StrCat("\"", canonical.back(),
                                  "\" is repeated; its elements cannot be set by name"));
      }
      fields.push_back(f);
      canonical.push_back(f->name());
      current = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE ? f->message_type() : nullptr;
    }
    if (unknown) {
      if (options.lenient) continue;
      return absl::InvalidArgumentError(absl::StrCat("unknown query parameter \"", key,
                                                     "\": ", request->GetDescriptor()->full_name(),
                                                     " has no such field"));
    }
    // Path bindings and the body win over the query (grpc-gateway ignores such parameters).
    bool covered = route.body == "*" || (!route.body.empty() && canonical[0] == route.body);
    for (const VariableBinding& b : bindings) {
      covered |= IsPrefix(b.field_path, canonical) || IsPrefix(canonical, b.field_path);
    }
    if (covered) continue;

    const FieldDescriptor* leaf = fields.back();
    if (leaf->is_map()) return error("map fields cannot be set from the query string");
    bool leaf_is_value = leaf->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE ||
                         IsWrapperType(leaf->message_type()) ||
                         IsStringEncodedWkt(leaf->message_type());
    if (!leaf_is_value) {
      return error(absl::StrCat("field ", leaf->full_name(), " is a message (",
                                leaf->message_type()->full_name(),
                                "); set its fields with dotted names or send it in the body"));
    }
    std::string path_key = absl::StrJoin(canonical, ".");
    if (!leaf->is_repeated() && ++seen[path_key] > 1) {
      return error(
          absl::StrCat("given more than once, but field ", leaf->full_name(), " is not repeated"));
    }
    Message* msg = request;
    for (size_t i = 0; i + 1 < fields.size(); ++i) {
      msg = msg->GetReflection()->MutableMessage(msg, fields[i]);
    }
    if (absl::Status s = SetLeaf(msg, leaf, value); !s.ok()) return error(s.message());
  }
  return absl::OkStatus();
}

absl::Status ApplyBody(const Route& route, absl::string_view body, const JsonOptions& options,
                       Message* request) {
  absl::string_view trimmed = absl::StripAsciiWhitespace(body);
  if (route.body.empty()) {
    if (trimmed.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(route.http_method, " ", route.path.text(),
                     " takes no request body; send the request fields as query parameters"));
  }
  if (trimmed.empty()) return absl::OkStatus();
  if (absl::Status s = CheckJsonShape(trimmed); !s.ok()) return s;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = options.lenient;
  std::string json(trimmed.data(), trimmed.size());
  if (route.body == "*") {
    auto s = google::protobuf::util::JsonStringToMessage(json, request, parse);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid JSON request body: ", ProtoStatusMessage(s)));
    }
    return absl::OkStatus();
  }
  const FieldDescriptor* f = request->GetDescriptor()->FindFieldByName(route.body);
  if (f == nullptr) {  // RouteTable validated this; a mismatched request type gets here.
    return absl::InternalError(absl::StrCat("request type ", request->GetDescriptor()->full_name(),
                                            " has no body field ", route.body));
  }
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    auto s = google::protobuf::util::JsonStringToMessage(
        json, request->GetReflection()->MutableMessage(request, f), parse);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("invalid JSON request body (field \"",
                                                     route.body, "\"): ", ProtoStatusMessage(s)));
    }
    return absl::OkStatus();
  }
  // A scalar body: let the JSON parser read it as that field of a scratch message, then move
  // only that field over (the body cannot smuggle in other fields).
  std::unique_ptr<Message> scratch(request->New());
  std::string wrapped = absl::StrCat("{\"", f->json_name(), "\":", json, "}");
  auto s = google::protobuf::util::JsonStringToMessage(wrapped, scratch.get(), parse);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON request body (field \"",
                                                   route.body, "\"): ", ProtoStatusMessage(s)));
  }
  request->GetReflection()->SwapFields(request, scratch.get(), {f});
  return absl::OkStatus();
}

absl::Status ApplyBindings(const std::vector<VariableBinding>& bindings, Message* request) {
  for (const VariableBinding& b : bindings) {
    std::string name = absl::StrJoin(b.field_path, ".");
    if (absl::Status s = ValidateText(b.value, absl::StrCat("path variable {", name, "}"));
        !s.ok()) {
      return s;
    }
    auto fields = ResolveFieldPath(request->GetDescriptor(), b.field_path);
    if (!fields.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("path variable {", name, "}: ", fields.status().message()));
    }
    Message* msg = request;
    for (size_t i = 0; i + 1 < fields->size(); ++i) {
      msg = msg->GetReflection()->MutableMessage(msg, (*fields)[i]);
    }
    const FieldDescriptor* leaf = fields->back();
    if (leaf->is_repeated()) msg->GetReflection()->ClearField(msg, leaf);
    if (absl::Status s = SetLeaf(msg, leaf, b.value); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("path variable {", name, "}: ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// Appends code point `cp` to `out` as UTF-8.
void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Four hex digits at s[at..at+4) as a number, or -1.
int32_t Hex4(absl::string_view s, size_t at) {
  if (at + 4 > s.size()) return -1;
  int32_t v = 0;
  for (size_t i = at; i < at + 4; ++i) {
    char c = s[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

// The text of a JSON string's contents (between its quotes), escapes decoded, so that
// "a\u0062" and "ab" are the same key. A malformed escape is kept as written: the JSON
// parser refuses it later.
std::string UnescapeJsonString(absl::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\' || i + 1 >= raw.size()) {
      out.push_back(raw[i]);
      continue;
    }
    char e = raw[++i];
    switch (e) {
      case 'b': out.push_back('\b'); break;
      case 'f': out.push_back('\f'); break;
      case 'n': out.push_back('\n'); break;
      case 'r': out.push_back('\r'); break;
      case 't': out.push_back('\t'); break;
      case 'u': {
        int32_t hi = Hex4(raw, i + 1);
        if (hi < 0) {
          absl::StrAppend(&out, "\\u");
          break;
        }
        i += 4;
        uint32_t cp = static_cast<uint32_t>(hi);
        if (hi >= 0xD800 && hi < 0xDC00 && i + 2 < raw.size() && raw[i + 1] == '\\' &&
            raw[i + 2] == 'u') {
          int32_t lo = Hex4(raw, i + 3);
          if (lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((static_cast<uint32_t>(hi) - 0xD800) << 10) +
                 (static_cast<uint32_t>(lo) - 0xDC00);
            i += 6;
          }
        }
        AppendUtf8(cp, &out);
        break;
      }
      default: out.push_back(e); break;  // \" \\ \/ (and anything the parser will refuse)
    }
  }
  return out;
}

}  // namespace

absl::Status CheckJsonShape(absl::string_view json, int max_depth) {
  struct Level {
    bool object;
    bool expect_key;
    absl::flat_hash_set<std::string> keys;
  };
  std::vector<Level> levels;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    switch (c) {
      case '"': {
        const size_t begin = i + 1;
        size_t end = begin;
        while (end < json.size() && json[end] != '"') end += json[end] == '\\' ? 2 : 1;
        i = end;  // the closing quote (or past the end: the parser reports it)
        if (levels.empty() || !levels.back().object || !levels.back().expect_key) break;
        levels.back().expect_key = false;
        std::string key =
            UnescapeJsonString(json.substr(begin, std::min(end, json.size()) - begin));
        if (!levels.back().keys.insert(key).second) {
          return absl::InvalidArgumentError(absl::StrCat(
              "invalid JSON request body: key \"", aijobs::Utf8Prefix(key, 64),
              "\" appears twice in one object (at byte ", begin - 1, ")"));
        }
        break;
      }
      case '{':
      case '[':
        if (static_cast<int>(levels.size()) >= max_depth) {
          return absl::InvalidArgumentError(absl::StrCat(
              "invalid JSON request body: objects and arrays nest deeper than the maximum "
              "depth of ",
              max_depth, " levels (at byte ", i, ")"));
        }
        levels.push_back(Level{c == '{', c == '{', {}});
        break;
      case '}':
      case ']':
        if (!levels.empty()) levels.pop_back();
        break;
      case ',':
        if (!levels.empty() && levels.back().object) levels.back().expect_key = true;
        break;
      case ':':
        if (!levels.empty()) levels.back().expect_key = false;
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseQueryString(
    absl::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!query.empty() && query[0] == '?') query.remove_prefix(1);
  for (absl::string_view piece : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    size_t eq = piece.find('=');
    absl::string_view raw_key = piece.substr(0, eq);
    absl::string_view raw_value =
        eq == absl::string_view::npos ? absl::string_view() : piece.substr(eq + 1);
    auto key = PercentDecode(raw_key, false, /*plus_is_space=*/true);
    auto value = PercentDecode(raw_value, false, /*plus_is_space=*/true);
    if (!key || !value) {
      return absl::InvalidArgumentError(
          absl::StrCat("query parameter \"", piece, "\" has a malformed %-escape"));
    }
    // Refused here, naming the parameter: protobuf cannot hold invalid UTF-8 in a string
    // field, and a NUL would silently cut the value short further on.
    const std::string what = absl::StrCat("query parameter \"", Utf8Prefix(*key, 64), "\"");
    if (absl::Status s = ValidateText(*key, what); !s.ok()) return s;
    if (absl::Status s = ValidateText(*value, what); !s.ok()) return s;
    out.emplace_back(*std::move(key), *std::move(value));
  }
  return out;
}

absl::Status BuildRequest(const Route& route, const std::vector<VariableBinding>& bindings,
                          absl::string_view query, absl::string_view body,
                          const JsonOptions& options, Message* request) {
  request->Clear();
  if (absl::Status s = ApplyBody(route, body, options, request); !s.ok()) return s;
  if (absl::Status s = ApplyQuery(route, bindings, query, options, request); !s.ok()) return s;
  return ApplyBindings(bindings, request);
}

absl::StatusOr<std::string> ResponseToJson(const Route& route, const Message& response) {
  return ResponseToJson(route, response, JsonOptions{});
}

absl::StatusOr<std::string> ResponseToJson(const Route& route, const Message& response,
                                           const JsonOptions& options) {
  google::protobuf::util::JsonPrintOptions print;
  print.always_print_primitive_fields = options.emit_defaults;
  std::string out;
  auto fail = [&](const google::protobuf::util::Status& s) {
    return absl::InternalError(absl::StrCat("cannot print ", response.GetDescriptor()->full_name(),
                                            " as JSON: ", ProtoStatusMessage(s)));
  };
  if (route.response_body.empty()) {
    auto s = google::protobuf::util::MessageToJsonString(response, &out, print);
    if (!s.ok()) return fail(s);
    return out;
  }
  const FieldDescriptor* f = response.GetDescriptor()->FindFieldByName(route.response_body);
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("response type ", response.GetDescriptor()->full_name(),
                                            " has no field ", route.response_body));
  }
  const Reflection* r = response.GetReflection();
  if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated()) {
    auto s = google::protobuf::util::MessageToJsonString(r->GetMessage(response, f), &out, print);
    if (!s.ok()) return fail(s);
    return out;
  }
  // A scalar, repeated or map field has no message of its own to print: print a copy holding
  // only that field, read it back as a Struct and print the field's value.
  std::unique_ptr<Message> only(response.New());
  only->CopyFrom(response);
  std::vector<const FieldDescriptor*> set;
  only->GetReflection()->ListFields(*only, &set);
  for (const FieldDescriptor* other : set) {
    if (other != f) only->GetReflection()->ClearField(only.get(), other);
  }
  // Always print the field itself, even when it holds its default value ("", 0, []).
  bool has_value = f->is_repeated() ? r->FieldSize(response, f) > 0 : r->HasField(response, f);
  google::protobuf::util::JsonPrintOptions field_print = print;
  if (!has_value) field_print.always_print_primitive_fields = true;
  std::string whole;
  auto s = google::protobuf::util::MessageToJsonString(*only, &whole, field_print);
  if (!s.ok()) return fail(s);
  google::protobuf::Struct parsed;
  s = google::protobuf::util::JsonStringToMessage(whole, &parsed);
  if (!s.ok()) return fail(s);
  auto it = parsed.fields().find(f->json_name());
  if (it == parsed.fields().end()) return std::string("null");
  s = google::protobuf::util::MessageToJsonString(it->second, &out);
  if (!s.ok()) return fail(s);
  return out;
}

}  // namespace aijobs::gateway
