#include "gateway/transcoding/openapi.h"

#include <deque>
#include <map>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/type_resolver_util.h"

namespace aijobs::gateway {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

constexpr char kStatusSchema[] = "google.rpc.Status";
// Query parameters are listed down to this depth of nested messages (and never through a
// message type already on the path), so recursive types stay finite.
constexpr int kMaxQueryDepth = 4;

Value Str(absl::string_view s) {
  Value v;
  v.set_string_value(std::string(s));
  return v;
}

Value Bool(bool b) {
  Value v;
  v.set_bool_value(b);
  return v;
}

Value Obj(std::initializer_list<std::pair<const char*, Value>> fields) {
  Value v;
  Struct* s = v.mutable_struct_value();
  for (const auto& [k, f] : fields) (*s->mutable_fields())[k] = f;
  return v;
}

Value& Field(Value* obj, absl::string_view key) {
  return (*obj->mutable_struct_value()->mutable_fields())[std::string(key)];
}

Value Ref(absl::string_view name) {
  return Obj({{"$ref", Str(absl::StrCat("#/components/schemas/", name))}});
}

Value ListOf(std::initializer_list<Value> items) {
  Value v;
  ListValue* l = v.mutable_list_value();
  for (const Value& i : items) *l->add_values() = i;
  return v;
}

// Collects the schemas of messages and enums as fields reference them.
class SchemaBuilder {
 public:
  // The JSON schema of one value of `f` (ignoring repeated/map).
  Value ValueSchema(const FieldDescriptor* f) {
    switch (f->type()) {
      case FieldDescriptor::TYPE_INT32:
      case FieldDescriptor::TYPE_SINT32:
      case FieldDescriptor::TYPE_SFIXED32:
        return Obj({{"type", Str("integer")}, {"format", Str("int32")}});
      case FieldDescriptor::TYPE_UINT32:
      case FieldDescriptor::TYPE_FIXED32:
        return Obj({{"type", Str("integer")}, {"format", Str("uint32")}});
      case FieldDescriptor::TYPE_INT64:
      case FieldDescriptor::TYPE_SINT64:
      case FieldDescriptor::TYPE_SFIXED64:
        return Obj({{"type", Str("string")}, {"format", Str("int64")}});
      case FieldDescriptor::TYPE_UINT64:
      case FieldDescriptor::TYPE_FIXED64:
        return Obj({{"type", Str("string")}, {"format", Str("uint64")}});
      case FieldDescriptor::TYPE_DOUBLE:
        return Obj({{"type", Str("number")}, {"format", Str("double")}});
      case FieldDescriptor::TYPE_FLOAT:
        return Obj({{"type", Str("number")}, {"format", Str("float")}});
      case FieldDescriptor::TYPE_BOOL:
        return Obj({{"type", Str("boolean")}});
      case FieldDescriptor::TYPE_STRING:
        return Obj({{"type", Str("string")}});
      case FieldDescriptor::TYPE_BYTES:
        return Obj({{"type", Str("string")}, {"format", Str("byte")}});
      case FieldDescriptor::TYPE_ENUM:
        return EnumRef(f->enum_type());
      case FieldDescriptor::TYPE_MESSAGE:
      case FieldDescriptor::TYPE_GROUP:
        return MessageSchema(f->message_type());
    }
    return Value();
  }

  // The schema of field `f` as it appears in its message's JSON.
  Value FieldSchema(const FieldDescriptor* f) {
    if (f->is_map()) {
      return Obj({{"type", Str("object")},
                  {"additionalProperties", ValueSchema(f->message_type()->map_value())}});
    }
    Value v = ValueSchema(f);
    if (f->is_repeated()) return Obj({{"type", Str("array")}, {"items", v}});
    return v;
  }

  // A $ref for ordinary messages; the JSON form for well-known types.
  Value MessageSchema(const Descriptor* d) {
    const std::string& n = d->full_name();
    if (n == "google.protobuf.Timestamp") {
      return Obj({{"type", Str("string")}, {"format", Str("date-time")}});
    }
    if (n == "google.protobuf.Duration") {
      return Obj(
          {{"type", Str("string")},
           {"pattern", Str("^-?[0-9]+(\\.[0-9]{1,9})?s$")},
           {"description", Str("A duration in seconds with an 's' suffix, e.g. \"1.5s\".")}});
    }
    if (n == "google.protobuf.Struct") {
      return Obj({{"type", Str("object")}, {"additionalProperties", Bool(true)}});
    }
    if (n == "google.protobuf.Value") return Obj({});
    if (n == "google.protobuf.ListValue") return Obj({{"type", Str("array")}, {"items", Obj({})}});
    if (n == "google.protobuf.FieldMask") {
      return Obj({{"type", Str("string")},
                  {"description", Str("Comma-separated field paths, e.g. \"a.b,c\".")}});
    }
    if (n == "google.protobuf.Empty") return Obj({{"type", Str("object")}});
    if (n == "google.protobuf.Any") {
      return Obj({{"type", Str("object")},
                  {"properties", Obj({{"@type", Obj({{"type", Str("string")}})}})},
                  {"additionalProperties", Bool(true)}});
    }
    if (absl::StartsWith(n, "google.protobuf.") && absl::EndsWith(n, "Value") &&
        d->field_count() == 1 && d->field(0)->name() == "value") {
      return ValueSchema(d->field(0));  // wrappers: the JSON form is the bare value
    }
    if (seen_.insert(n).second) pending_.push_back(d);
    return Ref(n);
  }

  Value EnumRef(const EnumDescriptor* e) {
    if (!schemas_.count(e->full_name())) {
      Value list;
      for (int i = 0; i < e->value_count(); ++i) {
        *list.mutable_list_value()->add_values() = Str(e->value(i)->name());
      }
      schemas_[e->full_name()] = Obj({{"type", Str("string")}, {"enum", list}});
    }
    return Ref(e->full_name());
  }

  // Object schema with `d`'s fields (minus `skip`), by json name.
  Value ObjectSchema(const Descriptor* d, const std::set<std::string>& skip = {}) {
    Value schema = Obj({{"type", Str("object")}});
    Value& props = Field(&schema, "properties");
    props.mutable_struct_value();
    for (int i = 0; i < d->field_count(); ++i) {
      const FieldDescriptor* f = d->field(i);
      if (skip.count(f->name())) continue;
      Value fs = FieldSchema(f);
      if (f->real_containing_oneof() != nullptr) {
        Value wrapped = Obj({{"allOf", ListOf({fs})},
                             {"description", Str(absl::StrCat("Member of oneof \"",
                                                              f->real_containing_oneof()->name(),
                                                              "\": at most one is set."))}});
        fs = wrapped;
      }
      Field(&props, f->json_name()) = fs;
    }
    return schema;
  }

  // Emits the component schemas of every message referenced so far (and those they reach).
  void Drain() {
    while (!pending_.empty()) {
      const Descriptor* d = pending_.front();
      pending_.pop_front();
      schemas_[d->full_name()] = ObjectSchema(d);
    }
  }

  std::map<std::string, Value>& schemas() { return schemas_; }

 private:
  std::set<std::string> seen_;
  std::deque<const Descriptor*> pending_;
  std::map<std::string, Value> schemas_;
};

bool IsQueryLeaf(const FieldDescriptor* f) {
  if (f->is_map()) return false;
  if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) return true;
  const std::string& n = f->message_type()->full_name();
  return n == "google.protobuf.Timestamp" || n == "google.protobuf.Duration" ||
         n == "google.protobuf.FieldMask" ||
         (absl::StartsWith(n, "google.protobuf.") && absl::EndsWith(n, "Value") &&
          n != "google.protobuf.Value" && n != "google.protobuf.ListValue");
}

// Appends query parameters for the leaf fields under `d` not bound by the path or the body.
void AddQueryParams(SchemaBuilder* b, const Route& route, const Descriptor* d,
                    std::vector<std::string>* prefix, std::set<const Descriptor*>* on_path,
                    Value* params) {
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    prefix->push_back(f->name());
    bool bound = false;
    for (const auto& var : route.path.variables()) {
      bool prefix_of_var = var.field_path.size() >= prefix->size() &&
                           std::equal(prefix->begin(), prefix->end(), var.field_path.begin());
      bound |= prefix_of_var;
    }
    bool in_body = !route.body.empty() && (*prefix)[0] == route.body;
    if (!bound && !in_body) {
      if (IsQueryLeaf(f)) {
        Value p = Obj({{"name", Str(absl::StrJoin(*prefix, "."))},
                       {"in", Str("query")},
                       {"required", Bool(false)},
                       {"schema", b->FieldSchema(f)}});
        *params->mutable_list_value()->add_values() = p;
      } else if (!f->is_repeated() && f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
                 prefix->size() < kMaxQueryDepth && !on_path->count(f->message_type()) &&
                 !absl::StartsWith(f->message_type()->full_name(), "google.protobuf.")) {
        on_path->insert(f->message_type());
        AddQueryParams(b, route, f->message_type(), prefix, on_path, params);
        on_path->erase(f->message_type());
      }
    } else if (bound && f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !in_body &&
               !f->is_repeated() && prefix->size() < kMaxQueryDepth) {
      // A message with one field in the path ({sub.subfield}): its other fields are queries.
      bool exact = false;
      for (const auto& var : route.path.variables()) exact |= var.field_path == *prefix;
      if (!exact && !on_path->count(f->message_type())) {
        on_path->insert(f->message_type());
        AddQueryParams(b, route, f->message_type(), prefix, on_path, params);
        on_path->erase(f->message_type());
      }
    }
    prefix->pop_back();
  }
}

Value Operation(SchemaBuilder* b, const Route& route, const std::string& operation_id) {
  const google::protobuf::MethodDescriptor* m = route.method;
  Value op = Obj({{"operationId", Str(operation_id)},
                  {"tags", ListOf({Str(m->service()->name())})},
                  {"summary", Str(absl::StrCat("gRPC ", route.grpc_path))}});

  Value params;
  params.mutable_list_value();
  for (const auto& var : route.path.variables()) {
    auto fields = ResolveFieldPath(m->input_type(), var.field_path);
    Value schema = fields.ok() ? b->FieldSchema(fields->back()) : Obj({{"type", Str("string")}});
    Value p = Obj({{"name", Str(absl::StrJoin(var.field_path, "."))},
                   {"in", Str("path")},
                   {"required", Bool(true)},
                   {"schema", schema}});
    bool multi = var.end - var.begin != 1;
    if (multi) {
      Field(&p, "description") = Str(
          absl::StrCat("Matches the path template \"", route.path.text(), "\"; may contain '/'."));
    }
    *params.mutable_list_value()->add_values() = p;
  }
  if (route.body != "*") {
    std::vector<std::string> prefix;
    std::set<const Descriptor*> on_path = {m->input_type()};
    AddQueryParams(b, route, m->input_type(), &prefix, &on_path, &params);
  }
  if (params.list_value().values_size() > 0) Field(&op, "parameters") = params;

  if (!route.body.empty()) {
    Value schema;
    if (route.body == "*") {
      std::set<std::string> skip;
      for (const auto& var : route.path.variables()) {
        if (var.field_path.size() == 1) skip.insert(var.field_path[0]);
      }
      schema =
          skip.empty() ? b->MessageSchema(m->input_type()) : b->ObjectSchema(m->input_type(), skip);
    } else {
      schema = b->FieldSchema(m->input_type()->FindFieldByName(route.body));
    }
    Field(&op, "requestBody") =
        Obj({{"required", Bool(route.body == "*" ? false : true)},
             {"content", Obj({{"application/json", Obj({{"schema", schema}})}})}});
  }

  Value result = route.response_body.empty()
                     ? b->MessageSchema(m->output_type())
                     : b->FieldSchema(m->output_type()->FindFieldByName(route.response_body));
  Value content;
  if (route.server_streaming) {
    content = Obj(
        {{"text/event-stream",
          Obj({{"schema",
                Obj({{"type", Str("string")},
                     {"description",
                      Str(absl::StrCat(
                          "Server-Sent Events (request with Accept: "
                          "text/event-stream): one event per ",
                          m->output_type()->full_name(),
                          ": 'event:' the oneof case, 'id:' the sequence number, "
                          "'data:' the message as JSON. Resume with Last-Event-ID."))}})}})},
         {"application/x-ndjson",
          Obj({{"schema",
                Obj({{"type", Str("object")},
                     {"description", Str("One JSON object per line: {\"result\": message}, or a "
                                         "final {\"error\": status} if the stream fails.")},
                     {"properties",
                      Obj({{"result", result}, {"error", Ref(kStatusSchema)}})}})}})}});
  } else {
    content = Obj({{"application/json", Obj({{"schema", result}})}});
  }
  Field(&op, "responses") = Obj(
      {{"200", Obj({{"description", Str("OK")}, {"content", content}})},
       {"default",
        Obj({{"description", Str("An error (google.rpc.Status).")},
             {"content", Obj({{"application/json", Obj({{"schema", Ref(kStatusSchema)}})}})}})}});
  return op;
}

}  // namespace

std::string BuildOpenApiJson(const RouteTable& table, absl::string_view title,
                             absl::string_view version) {
  SchemaBuilder b;
  Value doc = Obj({{"openapi", Str("3.1.0")},
                   {"info", Obj({{"title", Str(title)}, {"version", Str(version)}})}});
  Value& paths = Field(&doc, "paths");
  paths.mutable_struct_value();
  absl::flat_hash_map<std::string, int> ids;
  for (const Route& route : table.routes()) {
    std::string id = absl::StrCat(route.method->service()->name(), "_", route.method->name());
    int n = ++ids[id];
    if (n > 1) absl::StrAppend(&id, "_", n);
    Value& item = Field(&paths, route.path.OpenApiPath());
    item.mutable_struct_value();
    std::string method = absl::AsciiStrToLower(route.http_method);
    if (method == "*") method = "post";  // a wildcard custom method: document the common use
    Field(&item, method) = Operation(&b, route, id);
  }
  b.Drain();
  b.schemas()[kStatusSchema] = Obj(
      {{"type", Str("object")},
       {"properties",
        Obj({{"code", Obj({{"type", Str("integer")},
                           {"format", Str("int32")},
                           {"description", Str("The gRPC status code.")}})},
             {"message", Obj({{"type", Str("string")}})},
             {"details",
              Obj({{"type", Str("array")},
                   {"items", Obj({{"type", Str("object")},
                                  {"properties", Obj({{"@type", Obj({{"type", Str("string")}})}})},
                                  {"additionalProperties", Bool(true)}})}})}})}});
  Value& schemas = Field(&Field(&doc, "components"), "schemas");
  schemas.mutable_struct_value();
  for (auto& [name, schema] : b.schemas()) Field(&schemas, name) = std::move(schema);

  // Serialize deterministically (map entries sorted by key) and print from the wire form, so
  // the document's keys come out sorted and the output is byte-identical from run to run
  // (MessageToJsonString would follow the Struct map's hash order).
  std::string binary;
  {
    google::protobuf::io::StringOutputStream stream(&binary);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    doc.struct_value().SerializeToCodedStream(&coded);
  }
  static google::protobuf::util::TypeResolver* const resolver =
      google::protobuf::util::NewTypeResolverForDescriptorPool(
          "type.googleapis.com", google::protobuf::DescriptorPool::generated_pool());
  std::string out;
  if (!google::protobuf::util::BinaryToJsonString(
           resolver, "type.googleapis.com/google.protobuf.Struct", binary, &out)
           .ok()) {
    return "{}";  // only reachable with non-UTF-8 names, which descriptors cannot hold
  }
  return out;
}

}  // namespace aijobs::gateway
