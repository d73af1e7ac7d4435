#include "gateway/transcoding/http_status.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"

namespace aijobs::gateway {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptorProto;

// google.rpc.Status, built at run time in a private pool: its generated code is not part of
// the Debian packages, and a private pool cannot clash with another copy linked elsewhere.
// A real message (not a Struct) keeps the fields in the documented order.
struct StatusType {
  StatusType() : pool(DescriptorPool::generated_pool()) {
    google::protobuf::FileDescriptorProto file;
    file.set_name("aijobs/gateway/google_rpc_status.proto");
    file.set_package("google.rpc");
    file.set_syntax("proto3");
    file.add_dependency("google/protobuf/any.proto");
    google::protobuf::DescriptorProto* msg = file.add_message_type();
    msg->set_name("Status");
    auto add = [&](const char* name, int number, FieldDescriptorProto::Type type,
                   FieldDescriptorProto::Label label, const char* type_name) {
      FieldDescriptorProto* f = msg->add_field();
      f->set_name(name);
      f->set_json_name(name);
      f->set_number(number);
      f->set_type(type);
      f->set_label(label);
      if (type_name != nullptr) f->set_type_name(type_name);
    };
    add("code", 1, FieldDescriptorProto::TYPE_INT32, FieldDescriptorProto::LABEL_OPTIONAL, nullptr);
    add("message", 2, FieldDescriptorProto::TYPE_STRING, FieldDescriptorProto::LABEL_OPTIONAL,
        nullptr);
    add("details", 3, FieldDescriptorProto::TYPE_MESSAGE, FieldDescriptorProto::LABEL_REPEATED,
        ".google.protobuf.Any");
    // Make sure any.proto is in the generated pool before the underlay lookup.
    DescriptorPool::generated_pool()->FindMessageTypeByName("google.protobuf.Any");
    pool.BuildFile(file);
    descriptor = pool.FindMessageTypeByName("google.rpc.Status");
    prototype = descriptor != nullptr ? factory.GetPrototype(descriptor) : nullptr;
  }
  DescriptorPool pool;
  google::protobuf::DynamicMessageFactory factory;
  const Descriptor* descriptor = nullptr;
  const google::protobuf::Message* prototype = nullptr;
};

const StatusType& GetStatusType() {
  static const StatusType* type = new StatusType();
  return *type;
}

}  // namespace

int HttpStatusFromGrpc(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::CANCELLED:
      return 499;
    case grpc::StatusCode::UNKNOWN:
      return 500;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return 400;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 504;
    case grpc::StatusCode::NOT_FOUND:
      return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
      return 409;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return 400;
    case grpc::StatusCode::ABORTED:
      return 409;
    case grpc::StatusCode::OUT_OF_RANGE:
      return 400;
    case grpc::StatusCode::UNIMPLEMENTED:
      return 501;
    case grpc::StatusCode::INTERNAL:
      return 500;
    case grpc::StatusCode::UNAVAILABLE:
      return 503;
    case grpc::StatusCode::DATA_LOSS:
      return 500;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    default:
      return 500;
  }
}

int HttpStatusFromAbsl(absl::StatusCode code) {
  return HttpStatusFromGrpc(static_cast<grpc::StatusCode>(static_cast<int>(code)));
}

std::string ErrorBodyJson(int grpc_code, absl::string_view message) {
  const StatusType& type = GetStatusType();
  std::unique_ptr<google::protobuf::Message> status(type.prototype->New());
  const google::protobuf::Reflection* r = status->GetReflection();
  r->SetInt32(status.get(), type.descriptor->FindFieldByNumber(1), grpc_code);
  r->SetString(status.get(), type.descriptor->FindFieldByNumber(2), std::string(message));
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;  // "details": [] is part of the contract
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(*status, &out, options).ok()) {
    // Only reachable with a message that is not valid UTF-8; keep the code at least.
    r->SetString(status.get(), type.descriptor->FindFieldByNumber(2), "(message not UTF-8)");
    out.clear();
    (void)google::protobuf::util::MessageToJsonString(*status, &out, options);
  }
  return out;
}

std::string ErrorBodyJson(const absl::Status& status) {
  return ErrorBodyJson(static_cast<int>(status.code()), status.message());
}

std::string WwwAuthenticateValue(bool had_credential, absl::string_view why) {
  if (!had_credential) return "Bearer realm=\"aijobs\"";
  std::string description;
  for (char c : why.substr(0, 200)) {
    const bool printable = c >= 0x20 && c < 0x7f;
    description.push_back(!printable ? ' ' : (c == '"' || c == '\\') ? '\'' : c);
  }
  return absl::StrCat("Bearer realm=\"aijobs\", error=\"invalid_token\", error_description=\"",
                      description, "\"");
}

}  // namespace aijobs::gateway
